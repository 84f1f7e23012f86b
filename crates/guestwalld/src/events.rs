//! The reconciler's inbox. Every change to desired state is an [`Event`],
//! handled one at a time and in arrival order by the reconciler thread,
//! which owns the [`Engine`] (no lock: nothing else can touch it).
//!
//! One thing does not queue here: healing a foreign change to guestwall's
//! tables. It re-loads the plan that is already in the kernel side
//! (`kernel.rs`, behind its own lock), so it never waits behind a request
//! that is still parsing and compiling.

use crate::engine::Engine;
use gw_api::{ApiError, ErrorCode, Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;
use tracing::error;

/// What changes desired state.
#[derive(Debug)]
pub enum Event {
    /// A client's API request.
    Request(Request),
    /// Interfaces came, went or changed (rtnetlink). Coalesced: a burst
    /// while one is handled costs one more, and none is ever delayed (a
    /// debounce that waits for quiet could be held off forever by a guest
    /// flapping its own link).
    LinksChanged,
    /// Replace guestwall's tables with the stored state (start-up, SIGHUP).
    Reload(&'static str),
}

impl Event {
    /// A short name for the log (a request's document can be megabytes).
    fn label(&self) -> &'static str {
        match self {
            Event::Request(r) => match r {
                Request::FilterDefine { .. } => "filter define",
                Request::FilterUndefine { .. } => "filter undefine",
                Request::FilterList => "filter list",
                Request::FilterDumpxml { .. } => "filter dumpxml",
                Request::BindingCreate { .. } => "binding create",
                Request::BindingCreateBatch { .. } => "binding create (batch)",
                Request::BindingDelete { .. } => "binding delete",
                Request::BindingList => "binding list",
                Request::BindingDumpxml { .. } => "binding dumpxml",
                Request::Reload => "reload",
                Request::Status => "status",
            },
            Event::LinksChanged => "interfaces changed",
            Event::Reload(why) => why,
        }
    }
}

struct Envelope {
    event: Event,
    reply: Option<oneshot::Sender<Response>>,
}

/// Where event sources post events.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Envelope>,
    links_pending: Arc<AtomicBool>,
}

fn gone() -> Response {
    Response::Error(ApiError {
        code: ErrorCode::Kernel,
        messages: vec!["guestwalld's reconciler has stopped (see the daemon's log)".into()],
    })
}

impl Inbox {
    /// Posts a request; where its answer will come (none: the reconciler
    /// has stopped).
    fn post(&self, req: Request) -> Option<oneshot::Receiver<Response>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Envelope { event: Event::Request(req), reply: Some(reply) }).ok()?;
        Some(answer)
    }

    /// Posts a request and waits for its answer.
    pub async fn request(&self, req: Request) -> Response {
        match self.post(req) {
            Some(answer) => answer.await.unwrap_or_else(|_| gone()),
            None => gone(),
        }
    }

    /// Posts a request and waits for its answer, blocking this thread (for
    /// threads outside the async runtime: the libvirt protocol's clients).
    pub fn request_blocking(&self, req: Request) -> Response {
        match self.post(req) {
            Some(answer) => answer.blocking_recv().unwrap_or_else(|_| gone()),
            None => gone(),
        }
    }

    /// Interfaces changed: posts [`Event::LinksChanged`] unless one is
    /// already waiting.
    pub fn links_changed(&self) {
        if !self.links_pending.swap(true, Ordering::SeqCst) {
            let _ = self.tx.send(Envelope { event: Event::LinksChanged, reply: None });
        }
    }

    /// Posts [`Event::Reload`].
    pub fn reload(&self, why: &'static str) {
        let _ = self.tx.send(Envelope { event: Event::Reload(why), reply: None });
    }
}

/// Starts the reconciler thread: it makes the engine with `load` (reading
/// the store happens there, so the allocator gives its garbage back on the
/// same thread as everything else), handles `Event::Reload("start-up")`,
/// reports that on `ready`, then handles events until every [`Inbox`] is
/// dropped.
pub fn start(
    load: impl FnOnce() -> anyhow::Result<Engine> + Send + 'static,
) -> std::io::Result<(Inbox, oneshot::Receiver<anyhow::Result<Response>>)> {
    let (tx, rx) = mpsc::channel::<Envelope>();
    let links_pending = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = oneshot::channel();
    let pending = links_pending.clone();
    std::thread::Builder::new().name("reconciler".into()).spawn(move || {
        let mut engine = match load() {
            Ok(e) => e,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let first = step(&mut engine, Event::Reload("start-up"));
        let _ = ready_tx.send(Ok(first));
        while let Ok(Envelope { event, reply }) = rx.recv() {
            if matches!(event, Event::LinksChanged) {
                // Cleared before the dump, so a change during it posts one more.
                pending.store(false, Ordering::SeqCst);
            }
            let answer = step(&mut engine, event);
            if let Some(r) = reply {
                let _ = r.send(answer);
            }
        }
    })?;
    Ok((Inbox { tx, links_pending }, ready))
}

/// Handles one event. A panic answers an error and the reconciler goes on:
/// every change is all-or-nothing, so the state it left is whole.
fn step(engine: &mut Engine, event: Event) -> Response {
    let what = event.label();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.on(event)));
    give_back_memory();
    r.unwrap_or_else(|_| {
        error!("handling '{what}' panicked; the state is as before it");
        Response::Error(ApiError {
            code: ErrorCode::Kernel,
            messages: vec!["internal error while handling the request (see the daemon's log)".into()],
        })
    })
}

/// Returns memory freed by the last event to the system at once (its
/// garbage can be tens of megabytes with thousands of ports).
pub fn give_back_memory() {
    // SAFETY: mi_collect has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
