//! What is loaded in the kernel and the one place that loads it.
//!
//! This is kept apart from the rest of the daemon's state, behind its own
//! lock, so that healing never waits behind a client's request: a request
//! parses, resolves, compiles, plans and stores while holding the engine;
//! it takes this lock only for its transaction. Healing takes only this
//! lock and re-loads the plan that is in it.

use gw_api::{ApiError, ErrorCode};
use gw_nft::{Features, Plan};
use std::sync::{Arc, Mutex};
use tracing::{error, info, warn};

fn kernel_err(e: &dyn std::fmt::Display) -> ApiError {
    ApiError { code: ErrorCode::Kernel, messages: vec![e.to_string()] }
}

/// Element changes above this size are committed without per-element
/// events (see `gw_nft::netlink::commit_quietly`).
const QUIET_ABOVE: usize = 1000;

fn count(changes: &[gw_nft::netlink::SetChange]) -> usize {
    changes.iter().map(|c| c.elements.len()).sum()
}

/// Which of guestwall's two tables are in the kernel.
pub fn tables_present() -> (bool, bool) {
    use gw_nft::netlink::{table_exists, FAMILY_BRIDGE, FAMILY_INET};
    // An error asking counts as present: a full load replaces them anyway.
    let ask = |f| table_exists(f, gw_nft::TABLE).unwrap_or(true);
    (ask(FAMILY_BRIDGE), ask(FAMILY_INET))
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
    /// Nothing loaded yet.
    pub fn new(features: Features) -> SharedKernel {
        Arc::new(Mutex::new(Kernel {
            features,
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

    /// Runs nft, noting when its outcome is unknown (it was killed).
    fn nft(&mut self, script: &str) -> Result<(), ApiError> {
        gw_nft::run_nft(script, false).map_err(|e| {
            if matches!(e, gw_nft::NftError::Killed { .. }) {
                self.uncertain = true;
            }
            kernel_err(&e)
        })
    }

    fn try_load(&mut self, plan: Plan) -> Result<String, ApiError> {
        let t0 = std::time::Instant::now();
        let mut foreign = false;
        let old = self.applied.clone();
        let changes = old.as_ref().and_then(|old| plan.element_changes(old));
        // Only worth three steps when many elements would go through nft.
        let staged = match (&old, &changes) {
            (Some(old), None) => plan.staged_update(old).filter(|st| count(&st.elements) > QUIET_ABOVE),
            _ => None,
        };
        let message = match &old {
            Some(old) => match (changes, staged) {
                (Some(changes), _) if changes.is_empty() => return Ok("the kernel already matches".into()),
                (Some(changes), _) => {
                    let n = count(&changes);
                    if n > QUIET_ABOVE {
                        foreign = gw_nft::netlink::commit_quietly(&changes).map_err(|e| kernel_err(&e))?;
                    } else {
                        gw_nft::netlink::commit(&changes).map_err(|e| kernel_err(&e))?;
                    }
                    format!("one transaction of {n} set element change(s)")
                }
                (None, Some(st)) => {
                    let n = count(&st.elements);
                    self.nft(&st.before)?;
                    match gw_nft::netlink::commit_quietly(&st.elements) {
                        Ok(f) => foreign = f,
                        Err(e) => {
                            // Put back exactly what was loaded (without the new,
                            // unused chains) before reporting.
                            if let Err(e2) = self.nft(&old.render_full()) {
                                error!("restoring the previous rules failed too: {e2}");
                            }
                            return Err(kernel_err(&e));
                        }
                    }
                    if !st.after.is_empty() {
                        if let Err(e) = gw_nft::run_nft(&st.after, false) {
                            warn!("removing chains no port uses failed ({e}); the next full load removes them");
                        }
                    }
                    format!("new chains, then one transaction of {n} set element change(s)")
                }
                (None, None) => {
                    let script = plan.render_update(old);
                    if script.is_empty() {
                        return Ok("the kernel already matches".into());
                    }
                    self.nft(&script)?;
                    format!("one transaction of {} line(s)", script.lines().filter(|l| !l.starts_with('#')).count())
                }
            },
            None => {
                let (message, f) = self.load_full(&plan)?;
                foreign = f;
                message
            }
        };
        tracing::debug!("loaded in {:?}: {message}", t0.elapsed());
        self.applied = Some(Arc::new(plan));
        if foreign {
            // Another process committed while our commit's events were
            // off: its change was not seen, so replace the tables whole.
            self.heal(Heal::Lost);
        }
        Ok(message)
    }

    /// Replaces guestwall's tables with `plan`. When they are absent (boot,
    /// or after a flush) nothing is filtered yet, and the load is split:
    /// chains and empty sets by nft, then every element in one netlink
    /// transaction, which costs a fraction of nft parsing them. When they
    /// are present, one nft transaction replaces them: no instant without
    /// filtering.
    fn load_full(&mut self, plan: &Plan) -> Result<(String, bool), ApiError> {
        if self.known_absent || tables_present() == (false, false) {
            let t0 = std::time::Instant::now();
            if let Some(elements) = plan.all_elements() {
                let t1 = std::time::Instant::now();
                self.nft(&plan.render_skeleton())?;
                let t2 = std::time::Instant::now();
                let r = gw_nft::netlink::commit_quietly(&elements);
                tracing::debug!("elements {:?}, skeleton {:?}, netlink {:?}", t1 - t0, t2 - t1, t2.elapsed());
                match r {
                    Ok(foreign) => {
                        let n = count(&elements);
                        return Ok((format!("tables created, then {n} set element(s) in one transaction"), foreign));
                    }
                    Err(e) => warn!("writing set elements by netlink failed ({e}); loading them as nft text"),
                }
            }
        }
        self.nft(&plan.render_full())?;
        Ok(("tables replaced in one transaction".into(), false))
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

    /// The features the plans are made for.
    pub fn features(&self) -> Features {
        self.features
    }
}
