//! From the plan that is loaded to the next one: which transaction, and
//! applying it.
//!
//! [`Transaction::choose`] is pure: it looks at the two plans (and, only
//! when nothing is loaded, at whether guestwall's tables exist) and picks
//! the cheapest way that keeps every port filtered. [`Transaction::apply`]
//! runs it against a [`Backend`]: the real kernel ([`System`]: `nft -f` and
//! netlink) or [`crate::fake::FakeKernel`], so that the choice, the steps
//! and the rollback of a refused step are tested without root.

use crate::client::{run_nft, NftError};
use crate::fake::{FakeKernel, Refused};
use crate::model::Staged;
use crate::netlink::{self, NetlinkError, SetChange};
use crate::Plan;

/// Element changes above this size are committed without per-element
/// events (see [`netlink::commit_quietly`]): with a listener the kernel
/// builds one notification per element.
pub const QUIET_ABOVE: usize = 1000;

/// How a plan reaches the kernel.
#[derive(Debug, Clone)]
pub enum Transaction {
    /// Nothing differs.
    Nothing,
    /// Only set and map elements differ: one netlink batch.
    Elements(Vec<SetChange>),
    /// New filters with many elements: new chains and empty sets by nft,
    /// every element in one netlink batch (all ports switch at once), then
    /// what no port uses any more.
    Staged(Staged),
    /// One nft transaction that changes only what differs (a redefined
    /// filter's chains).
    Update(String),
    /// guestwall's tables are absent (boot, a flush): chains and empty sets
    /// by nft, then every element in one netlink batch.
    Split {
        /// The chains and empty sets.
        skeleton: String,
        /// Every element.
        elements: Vec<SetChange>,
    },
    /// One nft transaction that replaces both tables (no instant without
    /// filtering).
    Replace(String),
}

/// What a step of nft text does, in terms of plans: the fake kernel does
/// that instead of reading the text.
#[derive(Debug, Clone, Copy)]
pub enum Effect<'a> {
    /// Both tables become this plan.
    Load(&'a Plan),
    /// Both tables become this plan without its per-port elements.
    Skeleton(&'a Plan),
    /// The chains and (empty) sets of this plan that are missing are added.
    AddMissing(&'a Plan),
    /// Chains and sets this plan does not have are removed.
    RemoveOthers(&'a Plan),
}

/// Where transactions go.
pub trait Backend {
    /// Runs one nft script (`effect` says what it does).
    fn nft(&mut self, script: &str, effect: Effect<'_>) -> Result<(), TxError>;
    /// Commits one netlink batch of element changes, all or nothing;
    /// `quiet` without per-element events. Returns whether another process
    /// committed meanwhile (its events were not seen).
    fn commit(&mut self, changes: &[SetChange], quiet: bool) -> Result<bool, TxError>;
    /// Which of guestwall's two tables exist: (bridge, inet). An error
    /// asking counts as present (a full load replaces them anyway).
    fn tables_present(&mut self) -> (bool, bool);
}

/// A step of a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// nft failed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The kernel refused the netlink batch.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The fake kernel refused.
    #[error(transparent)]
    Fake(#[from] Refused),
}

impl TxError {
    /// Whether the kernel may hold anything now (nft was killed mid-way):
    /// the next load must replace the tables whole.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, TxError::Nft(NftError::Killed { .. }))
    }
}

fn count(changes: &[SetChange]) -> usize {
    changes.iter().map(|c| c.elements.len()).sum()
}

impl Transaction {
    /// The transaction from `old` (loaded; `None`: nothing known) to `new`.
    /// `absent` is asked only when nothing is loaded: whether both of
    /// guestwall's tables are missing (then nothing filters yet, and the
    /// fast split load opens no window).
    pub fn choose(old: Option<&Plan>, new: &Plan, absent: impl FnOnce() -> bool) -> Transaction {
        let Some(old) = old else {
            return match (absent(), new.all_elements()) {
                (true, Some(elements)) => Transaction::Split { skeleton: new.render_skeleton(), elements },
                _ => Transaction::Replace(new.render_full()),
            };
        };
        if let Some(changes) = new.element_changes(old) {
            return match changes.is_empty() {
                true => Transaction::Nothing,
                false => Transaction::Elements(changes),
            };
        }
        // Three steps only pay when many elements would go through nft.
        if let Some(st) = new.staged_update(old).filter(|st| count(&st.elements) > QUIET_ABOVE) {
            return Transaction::Staged(st);
        }
        match new.render_update(old) {
            s if s.is_empty() => Transaction::Nothing,
            s => Transaction::Update(s),
        }
    }

    /// Its kind, in one word (for the log and for tests of the choice).
    pub fn kind(&self) -> &'static str {
        match self {
            Transaction::Nothing => "nothing",
            Transaction::Elements(_) => "elements",
            Transaction::Staged(_) => "staged",
            Transaction::Update(_) => "update",
            Transaction::Split { .. } => "split",
            Transaction::Replace(_) => "replace",
        }
    }

    /// One line for the log: what was done.
    pub fn describe(&self) -> String {
        match self {
            Transaction::Nothing => "the kernel already matches".into(),
            Transaction::Elements(c) => format!("one transaction of {} set element change(s)", count(c)),
            Transaction::Staged(st) => {
                format!("new chains, then one transaction of {} set element change(s)", count(&st.elements))
            }
            Transaction::Update(s) => {
                format!("one transaction of {} line(s)", s.lines().filter(|l| !l.starts_with('#')).count())
            }
            Transaction::Split { elements, .. } => {
                format!("tables created, then {} set element(s) in one transaction", count(elements))
            }
            Transaction::Replace(_) => "tables replaced in one transaction".into(),
        }
    }

    /// Runs it: `old` is what is loaded, `new` what it becomes. On error,
    /// what is loaded is `old` again (a staged update that fails in its
    /// batch is rolled back), except when [`TxError::outcome_unknown`].
    /// Returns whether another process committed while events were off.
    pub fn apply(&self, k: &mut dyn Backend, old: Option<&Plan>, new: &Plan) -> Result<bool, TxError> {
        match self {
            Transaction::Nothing => Ok(false),
            Transaction::Elements(changes) => k.commit(changes, count(changes) > QUIET_ABOVE),
            Transaction::Staged(st) => {
                k.nft(&st.before, Effect::AddMissing(new))?;
                let foreign = match k.commit(&st.elements, true) {
                    Ok(f) => f,
                    Err(e) => {
                        // Put back exactly what was loaded (without the new,
                        // unused chains) before reporting.
                        if let Some(old) = old {
                            if let Err(e2) = k.nft(&old.render_full(), Effect::Load(old)) {
                                tracing::error!("restoring the previous rules failed too: {e2}");
                            }
                        }
                        return Err(e);
                    }
                };
                if !st.after.is_empty() {
                    if let Err(e) = k.nft(&st.after, Effect::RemoveOthers(new)) {
                        tracing::warn!("removing chains no port uses failed ({e}); the next full load removes them");
                    }
                }
                Ok(foreign)
            }
            Transaction::Update(script) => k.nft(script, Effect::Load(new)).map(|()| false),
            Transaction::Split { skeleton, elements } => {
                k.nft(skeleton, Effect::Skeleton(new))?;
                match k.commit(elements, true) {
                    Ok(f) => Ok(f),
                    Err(e) => {
                        tracing::warn!("writing set elements by netlink failed ({e}); loading them as nft text");
                        k.nft(&new.render_full(), Effect::Load(new)).map(|()| false)
                    }
                }
            }
            Transaction::Replace(script) => k.nft(script, Effect::Load(new)).map(|()| false),
        }
    }
}

/// The kernel of this network namespace: `nft -f` and nf_tables netlink.
pub struct System;

impl Backend for System {
    fn nft(&mut self, script: &str, _: Effect<'_>) -> Result<(), TxError> {
        Ok(run_nft(script, false)?)
    }

    fn commit(&mut self, changes: &[SetChange], quiet: bool) -> Result<bool, TxError> {
        Ok(if quiet { netlink::commit_quietly(changes)? } else { netlink::commit(changes).map(|()| false)? })
    }

    fn tables_present(&mut self) -> (bool, bool) {
        let ask = |f| netlink::table_exists(f, crate::TABLE).unwrap_or(true);
        (ask(netlink::FAMILY_BRIDGE), ask(netlink::FAMILY_INET))
    }
}

impl Backend for FakeKernel {
    fn nft(&mut self, _: &str, effect: Effect<'_>) -> Result<(), TxError> {
        if let Some(e) = self.refuse_nft.take() {
            return Err(TxError::Fake(e));
        }
        match effect {
            Effect::Load(p) => self.load(p),
            Effect::Skeleton(p) => self.load_skeleton(p),
            Effect::AddMissing(p) => self.add_missing(p),
            Effect::RemoveOthers(p) => self.remove_others(p),
        }
        Ok(())
    }

    fn commit(&mut self, changes: &[SetChange], _: bool) -> Result<bool, TxError> {
        if let Some(e) = self.refuse_commit.take() {
            return Err(TxError::Fake(e));
        }
        FakeKernel::commit(self, changes)?;
        Ok(false)
    }

    fn tables_present(&mut self) -> (bool, bool) {
        use crate::names::Family;
        (self.tables.contains_key(&Family::Bridge), self.tables.contains_key(&Family::Inet))
    }
}
