//! `guestwall libvirt-import`: moves a libvirt host's filters and running
//! bindings to guestwalld, and hands the running guests over with no
//! instant unfiltered.
//!
//! Reading: libvirt's filter files (`/etc/libvirt/nwfilter/*.xml`) and its
//! bindings' status files (`/run/libvirt/nwfilter-binding/*.xml`, each a
//! `<filterbindingstatus>` around the `<filterbinding>`). Each is reported:
//! what guestwall reads differently (libvirt's quirks), what it cannot
//! enforce (and why), so an admin sees the differences before anything
//! changes.
//!
//! Handing over: the filters are defined and every binding is created in
//! guestwalld in ONE request (one transaction, as runtime bindings, as
//! libvirt's are), so guestwall's rules are in the kernel first; only then
//! is each binding deleted from libvirt (`virsh nwfilter-binding-delete`),
//! which removes libvirt's own ebtables/iptables rules. While both are in,
//! a frame must pass both: nothing passes that either drops. The way back
//! (`--back`) is the same in reverse: libvirt's rules first, then
//! guestwall's bindings go.

use anyhow::{bail, Context, Result};
use clap::Args;
use gw_api::{Request, Response};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `guestwall libvirt-import`.
#[derive(Args)]
pub struct ImportArgs {
    /// libvirt's filter files.
    #[arg(long, default_value = "/etc/libvirt/nwfilter")]
    nwfilter_dir: PathBuf,
    /// libvirt's running bindings (status files).
    #[arg(long, default_value = "/run/libvirt/nwfilter-binding")]
    binding_dir: PathBuf,
    /// Only report what guestwall would enforce differently; change nothing.
    #[arg(long)]
    check: bool,
    /// After guestwall's rules are in, delete the bindings from libvirt
    /// (whose nwfilter driver answers on this URI, e.g.
    /// `nwfilter:///system`), which removes libvirt's rules for them.
    #[arg(long, value_name = "URI", conflicts_with = "back")]
    handover: Option<String>,
    /// The way back: create guestwall's runtime bindings in libvirt again
    /// (on this URI), then delete them from guestwall.
    #[arg(long, value_name = "URI", conflicts_with = "check")]
    back: Option<String>,
}

/// One of libvirt's files, read.
struct Item {
    path: PathBuf,
    /// The document guestwall is given (a binding without its status wrapper).
    xml: String,
    /// The filter's name, or the binding's port.
    name: String,
    /// Where guestwall reads it differently from libvirt (warnings).
    notes: Vec<String>,
    /// Why guestwall cannot take it (nothing then goes in).
    problems: Vec<String>,
}

fn xml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A host without running bindings has no directory for them.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// libvirt's filters read as guestwalld reads its own config directory
/// (`Library::with_dir_lenient`: the same limits, the same choice between
/// two files of one filter), over guestwall's built-ins: the library
/// guestwalld will have, and one report item per file.
fn read_filters(dir: &Path) -> Result<(gw_builtins::Library, Vec<Item>)> {
    let (lib, problems) = match dir.is_dir() {
        true => gw_builtins::Library::with_dir_lenient(dir)
            .with_context(|| format!("cannot read libvirt's filters in {}", dir.display()))?,
        false => (gw_builtins::Library::builtins().context("guestwall's built-in filters")?, Vec::new()),
    };
    let mut items = Vec::new();
    for (f, origin) in lib.iter() {
        let gw_builtins::Origin::File(path) = origin else { continue };
        items.push(Item {
            path: path.clone(),
            // The filter as read (libvirt's reading applied): the daemon is
            // given exactly what it will enforce.
            xml: gw_xml::write_filter(f),
            name: f.name.clone(),
            notes: lib
                .quirks()
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(p, q)| format!("{}:{q}", p.display()))
                .collect(),
            problems: Vec::new(),
        });
    }
    for e in problems {
        let path = match &e {
            gw_builtins::LoadError::Io { path, .. } | gw_builtins::LoadError::Parse { path, .. } => path.clone(),
            gw_builtins::LoadError::Duplicate { second, .. } => second.clone(),
            _ => dir.to_path_buf(),
        };
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        items.push(Item { path, xml: String::new(), name, notes: Vec::new(), problems: vec![e.to_string()] });
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((lib, items))
}

/// The `<filterbinding>` inside libvirt's status file (or the file itself
/// when it is a plain binding).
fn binding_document(text: &str) -> Result<String, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.has_tag_name("filterbinding") {
        return Ok(text.to_string());
    }
    if !root.has_tag_name("filterbindingstatus") {
        return Err(format!("<{}> is neither <filterbindingstatus> nor <filterbinding>", root.tag_name().name()));
    }
    let inner = root.children().find(|n| n.has_tag_name("filterbinding")).ok_or("no <filterbinding> inside")?;
    Ok(text[inner.range()].to_string())
}

fn read_bindings(dir: &Path, filters: &gw_builtins::Library) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for path in xml_files(dir)? {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut item =
            Item { path: path.clone(), xml: String::new(), name: stem, notes: Vec::new(), problems: Vec::new() };
        match binding_document(&text) {
            Err(e) => item.problems.push(format!("{}: {e}", path.display())),
            Ok(xml) => {
                match gw_xml::read_binding(&xml) {
                    Err(e) => item.problems.extend(e.errors.iter().map(|d| format!("{}: {d}", path.display()))),
                    Ok(p) => {
                        item.name = p.value.portdev.to_string();
                        item.notes.extend(p.quirks.iter().map(|q| format!("{}: {q}", path.display())));
                        // Compiled here as guestwalld will: what it cannot
                        // enforce shows now, before anything changes.
                        if let Err(e) = gw_ir::bind(filters, &p.value) {
                            item.problems.push(format!("{}: port {}: {e}", path.display(), p.value.portdev));
                        }
                    }
                }
                item.xml = xml;
            }
        }
        out.push(item);
    }
    Ok(out)
}

fn report(kind: &str, items: &[Item]) -> bool {
    let mut ok = true;
    for i in items {
        let state = if !i.problems.is_empty() {
            ok = false;
            "CANNOT be enforced"
        } else if !i.notes.is_empty() {
            "imported, read as libvirt reads it"
        } else {
            "imported unchanged"
        };
        println!("{kind} {}: {state} ({})", i.name, i.path.display());
        for n in &i.notes {
            println!("  note: {n}");
        }
        for p in &i.problems {
            println!("  problem: {p}");
        }
    }
    ok
}

fn ask(socket: &Path, req: Request) -> Result<Response> {
    match gw_api::call(socket, req).with_context(|| format!("cannot reach guestwalld on {}", socket.display()))? {
        Response::Error(e) => bail!("guestwalld refused: {}", e.messages.join("; ")),
        r => Ok(r),
    }
}

fn virsh(uri: &str, args: &[&str]) -> Result<String> {
    let o = Command::new("virsh")
        .arg("-q")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .context("cannot run virsh (install libvirt-clients)")?;
    if !o.status.success() {
        bail!("virsh -c {uri} {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs `guestwall libvirt-import`.
pub fn run(args: ImportArgs, socket: &Path) -> Result<crate::Outcome> {
    if let Some(uri) = &args.back {
        return back(uri, socket);
    }
    let (lib, filters) = read_filters(&args.nwfilter_dir)?;
    let bindings = read_bindings(&args.binding_dir, &lib)?;
    let filters_ok = report("filter", &filters);
    let bindings_ok = report("binding", &bindings);
    if args.check {
        return Ok(if filters_ok && bindings_ok { crate::Outcome::Ok } else { crate::Outcome::Invalid });
    }
    if !bindings_ok {
        bail!("nothing was changed: some of libvirt's bindings cannot be enforced by guestwall (see above)");
    }
    // Filters guestwall cannot read are left out (reported above); a
    // binding that needs one was refused above.
    let mut defined = 0;
    for f in filters.iter().filter(|f| f.problems.is_empty()) {
        ask(socket, Request::FilterDefine { xml: f.xml.clone(), libvirt_quirks: true })
            .with_context(|| format!("defining filter {} from {}", f.name, f.path.display()))?;
        defined += 1;
    }
    println!("{defined} filter(s) defined in guestwalld");
    if bindings.is_empty() {
        println!("libvirt has no running bindings");
        return Ok(crate::Outcome::Ok);
    }
    let documents = bindings.iter().map(|b| b.xml.clone()).collect();
    ask(socket, Request::BindingCreateBatch { documents, runtime: true })
        .context("creating libvirt's bindings in guestwalld (nothing of them was created)")?;
    println!("{} binding(s) created in guestwalld, in one transaction", bindings.len());
    let Some(uri) = &args.handover else {
        println!("libvirt's own rules are still in place too (--handover URI removes them)");
        return Ok(crate::Outcome::Ok);
    };
    for b in &bindings {
        virsh(uri, &["nwfilter-binding-delete", &b.name])
            .with_context(|| format!("guestwall filters {} now, but removing libvirt's binding failed", b.name))?;
        println!("port {}: handed over (libvirt's rules removed)", b.name);
    }
    Ok(crate::Outcome::Ok)
}

/// The way back: each of guestwalld's runtime bindings goes to libvirt
/// (whose rules are in when `virsh nwfilter-binding-create` returns), then
/// leaves guestwalld.
fn back(uri: &str, socket: &Path) -> Result<crate::Outcome> {
    let Response::Bindings { bindings } = ask(socket, Request::BindingList)? else {
        bail!("guestwalld gave no binding list");
    };
    let dir = std::env::temp_dir().join(format!("guestwall-back-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = (|| -> Result<usize> {
        let mut n = 0;
        for b in bindings.iter().filter(|b| b.runtime) {
            let Response::Xml { xml } = ask(socket, Request::BindingDumpxml { portdev: b.portdev.clone() })? else {
                bail!("guestwalld gave no XML for {}", b.portdev);
            };
            let file = dir.join(format!("{}.xml", b.portdev));
            std::fs::write(&file, xml).with_context(|| format!("cannot write {}", file.display()))?;
            virsh(uri, &["nwfilter-binding-create", &file.display().to_string()])
                .with_context(|| format!("giving port {} back to libvirt", b.portdev))?;
            ask(socket, Request::BindingDelete { portdev: b.portdev.clone() })?;
            println!("port {}: back with libvirt", b.portdev);
            n += 1;
        }
        Ok(n)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} binding(s) given back to libvirt", result?);
    Ok(crate::Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::binding_document;

    #[test]
    fn a_status_file_gives_its_binding_and_a_plain_binding_itself() {
        let b = "<filterbinding><owner><name>vm</name><uuid>5c6d49af-b071-6127-b4ec-6f8ed4b55335</uuid></owner><portdev name='vnet0'/><mac address='52:54:00:00:00:01'/><filterref filter='clean-traffic'/></filterbinding>";
        let status = format!("<filterbindingstatus>\n  {b}\n</filterbindingstatus>\n");
        assert_eq!(binding_document(&status).as_deref(), Ok(b));
        assert_eq!(binding_document(b).as_deref(), Ok(b));
        assert!(binding_document("<domain/>").is_err());
        assert!(binding_document("<filterbindingstatus/>").is_err());
        assert!(binding_document("not xml").is_err());
    }
}
