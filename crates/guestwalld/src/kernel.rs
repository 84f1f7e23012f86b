//! What is loaded in the kernel and the one place that loads it.
//!
//! This is kept apart from the rest of the daemon's state, behind its own
//! lock, so that healing never waits behind a client's request: a request
//! parses, resolves, compiles, plans and stores while holding the engine;
//! it takes this lock only for its transaction. Healing takes only this
//! lock and re-loads the plan that is in it.
//!
//! Where transactions go is a [`gw_nft::Backend`]: the kernel
//! ([`gw_nft::System`]) in the daemon, the in-memory fake in the
//! reconciler's unit tests.

use gw_api::{ApiError, ErrorCode};
use gw_nft::{Backend, Features, Plan, Transaction};
use std::sync::{Arc, Mutex};
use tracing::{error, info, warn};

fn kernel_err(e: &dyn std::fmt::Display) -> ApiError {
    ApiError { code: ErrorCode::Kernel, messages: vec![e.to_string()] }
}

/// Why the daemon heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heal {
    /// Another process deleted guestwall's tables (and did nothing else to them).
    Deleted,
    /// Another process changed them otherwise.
    Changed,
    /// Events were lost.
    Lost,
}

/// The kernel side: the plan that is loaded.
pub struct Kernel {
    features: Features,
    backend: Box<dyn Backend + Send>,
    /// The kind of the last transaction run (`Transaction::kind`).
    last: Option<&'static str>,
    applied: Option<Arc<Plan>>,
    /// A plan a failed heal could not restore: the next heal tries again.
    unrestored: Option<Arc<Plan>>,
    /// Set while healing a deletion seen in the events (see `heal`).
    known_absent: bool,
    /// Set when nft was killed during a load: its outcome is unknown.
    uncertain: bool,
}

/// The kernel side, shared by the engine and the healer.
pub type SharedKernel = Arc<Mutex<Kernel>>;

/// Locks `k`; a panic while it was held left a plan that is still whole
/// (loads are all-or-nothing), so keep going.
pub fn lock(k: &SharedKernel) -> std::sync::MutexGuard<'_, Kernel> {
    k.lock().unwrap_or_else(|p| p.into_inner())
}

impl Kernel {
    /// Nothing loaded yet; transactions go to `backend`.
    pub fn new(features: Features, backend: Box<dyn Backend + Send>) -> SharedKernel {
        Arc::new(Mutex::new(Kernel {
            features,
            backend,
            last: None,
            applied: None,
            unrestored: None,
            known_absent: false,
            uncertain: false,
        }))
    }

    /// The plan in the kernel (as of the last load).
    pub fn applied(&self) -> Option<Arc<Plan>> {
        self.applied.clone()
    }

    /// Forgets what is loaded: the next [`Kernel::load_plan`] replaces the
    /// tables whole (start-up, SIGHUP).
    pub fn forget(&mut self) {
        self.applied = None;
        self.unrestored = None;
    }

    /// Loads `plan` into the kernel: only what changed since the last plan,
    /// in one transaction. Ports coming and going under filters already
    /// loaded are set elements, written by netlink (its cost is the change,
    /// not the ruleset); everything else is nft text.
    pub fn load_plan(&mut self, plan: Plan) -> Result<String, ApiError> {
        let r = self.try_load(plan);
        if r.is_err() && std::mem::take(&mut self.uncertain) {
            // nft was killed mid-way: what the kernel holds is unknown, so
            // the next load replaces the tables whole, and a heal has the
            // last plan to restore.
            self.unrestored = self.applied.take().or(self.unrestored.take());
        }
        r
    }

    /// Chooses the transaction from the loaded plan to `plan` and runs it
    /// (`gw_nft::Transaction`: element batches, staged updates, nft deltas,
    /// split or whole loads are its choices, not the daemon's).
    fn try_load(&mut self, plan: Plan) -> Result<String, ApiError> {
        let t0 = std::time::Instant::now();
        let old = self.applied.clone();
        let known_absent = self.known_absent;
        let backend = &mut self.backend;
        let tx =
            Transaction::choose(old.as_deref(), &plan, || known_absent || backend.tables_present() == (false, false));
        let message = tx.describe();
        self.last = Some(tx.kind());
        let foreign = match tx.apply(self.backend.as_mut(), old.as_deref(), &plan) {
            Ok(f) => f,
            Err(e) => {
                if e.outcome_unknown() {
                    self.uncertain = true;
                }
                return Err(kernel_err(&e));
            }
        };
        tracing::debug!("loaded in {:?}: {message}", t0.elapsed());
        if !matches!(tx, Transaction::Nothing) {
            self.applied = Some(Arc::new(plan));
        }
        if foreign {
            // Another process committed while our commit's events were
            // off: its change was not seen, so replace the tables whole.
            self.heal(Heal::Lost);
        }
        Ok(message)
    }

    /// Another process changed guestwall's tables (`Lost`: events were
    /// lost, so it may have): restore them from the plan in memory. Lost
    /// events replace the tables too, though that costs O(ruleset): a
    /// change nobody saw may be anything, and no foreign change may stay.
    pub fn heal(&mut self, why: Heal) {
        if why == Heal::Lost {
            warn!("nftables events were lost or not seen: replacing guestwall's tables to be sure");
        } else {
            warn!("another process changed guestwall's tables: restoring them");
        }
        let Some(plan) = self.applied.take().or_else(|| self.unrestored.take()) else {
            // Nothing was loaded yet (start-up failed): the next load does it.
            warn!("nothing to restore: no rules were loaded yet");
            return;
        };
        let started = std::time::Instant::now();
        // Deleted: nothing of ours filters now, so the fast split load needs
        // no question to the kernel (which is busy freeing what was deleted).
        self.known_absent = why == Heal::Deleted;
        let r = self.load_plan((*plan).clone());
        self.known_absent = false;
        match r {
            Ok(how) => info!("healing: {how}, restored in {:?}", started.elapsed()),
            Err(e) => {
                error!("could not restore the rules: {e}");
                self.unrestored = Some(plan);
            }
        }
    }

    /// Which of guestwall's two tables exist: (bridge, inet).
    pub fn tables_present(&mut self) -> (bool, bool) {
        self.backend.tables_present()
    }

    /// The kind of the last transaction run, if any.
    pub fn last_transaction(&self) -> Option<&'static str> {
        self.last
    }

    /// Forgets the last transaction's kind (tests: did one run?).
    #[cfg(test)]
    pub fn forget_last(&mut self) {
        self.last = None;
    }

    /// The features the plans are made for.
    pub fn features(&self) -> Features {
        self.features
    }
}
