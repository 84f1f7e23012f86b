//! Our own transactions, told from others' by tickets: the healer must
//! not restore the tables after a commit of ours, and must after anyone
//! else's.
//!
//! Kept apart from both committers (`nft` in [`crate::client`], netlink in
//! [`crate::netlink`]): each opens a ticket, and the watcher claims it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, OnceLock};

// The kernel ends every transaction with a generation event naming the
// thread that committed it, by its id in the initial pid namespace. A pid
// alone does not make a commit ours: once our `nft` is reaped, or one of
// our threads has exited, another process may get its pid (with a pid_max
// of 32768, seconds of forking are enough). A ticket is a pid *while it is
// ours*. It opens when the committer exists and has not committed yet, with
// the ruleset's generation then (`before`; read after the fork, not before:
// the pid's previous owner may commit until it exits, and the watcher may
// read that event late); it is settled, once the commit is over, with the
// generation read then (`after`), while the pid is still ours: `nft` has
// exited but is not reaped yet (its zombie keeps the pid; nothing else in
// the process may reap it), or the committing thread is still running.
// Only in the initial pid namespace are our pids the kernel's; elsewhere
// no ticket opens. So every generation in
// `before+1..=after` committed by that pid (in that network namespace,
// where generations are counted) was committed while the pid was ours: it
// is ours. One commit of ours is one transaction, at most one generation:
// the watcher claims the ticket at the first generation in the range by
// its pid, and the ticket is gone. Everything else is foreign: the pid's
// generations up to `before` (it was not ours yet), beyond `after` (it may
// have been reused), and a second one under the ticket.
//
// Tickets close without a claim when the commit made no generation (nft
// refused it, the kernel refused the batch, or the generation did not
// move), when `after` cannot be read (it must be known before the pid is
// given back), and when the watcher sees a generation beyond `after` (the
// event was lost; the watcher raises Lost for that). A closed or dropped
// ticket can only make one of our commits look foreign (a heal too many),
// never a foreign one ours.

/// Tickets waiting at most: beyond, the oldest is dropped. Nothing claims
/// tickets in a process without a watcher (the command-line tool, tests).
const MAX_TICKETS: usize = 256;

/// A ticket: a commit of ours whose generation event has not been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    id: u64,
    /// The network namespace (its nsfs inode): each counts its generations.
    netns: u64,
    /// The committing process or thread, ours for the ticket's whole life.
    pid: u32,
    /// The generation before the commit.
    before: u32,
    /// The generation after it; `None` while it runs.
    after: Option<u32>,
}

impl Waiting {
    /// Whether `generation` may be this commit's (generations wrap).
    fn covers(&self, generation: u32) -> bool {
        let d = generation.wrapping_sub(self.before);
        let last = self.after.map_or(i32::MAX as u32, |a| a.wrapping_sub(self.before));
        (1..=last).contains(&d)
    }

    /// Whether the watcher is past this commit's generations: its event
    /// will not come any more.
    fn passed(&self, generation: u32) -> bool {
        self.after.is_some_and(|a| (generation.wrapping_sub(a) as i32) > 0)
    }
}

/// The tickets of our commits (the process's own are behind [`claim`] and
/// [`is_ours`]).
#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    waiting: VecDeque<Waiting>,
}

impl Tickets {
    const fn new() -> Tickets {
        Tickets { next: 0, waiting: VecDeque::new() }
    }

    /// Opens a ticket for the commit `pid` is about to make in `netns`,
    /// where the generation is `before`. `pid` must be ours from before the
    /// generation was read until the ticket is settled or closed.
    fn open(&mut self, netns: u64, pid: u32, before: u32) -> u64 {
        if self.waiting.len() >= MAX_TICKETS {
            self.waiting.pop_front();
        }
        self.next += 1;
        self.waiting.push_back(Waiting { id: self.next, netns, pid, before, after: None });
        self.next
    }

    /// The commit is over: the generation is `after`, read while the pid
    /// was still ours.
    fn settle(&mut self, id: u64, after: u32) {
        if let Some(i) = self.waiting.iter().position(|t| t.id == id) {
            if after == self.waiting[i].before {
                // Nobody committed: neither did we.
                self.waiting.remove(i);
            } else {
                self.waiting[i].after = Some(after);
            }
        }
    }

    /// The commit made no generation, or its pid is about to go while
    /// `after` is unknown.
    fn close(&mut self, id: u64) {
        self.waiting.retain(|t| t.id != id);
    }

    /// The watcher, at each generation event: whether `generation`,
    /// committed by `pid` in `netns`, is ours. Claims its ticket, and closes
    /// those whose generation has gone by unseen.
    fn claim(&mut self, netns: u64, generation: u32, pid: u32) -> bool {
        let ours = self.waiting.iter().position(|t| t.netns == netns && t.pid == pid && t.covers(generation));
        if let Some(i) = ours {
            self.waiting.remove(i);
        }
        self.waiting.retain(|t| t.netns != netns || !t.passed(generation));
        ours.is_some()
    }
}

static TICKETS: Mutex<Tickets> = Mutex::new(Tickets::new());

fn tickets() -> MutexGuard<'static, Tickets> {
    // Every change leaves the tickets consistent, and a ticket must close
    // whatever happened elsewhere.
    TICKETS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The calling thread's network namespace, as its nsfs inode.
fn netns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").ok().map(|m| m.ino())
}

/// The initial pid namespace's inode (`PROC_PID_INIT_INO`, fixed by the
/// kernel).
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// Whether we run in the initial pid namespace. The kernel names
/// committers by their pid there; in another one, the pids we know (a
/// child's, our threads') are not those its events carry, and may be
/// another process's: then no commit is claimed as ours.
fn initial_pid_namespace() -> bool {
    static INITIAL: OnceLock<bool> = OnceLock::new();
    *INITIAL.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == INITIAL_PID_NAMESPACE)
    })
}

/// A commit of ours waiting for its generation event (see [`claim`]).
/// Dropping it closes it: its event, if one comes, counts as foreign.
#[must_use = "dropping a ticket closes it"]
#[derive(Debug)]
pub struct Ticket(Option<u64>);

impl Ticket {
    /// The commit is over: `after` is the ruleset's generation read since,
    /// while the committer's pid was still ours (`None`: it could not be
    /// read, and the ticket closes). Only after this may the pid go (the
    /// thread exit, the process be reaped).
    pub fn settle(mut self, after: Option<u32>) {
        if let Some(id) = self.0.take() {
            match after {
                Some(a) => tickets().settle(id, a),
                None => tickets().close(id),
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(id) = self.0.take() {
            tickets().close(id);
        }
    }
}

/// Opens a ticket for the transaction that `pid` (a process or thread id)
/// is about to commit in this thread's network namespace, so that
/// [`is_ours`] recognises its generation. `pid` must be ours now and until
/// the ticket is settled or dropped: a child not yet reaped, a thread not
/// yet exited. `generation` reads the ruleset's generation now. Without a
/// ticket (outside the initial pid namespace, or the generation unreadable)
/// the commit will count as foreign.
pub fn claim(pid: u32, generation: impl FnOnce() -> Option<u32>) -> Ticket {
    let open = || {
        if !initial_pid_namespace() {
            return None;
        }
        let netns = netns()?;
        let before = generation()?;
        Some(tickets().open(netns, pid, before))
    };
    Ticket(open())
}

/// Whether the transaction that made `generation`, committed by `pid` (as
/// the event names them) in this thread's network namespace, is one of
/// ours. For the watcher, which must ask about every generation in order:
/// it claims the commit's ticket (a second generation by that pid is not
/// ours) and closes the tickets whose generation has gone by.
pub fn is_ours(generation: u32, pid: u32) -> bool {
    netns().is_some_and(|n| tickets().claim(n, generation, pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 4026531840;

    #[test]
    fn a_commit_is_claimed_once() {
        let mut t = Tickets::new();
        let id = t.open(NS, 100, 7);
        t.settle(id, 8);
        assert!(t.claim(NS, 8, 100));
        assert!(!t.claim(NS, 9, 100), "a second generation by that pid");
        assert!(t.waiting.is_empty());
    }

    #[test]
    fn the_event_may_come_before_the_ticket_is_settled() {
        let mut t = Tickets::new();
        let id = t.open(NS, 100, 7);
        assert!(t.claim(NS, 8, 100), "the commit runs: any generation after 7 by the pid is ours");
        t.settle(id, 8);
        assert!(t.waiting.is_empty());
        assert!(!t.claim(NS, 9, 100), "a second generation by that pid");
    }

    #[test]
    fn a_reused_pid_is_foreign() {
        let mut t = Tickets::new();
        // Our nft (pid 100) made generation 8 and was reaped; another
        // process got pid 100 and made 9, before the watcher read either.
        let id = t.open(NS, 100, 7);
        t.settle(id, 8);
        assert!(t.claim(NS, 8, 100));
        assert!(!t.claim(NS, 9, 100));
        // The same with our event lost: 9 is beyond the ticket, which goes.
        let id = t.open(NS, 100, 9);
        t.settle(id, 10);
        assert!(!t.claim(NS, 11, 100));
        assert!(t.waiting.is_empty());
        assert!(!t.claim(NS, 10, 100), "the ticket went with generation 11");
    }

    #[test]
    fn a_pid_that_committed_before_it_was_ours_is_foreign() {
        let mut t = Tickets::new();
        // Another process with pid 100 made generation 7 and exited; our nft
        // got pid 100 (the generation was 7 then); the watcher reads 7 now.
        let id = t.open(NS, 100, 7);
        assert!(!t.claim(NS, 7, 100));
        assert!(!t.claim(NS, 3, 100));
        assert!(t.claim(NS, 8, 100));
        t.settle(id, 8);
    }

    #[test]
    fn a_closed_ticket_claims_nothing() {
        let mut t = Tickets::new();
        // nft refused: nothing committed, and its pid may go.
        let id = t.open(NS, 100, 7);
        t.close(id);
        assert!(!t.claim(NS, 8, 100));
        // The generation did not move: no commit to wait for.
        let id = t.open(NS, 100, 8);
        t.settle(id, 8);
        assert!(t.waiting.is_empty());
        assert!(!t.claim(NS, 9, 100));
    }

    #[test]
    fn an_unknown_outcome_waits_for_its_generation_or_beyond() {
        let mut t = Tickets::new();
        // nft was killed; others committed meanwhile: ours is one of 8..=9, or none.
        let id = t.open(NS, 100, 7);
        t.settle(id, 9);
        assert!(!t.claim(NS, 8, 200));
        assert!(!t.claim(NS, 9, 300));
        assert_eq!(t.waiting.len(), 1, "9 is not beyond the ticket");
        assert!(!t.claim(NS, 10, 400));
        assert!(t.waiting.is_empty(), "a generation beyond the ticket closes it");
        // Or its generation comes.
        let id = t.open(NS, 100, 10);
        t.settle(id, 12);
        assert!(!t.claim(NS, 11, 200));
        assert!(t.claim(NS, 12, 100));
        assert!(!t.claim(NS, 13, 100));
    }

    #[test]
    fn other_pids_and_namespaces_are_foreign() {
        let mut t = Tickets::new();
        let id = t.open(NS, 100, 7);
        t.settle(id, 8);
        assert!(!t.claim(NS, 8, 101));
        assert!(!t.claim(NS + 1, 8, 100), "another network namespace counts its own generations");
        // Generations elsewhere leave this namespace's tickets alone.
        assert!(!t.claim(NS + 1, 50, 100));
        assert!(t.claim(NS, 8, 100));
    }

    #[test]
    fn tickets_of_one_pid_are_told_apart_by_generation() {
        let mut t = Tickets::new();
        // One thread, two commits in a row; the watcher reads both events later.
        let a = t.open(NS, 100, 7);
        t.settle(a, 8);
        let b = t.open(NS, 100, 8);
        t.settle(b, 9);
        assert!(t.claim(NS, 8, 100));
        assert!(t.claim(NS, 9, 100));
        assert!(!t.claim(NS, 10, 100));
    }

    #[test]
    fn generations_wrap() {
        let mut t = Tickets::new();
        // The kernel skips 0 when its counter wraps.
        let id = t.open(NS, 100, u32::MAX);
        t.settle(id, 1);
        assert!(!t.claim(NS, u32::MAX, 100));
        assert!(t.claim(NS, 1, 100));
        let id = t.open(NS, 100, u32::MAX - 1);
        assert!(!t.claim(NS, u32::MAX - 1, 100));
        assert!(t.claim(NS, u32::MAX, 100));
        t.settle(id, u32::MAX);
        assert!(t.waiting.is_empty());
    }

    #[test]
    fn the_oldest_ticket_goes_when_too_many_wait() {
        let mut t = Tickets::new();
        let first = t.open(NS, 1, 7);
        t.settle(first, 8);
        for pid in 2..=MAX_TICKETS as u32 + 1 {
            let _ = t.open(NS, pid, 7);
        }
        assert_eq!(t.waiting.len(), MAX_TICKETS);
        assert!(!t.claim(NS, 8, 1), "dropped: a heal too many, never one too few");
        assert!(t.claim(NS, 8, 2));
    }
}
