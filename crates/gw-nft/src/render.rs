//! A [`Plan`] as nft text: the script that replaces guestwall's tables
//! whole (`render_full`), and the same without per-port elements
//! (`render_skeleton`, for a load whose elements go by netlink). The
//! pieces (sets, maps, chains) are written here only; [`crate::delta`]
//! uses them for its commands. Text from outside reaches the script only
//! through [`crate::text`].

use crate::features::StateSource;
use crate::model::{Chain, ChainKind, PlannedSet, TablePlan};
use crate::names::{Family, FTP_HELPER, SAME_BYTE, TABLE, TAMPER_COUNTER};
use crate::{element::Element, Plan};
use std::collections::BTreeMap;
use std::fmt::Write as _;

impl Plan {
    /// The script that replaces guestwall's tables with this plan.
    pub fn render_full(&self) -> String {
        self.render(true)
    }

    /// [`Plan::render_full`] without the per-port set and map elements:
    /// with [`Plan::all_elements`] after it, the same ruleset in two
    /// transactions, the large one written by netlink. Only for when
    /// guestwall's tables are absent (ports are unfiltered until the
    /// elements land, as they were before).
    pub fn render_skeleton(&self) -> String {
        self.render(false)
    }

    fn render(&self, with_elements: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# guestwall ruleset: {} port(s), {} filter program(s)",
            self.bridge.from_guest.len(),
            self.summary.len()
        );
        let _ = writeln!(s, "# {}", self.features.describe());
        for l in &self.summary {
            let _ = writeln!(s, "{l}");
        }
        for family in Family::BOTH {
            // Creating the table first makes the delete valid on an empty
            // host; both happen in this one transaction with the new contents.
            let f = family.name();
            let _ = writeln!(s, "table {f} {TABLE}\ndelete table {f} {TABLE}\ntable {f} {TABLE} {{");
            if family == Family::Bridge {
                self.bridge_globals(&mut s);
            }
            self.table_body(&mut s, family, with_elements);
            if family == Family::Inet {
                // Kernels do not attach conntrack helpers by themselves any
                // more; a filter using RELATED (active FTP) needs the FTP helper.
                if self.uses_related {
                    let _ = writeln!(s, "  ct helper {FTP_HELPER} {{\n    type \"ftp\" protocol tcp\n  }}");
                }
                for (name, chain) in self.state_chains() {
                    write_chain(&mut s, &name, &chain);
                }
            }
            let _ = writeln!(s, "}}");
        }
        s
    }

    /// The bridge table's objects that are not per port.
    fn bridge_globals(&self, s: &mut String) {
        if self.features.state == StateSource::BrNetfilterMark {
            let _ = writeln!(s, "  counter {TAMPER_COUNTER} {{\n  }}");
        }
        if self.same_byte {
            let pairs: Vec<String> = (0..=255).map(|b| format!("{b} . {b}")).collect();
            let _ = writeln!(
                s,
                "  set {SAME_BYTE} {{\n    typeof @nh,112,8 . @nh,192,8\n    elements = {{ {} }}\n  }}",
                pairs.join(", ")
            );
        }
    }

    /// The per-port part of a table: sets, the two dispatch maps, the
    /// filters' chains, then the blocking chain and the two base chains
    /// that look ports up in the maps.
    fn table_body(&self, s: &mut String, family: Family, with_elements: bool) {
        let t: &TablePlan = self.table(family);
        for (name, set) in &t.sets {
            let _ = writeln!(s, "  set {name} {{");
            write_set_body(s, set, "  ", with_elements);
            let _ = writeln!(s, "  }}");
        }
        for (name, m) in t.maps(family) {
            let _ = writeln!(s, "  map {name} {{\n    typeof iifname : verdict");
            if with_elements && !m.is_empty() {
                let _ = writeln!(s, "    elements = {{ {} }}", map_elements(m).join(", "));
            }
            let _ = writeln!(s, "  }}");
        }
        for (name, chain) in &t.chains {
            write_chain(s, name, chain);
        }
        for (name, chain) in self.dispatch_chains(family) {
            write_chain(s, &name, &chain);
        }
    }
}

/// A set's type, flags and (`with_elements`) elements, each line after
/// `indent`.
pub(crate) fn write_set_body(s: &mut String, set: &PlannedSet, indent: &str, with_elements: bool) {
    let _ = writeln!(s, "{indent}  typeof {}", set.ty.typeof_());
    if set.ty.interval {
        let _ = writeln!(s, "{indent}  flags interval");
    }
    if with_elements && !set.elements.is_empty() {
        let _ = writeln!(s, "{indent}  elements = {{ {} }}", elements_text(&set.elements));
    }
}

/// Elements as an nft list's contents.
pub(crate) fn elements_text<'a>(elements: impl IntoIterator<Item = &'a Element>) -> String {
    elements.into_iter().map(Element::text).collect::<Vec<_>>().join(", ")
}

fn map_elements(m: &BTreeMap<String, String>) -> Vec<String> {
    m.iter().map(|(port, chain)| Element::dispatch(port, chain).text()).collect()
}

/// A chain inside a table block.
fn write_chain(s: &mut String, name: &str, chain: &Chain) {
    let _ = writeln!(s, "  chain {name} {{");
    if let ChainKind::Base { hook, priority } = chain.kind {
        let _ = writeln!(s, "    type filter hook {} priority {priority}; policy accept;", hook.name());
    }
    for l in &chain.rules {
        let _ = writeln!(s, "    {l}");
    }
    let _ = writeln!(s, "  }}");
}
