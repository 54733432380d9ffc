//! Outbound queues: one bounded queue and one sender thread per session, so that the router
//! never waits for a socket.
//!
//! QuickFIX's multi-threaded socket server writes with a blocking `send` while holding the
//! session's lock, and buffers nothing of its own: a participant that stops reading would stall
//! whichever thread sends to it. So the router hands each session's messages, in batches (one
//! per router wake-up), to that session's sender thread, which calls QuickFIX. A session is cut
//! off (its queue dropped, QuickFIX told to log it out; the router resynchronises it when it
//! logs on again) when
//! - its queue holds [`OUTBOUND_MESSAGES_MAX`] messages, or
//! - one send has been blocked for [`SEND_TIMEOUT`]: the acceptor's listening socket gets that
//!   send timeout (`SO_SNDTIMEO`, which accepted sockets inherit on Linux), so a send to a
//!   peer that takes nothing fails after it instead of holding the session's lock for ever.
//!
//! A batch of [`CORK_BATCH_MIN`] messages or more is sent with the session's socket corked
//! (`SessionSocket`, `session_socket.cpp`): QuickFIX still writes each message with its own
//! `send`, but they leave in full TCP segments, and the rest at the uncork right after the
//! batch, instead of one segment per message (the acceptor sets TCP_NODELAY). On the
//! closed-loop bench this took the trading flow from about 47,500 to 56,000-60,500 orders/s
//! (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::session::{send_to, session_id, SessionSocket};
use super::wire::OutMsg;

/// Messages waiting for one session's socket before the session is cut off.
pub const OUTBOUND_MESSAGES_MAX: usize = 10_000;
/// How long one send may block before the session is cut off.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Batches of at least this many messages are sent corked (`SessionSocket`,
/// `session_socket.cpp`); one or two messages go out without the two extra system calls (at
/// 10,000 orders/s most batches are that small).
pub const CORK_BATCH_MIN: usize = 3;

/// What the sender threads share with the router about one session.
struct Shared {
    /// Messages handed to the thread and not yet through QuickFIX.
    queued: AtomicUsize,
    /// Cut off: drop what is queued and send nothing until [`Outbound::restore`].
    cut: AtomicBool,
    /// Every message caused by a published record older than this went through QuickFIX
    /// (the records' time, in nanoseconds since the epoch).
    delivered_ts_ns: AtomicU64,
}

/// One router wake-up's messages to a session, and the time of the last published record the
/// router had seen then.
struct Batch {
    msgs: Vec<OutMsg>,
    ts_ns: u64,
}

struct SessionOut {
    tx: Sender<Batch>,
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

/// The router's outbound side: messages gathered per session during one wake-up, then handed
/// to the sessions' sender threads.
pub(crate) struct Outbound {
    sessions: HashMap<String, SessionOut>,
    gathered: HashMap<String, Vec<OutMsg>>,
    /// Sessions the sender threads found stuck (a send blocked for [`SEND_TIMEOUT`]).
    stuck_rx: Receiver<String>,
    stuck_tx: Sender<String>,
}

impl Outbound {
    /// No sessions yet (threads start on a session's first message).
    pub(crate) fn new() -> Outbound {
        let (stuck_tx, stuck_rx) = crossbeam_channel::unbounded();
        Outbound { sessions: HashMap::new(), gathered: HashMap::new(), stuck_rx, stuck_tx }
    }

    /// Queues a message for a session (sent at the next [`Outbound::flush`]).
    pub(crate) fn push(&mut self, comp_id: &str, out: OutMsg) {
        match self.gathered.get_mut(comp_id) {
            Some(v) => v.push(out),
            None => {
                self.gathered.insert(comp_id.to_string(), vec![out]);
            }
        }
    }

    /// Hands what was gathered to the sender threads (`ts_ns`: the time of the last published
    /// record seen); returns the sessions to cut off (their queue is full, or a send was
    /// stuck). Their messages are dropped.
    pub(crate) fn flush(&mut self, ts_ns: u64) -> Vec<String> {
        let mut cut: Vec<String> = self.stuck_rx.try_iter().collect();
        let gathered = std::mem::take(&mut self.gathered);
        for (comp_id, batch) in gathered {
            let s = match self.sessions.get(&comp_id) {
                Some(s) => s,
                None => match self.start(&comp_id, ts_ns) {
                    Some(s) => s,
                    None => continue,
                },
            };
            if s.shared.cut.load(Ordering::Acquire) {
                continue;
            }
            let n = batch.len();
            if s.shared.queued.load(Ordering::Acquire) + n > OUTBOUND_MESSAGES_MAX {
                cut.push(comp_id);
                continue;
            }
            s.shared.queued.fetch_add(n, Ordering::AcqRel);
            if s.tx.send(Batch { msgs: batch, ts_ns }).is_err() {
                s.shared.queued.fetch_sub(n, Ordering::AcqRel);
            }
        }
        cut.sort();
        cut.dedup();
        for comp_id in &cut {
            if let Some(s) = self.sessions.get(comp_id) {
                s.shared.cut.store(true, Ordering::Release);
            }
        }
        cut
    }

    /// Sends to a session again (it logged on after being cut off).
    pub(crate) fn restore(&mut self, comp_id: &str) {
        if let Some(s) = self.sessions.get(comp_id) {
            s.shared.cut.store(false, Ordering::Release);
        }
    }

    /// The time from which a cut-off session may have missed reports: every message caused by
    /// an older published record went through QuickFIX.
    pub(crate) fn delivered_ts_ns(&self, comp_id: &str) -> u64 {
        self.sessions.get(comp_id).map_or(0, |s| s.shared.delivered_ts_ns.load(Ordering::Acquire))
    }

    /// Ends the sender threads after what they hold is sent (a stuck session gives up after
    /// [`SEND_TIMEOUT`]).
    pub(crate) fn stop(self) {
        for (_, s) in self.sessions {
            drop(s.tx);
            let _ = s.thread.join();
        }
    }

    fn start(&mut self, comp_id: &str, ts_ns: u64) -> Option<&SessionOut> {
        // Unbounded as a channel, bounded in messages by `queued`.
        let (tx, rx) = crossbeam_channel::unbounded::<Batch>();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
            delivered_ts_ns: AtomicU64::new(ts_ns),
        });
        let (who, sh, stuck) = (comp_id.to_string(), shared.clone(), self.stuck_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("cccx-fix-out-{comp_id}"))
            .spawn(move || sender(&who, &rx, &sh, &stuck));
        match thread {
            Ok(thread) => {
                self.sessions.insert(comp_id.to_string(), SessionOut { tx, shared, thread });
                self.sessions.get(comp_id)
            }
            Err(e) => {
                tracing::error!("cannot start the FIX sender thread of {comp_id}: {e}");
                None
            }
        }
    }
}

/// A session's sender thread: QuickFIX's `send` for each message, in order.
fn sender(comp_id: &str, rx: &Receiver<Batch>, shared: &Shared, stuck: &Sender<String>) {
    let session = match session_id(comp_id) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("FIX session id of {comp_id}: {e}; its messages are dropped");
            shared.cut.store(true, Ordering::Release);
            while let Ok(batch) = rx.recv() {
                shared.queued.fetch_sub(batch.msgs.len(), Ordering::AcqRel);
            }
            return;
        }
    };
    let socket = SessionSocket::new(comp_id);
    while let Ok(batch) = rx.recv() {
        let n = batch.msgs.len();
        let mut whole = true;
        // A batch leaves in full TCP segments rather than one per message (SocketNodelay=Y).
        let corked = n >= CORK_BATCH_MIN && socket.as_ref().is_some_and(|c| c.cork(true));
        for out in &batch.msgs {
            if shared.cut.load(Ordering::Acquire) {
                whole = false;
                break;
            }
            let started = Instant::now();
            if let Err(e) = send_to(out, &session) {
                tracing::warn!("FIX {} to {comp_id} not sent: {e}", out.msg_type);
            }
            if started.elapsed() >= SEND_TIMEOUT {
                // The send may have failed (timed out): this batch is not known delivered.
                whole = false;
                if !shared.cut.swap(true, Ordering::AcqRel) {
                    let _ = stuck.send(comp_id.to_string());
                }
            }
        }
        if let (true, Some(c)) = (corked, &socket) {
            c.cork(false);
        }
        if whole {
            shared.delivered_ts_ns.store(batch.ts_ns, Ordering::Release);
        }
        shared.queued.fetch_sub(n, Ordering::AcqRel);
    }
}
