//! nf_tables over netlink, for the two jobs where running `nft` costs
//! O(ruleset) whatever the size of the change: adding and removing set and
//! map elements (a port coming or going), and following the kernel's
//! ruleset events (healing).
//!
//! Hand-rolled on purpose, and kept to these two jobs: the nf_tables
//! netlink crates are GPL (rustables) or bind GPL C libraries (nftnl,
//! libnftables), and what we need is a few attribute encodings of
//! `include/uapi/linux/netfilter/nf_tables.h`. Rules, chains and sets are
//! still written as nft text and loaded by `nft -f`, whose errors users can
//! read.

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNLGRP_NFTABLES: u32 = 7;

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;
const NFTA_GEN_PROC_PID: u16 = 2;

/// `NFPROTO_INET`.
pub const FAMILY_INET: u8 = 1;
/// `NFPROTO_BRIDGE`.
pub const FAMILY_BRIDGE: u8 = 7;

/// Bytes of element attributes per message: a nested attribute's length is
/// 16 bits, so a message holds at most 64 KiB of elements.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// A netlink transaction failed; the kernel rolled it back whole.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be used.
    #[error("nf_tables netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a message of the batch.
    #[error("the kernel refused {what}: {err}")]
    Refused {
        /// The set and operation.
        what: String,
        /// The errno.
        err: std::io::Error,
    },
}

/// Elements to add to or delete from one set or verdict map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// `FAMILY_BRIDGE` or `FAMILY_INET`.
    pub family: u8,
    /// The table.
    pub table: String,
    /// The set or map.
    pub set: String,
    /// Add (else delete).
    pub add: bool,
    /// Keys in the kernel's layout, and for verdict maps the chain to go to.
    pub elements: Vec<(Vec<u8>, Option<String>)>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds netlink messages into one buffer.
struct Writer {
    buf: Vec<u8>,
    /// Start of the current message, and of each open nested attribute.
    msg: usize,
    nests: Vec<usize>,
    seq: u32,
}

impl Writer {
    fn new() -> Writer {
        Writer { buf: Vec::new(), msg: 0, nests: Vec::new(), seq: 1 }
    }

    fn begin(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) {
        self.msg = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.seq += 1;
        // nfgenmsg: family, version, res_id (big endian)
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    fn end(&mut self) {
        let len = (self.buf.len() - self.msg) as u32;
        self.buf[self.msg..self.msg + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + align4(len) - len, 0);
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d);
    }

    fn open(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn close(&mut self) {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }
}

fn socket() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    // Errors carry only the header of the refused message, not all of it.
    let _ = s.set_cap_ack(true);
    Ok(s)
}

/// Sets a socket option to `value` (a plain C value: c_int, timeval).
fn setsockopt<T>(fd: libc::c_int, level: libc::c_int, opt: libc::c_int, value: &T) -> bool {
    // SAFETY: the pointer and size describe `value`, which outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        ) == 0
    }
}

/// A reply that never comes must not hang the daemon.
fn recv_timeout(s: &Socket, secs: i64) {
    use std::os::fd::AsRawFd;
    setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &libc::timeval { tv_sec: secs, tv_usec: 0 });
}

/// Raises a socket buffer beyond the sysctl limits (we run as root); a
/// batch must reach the kernel in one send.
fn force_buffer(s: &Socket, opt: libc::c_int, bytes: usize) {
    use std::os::fd::AsRawFd;
    setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, opt, &(bytes.min(i32::MAX as usize) as libc::c_int));
}

/// The netlink messages in a buffer as read: each one's type, sequence
/// number and payload after the header.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        if len < 16 || at + len > buf.len() {
            return None;
        }
        let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().ok()?);
        let payload = &buf[at + 16..at + len];
        at += align4(len);
        Some((ty, seq, payload))
    })
}

/// The netlink attributes in `b`: (type without flags, data).
pub fn attributes(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > b.len() {
            return None;
        }
        let len = u16::from_ne_bytes([b[at], b[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & 0x3fff;
        if len < 4 || at + len > b.len() {
            return None;
        }
        let data = &b[at + 4..at + len];
        at += align4(len);
        Some((ty, data))
    })
}

/// Attributes of an nf_tables payload, after its nfgenmsg.
fn attrs(payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    attributes(payload.get(4..).unwrap_or_default())
}

/// A string attribute without its terminating NUL.
pub fn cstr(d: &[u8]) -> &[u8] {
    d.split(|b| *b == 0).next().unwrap_or(d)
}

/// For an error (or acknowledgement) message: its errno, 0 for success.
pub fn error_code(ty: u16, payload: &[u8]) -> Option<i32> {
    match (ty, payload.get(..4)) {
        (NLMSG_ERROR, Some(c)) => Some(-i32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
        _ => None,
    }
}

/// Applies all `changes` in one nf_tables transaction: all of them take
/// effect at once, or none does.
pub fn commit(changes: &[SetChange]) -> Result<(), NetlinkError> {
    commit_with(changes, true)
}

/// [`commit`]; `heard`: the watcher hears the commit's events, so a ticket
/// waits for its generation (see [`crate::tickets`]).
fn commit_with(changes: &[SetChange], heard: bool) -> Result<(), NetlinkError> {
    let mut w = Writer::new();
    w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    let mut what = std::collections::BTreeMap::new();
    for c in changes {
        let (ty, flags, verb) = if c.add {
            ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, "adding to")
        } else {
            ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, "deleting from")
        };
        for chunk in chunks(&c.elements) {
            what.insert(w.seq, format!("{verb} set {} {}", c.table, c.set));
            w.begin(ty, flags, c.family, 0);
            w.attr_str(NFTA_SET_ELEM_LIST_TABLE, &c.table);
            w.attr_str(NFTA_SET_ELEM_LIST_SET, &c.set);
            w.open(NFTA_SET_ELEM_LIST_ELEMENTS);
            for (key, goto) in chunk {
                w.open(NFTA_LIST_ELEM);
                w.open(NFTA_SET_ELEM_KEY);
                w.attr(NFTA_DATA_VALUE, key);
                w.close();
                if let (true, Some(chain)) = (c.add, goto) {
                    w.open(NFTA_SET_ELEM_DATA);
                    w.open(NFTA_DATA_VERDICT);
                    w.attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
                    w.attr_str(NFTA_VERDICT_CHAIN, chain);
                    w.close();
                    w.close();
                }
                w.close();
            }
            w.close();
            w.end();
        }
    }
    if what.is_empty() {
        return Ok(());
    }
    w.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    let s = socket()?;
    force_buffer(&s, libc::SO_SNDBUFFORCE, w.buf.len() + 4096);
    force_buffer(&s, libc::SO_RCVBUFFORCE, 1 << 20);
    recv_timeout(&s, 30);
    // The kernel names the committing thread in its generation event: this
    // one, running until the ticket is settled.
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let ticket = heard.then(|| crate::tickets::claim(tid, || generation().ok()));
    let r = send_batch(&s, &w.buf, &what);
    if let Some(ticket) = ticket {
        match &r {
            // The batch was rolled back whole: no generation.
            Err(NetlinkError::Refused { .. }) => drop(ticket),
            _ => ticket.settle(generation().ok()),
        }
    }
    r
}

/// Sends a batch and reads the kernel's answer to each message of `what`.
fn send_batch(s: &Socket, batch: &[u8], what: &std::collections::BTreeMap<u32, String>) -> Result<(), NetlinkError> {
    // The kernel runs the whole batch inside this send; its answers are
    // queued by the time it returns.
    s.send(batch, 0)?;
    let mut pending = what.len();
    let mut buf = vec![0u8; 1 << 16];
    while pending > 0 {
        let n = s.recv(&mut &mut buf[..], 0)?;
        for (ty, seq, payload) in messages(&buf[..n]) {
            match error_code(ty, payload) {
                Some(0) => pending = pending.saturating_sub(1),
                Some(errno) => {
                    let what = what.get(&seq).cloned().unwrap_or_else(|| "the batch".into());
                    return Err(NetlinkError::Refused { what, err: std::io::Error::from_raw_os_error(errno) });
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn chunks(elements: &[(Vec<u8>, Option<String>)]) -> Vec<&[(Vec<u8>, Option<String>)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (k, g)) in elements.iter().enumerate() {
        let size = 24 + align4(k.len()) + g.as_ref().map_or(0, |c| 28 + align4(c.len() + 1));
        if bytes + size > ELEMENTS_PER_MESSAGE_BYTES && i > start {
            out.push(&elements[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < elements.len() {
        out.push(&elements[start..]);
    }
    out
}

/// The event socket of [`watch`], while it runs (-1 before).
static WATCH_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The ruleset's generation: the kernel counts every committed transaction.
pub fn generation() -> Result<u32, NetlinkError> {
    let mut w = Writer::new();
    w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, NLM_F_REQUEST, 0, 0);
    w.end();
    let s = socket()?;
    recv_timeout(&s, 5);
    s.send(&w.buf, 0)?;
    let mut buf = vec![0u8; 1 << 12];
    loop {
        let n = s.recv(&mut &mut buf[..], 0)?;
        for (ty, _, payload) in messages(&buf[..n]) {
            if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                if let Some(d) = attrs(payload).find(|(t, _)| *t == NFTA_GEN_ID).and_then(|(_, d)| d.get(..4)) {
                    return Ok(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
                }
            }
            if let Some(errno) = error_code(ty, payload) {
                return Err(NetlinkError::Io(std::io::Error::from_raw_os_error(errno)));
            }
        }
    }
}

fn membership(fd: i32, join: bool) -> bool {
    let opt = if join { libc::NETLINK_ADD_MEMBERSHIP } else { libc::NETLINK_DROP_MEMBERSHIP };
    setsockopt(fd, libc::SOL_NETLINK, opt, &(NFNLGRP_NFTABLES as libc::c_int))
}

/// [`commit`] without the kernel announcing each element to the event
/// socket of [`watch`]: with a listener the kernel builds one notification
/// per element, which doubled the cost of loading tens of thousands. The
/// watcher leaves the event group for the commit; the ruleset generation,
/// read before and after, shows whether anyone else committed meanwhile
/// (their events were not seen): then `Ok(true)`.
pub fn commit_quietly(changes: &[SetChange]) -> Result<bool, NetlinkError> {
    let fd = WATCH_FD.load(std::sync::atomic::Ordering::SeqCst);
    if fd < 0 {
        return commit(changes).map(|()| false);
    }
    let before = generation()?;
    if !membership(fd, false) {
        return commit(changes).map(|()| false);
    }
    // Its events go to no one: no ticket waits for them.
    let r = commit_with(changes, false);
    let rejoined = membership(fd, true);
    // The commit's outcome stands even if the generation cannot be read:
    // then assume others may have committed.
    let after = generation().ok();
    r?;
    // Our commit is one generation; more means another process's too.
    Ok(!rejoined || after.is_none_or(|a| a.wrapping_sub(before) > 1))
}

/// Whether table `name` of `family` exists (in this network namespace).
pub fn table_exists(family: u8, name: &str) -> Result<bool, NetlinkError> {
    let mut w = Writer::new();
    w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_ACK, family, 0);
    w.attr_str(1, name);
    w.end();
    let s = socket()?;
    recv_timeout(&s, 5);
    s.send(&w.buf, 0)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut found = false;
    loop {
        let n = s.recv(&mut &mut buf[..], 0)?;
        for (ty, _, payload) in messages(&buf[..n]) {
            if let Some(errno) = error_code(ty, payload) {
                return match errno {
                    0 => Ok(found),
                    libc::ENOENT => Ok(false),
                    e => Err(NetlinkError::Io(std::io::Error::from_raw_os_error(e))),
                };
            }
            if ty == NLMSG_DONE {
                return Ok(found);
            }
            found = true;
        }
    }
}

/// What the ruleset event stream said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A transaction by a process `is_ours` did not claim changed table
    /// `name` (in the bridge or inet family); `deleted` when it deleted
    /// that table in both families, as `nft flush ruleset` does.
    Foreign {
        /// The table was deleted.
        deleted: bool,
    },
    /// Events were lost (the socket overflowed): anything may have changed.
    Lost,
}

/// Follows nf_tables events and calls `on` for each transaction by another
/// process that touched table `table` (bridge or inet), and when events were
/// lost. `is_ours(generation, pid)` says which transactions are ours, by
/// the generation they made and the process or thread that committed them
/// ([`crate::tickets::is_ours`]); it is asked about every generation, in
/// order. Runs until the socket fails.
pub fn watch(table: &str, is_ours: impl Fn(u32, u32) -> bool, mut on: impl FnMut(Event)) -> std::io::Result<()> {
    let mut s = socket()?;
    s.add_membership(NFNLGRP_NFTABLES)?;
    {
        use std::os::fd::AsRawFd;
        WATCH_FD.store(s.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    }
    // Our own full loads announce every element: room for them.
    force_buffer(&s, libc::SO_RCVBUFFORCE, 64 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let mut touched = false;
    // Bit 0: the bridge table was deleted, bit 1: the inet table.
    let mut deleted = 0u8;
    loop {
        let n = match s.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                touched = false;
                deleted = 0;
                on(Event::Lost);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let _ = &mut s;
        for (ty, _, payload) in messages(&buf[..n]) {
            if ty >> 8 != NFNL_SUBSYS_NFTABLES || payload.len() < 4 {
                continue;
            }
            let msg = ty & 0xff;
            if msg == NFT_MSG_NEWGEN {
                let be32 = |ty| {
                    attrs(payload)
                        .find(|(t, _)| *t == ty)
                        .and_then(|(_, d)| d.get(..4))
                        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
                };
                // Asked whether or not the transaction touched our table:
                // the answer settles our tickets.
                let ours = match (be32(NFTA_GEN_ID), be32(NFTA_GEN_PROC_PID)) {
                    (Some(generation), Some(pid)) => is_ours(generation, pid),
                    _ => false,
                };
                if touched && !ours {
                    on(Event::Foreign { deleted: deleted == 3 });
                }
                touched = false;
                deleted = 0;
                continue;
            }
            let family = payload[0];
            if family != FAMILY_BRIDGE && family != FAMILY_INET {
                continue;
            }
            // Attribute 1 names the table in every table, chain, rule, set,
            // element, object and flowtable message.
            if attrs(payload).any(|(t, d)| t == 1 && cstr(d) == table.as_bytes()) {
                touched = true;
                if msg == NFT_MSG_DELTABLE || msg == NFT_MSG_DESTROYTABLE {
                    deleted |= if family == FAMILY_BRIDGE { 1 } else { 2 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_attributes_round_trip() {
        let mut w = Writer::new();
        w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST, FAMILY_BRIDGE, 0);
        w.attr_str(NFTA_SET_ELEM_LIST_TABLE, "guestwall");
        w.open(NFTA_SET_ELEM_LIST_ELEMENTS);
        w.attr(NFTA_DATA_VALUE, &[1, 2, 3]);
        w.close();
        w.end();
        let msgs: Vec<_> = messages(&w.buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, (10 << 8) | 12);
        assert_eq!(msgs[0].2[0], FAMILY_BRIDGE);
        let a: Vec<_> = attrs(msgs[0].2).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(cstr(a[0].1), b"guestwall");
        assert_eq!(a[1].0, NFTA_SET_ELEM_LIST_ELEMENTS);
        // the nested attribute's length covers its padded child
        assert_eq!(a[1].1.len(), 8);
        assert_eq!(w.buf.len() % 4, 0);
    }

    #[test]
    fn chunks_stay_under_the_attribute_limit() {
        let els: Vec<(Vec<u8>, Option<String>)> = (0..5000).map(|_| (vec![0u8; 24], Some("f_x_out".into()))).collect();
        let c = chunks(&els);
        assert!(c.len() > 1);
        assert_eq!(c.iter().map(|c| c.len()).sum::<usize>(), 5000);
        for ch in c {
            let bytes: usize = ch.iter().map(|(k, g)| 24 + k.len() + g.as_ref().map_or(0, |s| 28 + s.len() + 1)).sum();
            assert!(bytes < 65_535, "{bytes}");
        }
    }
}
