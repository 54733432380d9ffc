//! The QuickFIX side: the application callbacks (logon check, hand-off of application
//! messages), the log bridge to `tracing`, the acceptor's own thread, and sending.
//!
//! Callbacks run on QuickFIX's C++ threads (one per connection with the multi-threaded socket
//! server). They never block: an application message is copied out as text and handed to the
//! router over a bounded channel with `try_send`; when the router is saturated the session gets
//! a BusinessMessageReject (380=4, application not available) at once, sent from the callback's
//! own thread (QuickFIX's session lock is re-entrant there).

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use quickfix::{
    send_to_target, Acceptor, Application, ApplicationCallback, ConnectionHandler, FieldMap,
    FixSocketServerKind, Group, LogCallback, LogFactory, Message, MsgFromAdminError, MsgFromAppError,
    QuickFixError, Session, SessionId, SessionSettings,
};

use super::reports::business_reject;
use super::store::MmapStoreFactory;
use super::tags::*;
use super::wire::OutMsg;
use super::{BEGIN_STRING, EXCHANGE_COMP_ID};
use crate::core::Core;
use crate::metrics::Metrics;
use crate::secrets::constant_time_eq;
use cccx_engine::ParticipantId;

/// What the callbacks hand to the router: plain data only (QuickFIX objects are not `Send`).
#[derive(Debug)]
pub(crate) enum Inbound {
    /// An application message that passed QuickFIX's session and data dictionary checks (never
    /// a NewOrderSingle: the callback enters those itself, [`super::router::enter_new_order`]).
    App {
        /// The counterparty's CompID.
        comp_id: String,
        /// The message as FIX text.
        raw: String,
    },
    /// A session logged on.
    Up(String),
    /// A session logged out or disconnected.
    Down(String),
}

/// Sessions the router is logging out because they stopped reading: the logout callback
/// enables them again, so that they can log on at once.
pub(crate) type CutOff = Arc<Mutex<HashSet<String>>>;

/// Locks a mutex, poisoned or not (what it guards stays consistent: single inserts and
/// removals).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The application callbacks.
pub(crate) struct App {
    pub(crate) cut_off: CutOff,
    pub(crate) tx: Sender<Inbound>,
    /// Logons and logouts (unbounded: a few per session).
    pub(crate) events: Sender<Inbound>,
    /// The engine, for the new orders the callbacks enter themselves.
    pub(crate) core: Core,
    /// CompID -> participant.
    pub(crate) participants: HashMap<String, ParticipantId>,
    /// CompID -> FIX password.
    pub(crate) passwords: HashMap<String, String>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) logged_on: AtomicU64,
}

fn target_of(session: &SessionId) -> String {
    session.get_target_comp_id().unwrap_or_default()
}

impl ApplicationCallback for App {
    fn on_logon(&self, session: &SessionId) {
        let n = self.logged_on.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.fix_sessions.set(n);
        tracing::info!("FIX session {} logged on", session.to_repr());
        // On the unbounded channel: the router must hear of the logon (or the session would
        // get none of its reports), and this thread, which holds the session's lock, must not
        // wait for the router.
        let _ = self.events.send(Inbound::Up(target_of(session)));
    }

    fn on_logout(&self, session: &SessionId) {
        let n = self.logged_on.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.metrics.fix_sessions.set(n);
        tracing::info!("FIX session {} logged out", session.to_repr());
        let comp_id = target_of(session);
        if lock(&self.cut_off).remove(&comp_id) {
            // SAFETY: the session is alive: QuickFIX is calling back from inside it.
            match unsafe { Session::lookup(session) }.and_then(|mut s| s.logon()) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!("FIX session {comp_id} cannot be enabled again after its cut-off: {e}")
                }
            }
        }
        let _ = self.events.send(Inbound::Down(comp_id));
    }

    fn on_msg_from_admin(&self, msg: &Message, session: &SessionId) -> Result<(), MsgFromAdminError> {
        if msg.with_header(|h| h.get_field(MSG_TYPE)).as_deref() != Some("A") {
            return Ok(());
        }
        let comp_id = target_of(session);
        let user_ok = msg.get_field(USERNAME).is_some_and(|u| u == comp_id);
        let pass_ok = match (self.passwords.get(&comp_id), msg.get_field(PASSWORD)) {
            (Some(expected), Some(given)) => constant_time_eq(expected, &given),
            _ => false,
        };
        if user_ok && pass_ok {
            Ok(())
        } else {
            tracing::warn!("FIX logon refused for {comp_id}: wrong Username (553) or Password (554)");
            Err(MsgFromAdminError::RejectLogon)
        }
    }

    fn on_msg_from_app(&self, msg: &Message, session: &SessionId) -> Result<(), MsgFromAppError> {
        self.metrics.fix_messages.inc();
        let comp_id = target_of(session);
        let raw = match msg.to_fix_string() {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!("FIX message from {comp_id} cannot be read back: {e}");
                return Ok(());
            }
        };
        // New orders go to the engine from here (one thread hop less); the rest through the
        // router, which keeps the state they need.
        let fields = super::wire::Fields::parse(&raw);
        if fields.get(u(MSG_TYPE)) == Some("D") {
            if let Some(&participant) = self.participants.get(&comp_id) {
                if let Some(reject) =
                    super::router::enter_new_order(&self.core, &comp_id, participant, &fields)
                {
                    if let Err(e) = send(&reject, &comp_id) {
                        tracing::warn!("FIX order reject to {comp_id}: {e}");
                    }
                }
            }
            return Ok(());
        }
        drop(fields);
        match self.tx.try_send(Inbound::App { comp_id, raw }) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(Inbound::App { comp_id, raw })
                | TrySendError::Disconnected(Inbound::App { comp_id, raw }),
            ) => {
                let f = super::wire::Fields::parse(&raw);
                let reject = business_reject(
                    f.get(u(MSG_SEQ_NUM)),
                    f.get(u(MSG_TYPE)).unwrap_or("?"),
                    "4",
                    "the exchange is busy: try again",
                );
                if let Err(e) = send(&reject, &comp_id) {
                    tracing::warn!("FIX busy reject to {comp_id}: {e}");
                }
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}

extern "C" {
    fn cccx_fix_session(begin: *const c_char, sender: *const c_char, target: *const c_char) -> *mut c_void;
    fn cccx_fix_cork(session: *mut c_void, on: i32) -> i32;
    fn cccx_fix_cork_state(session: *mut c_void, peer_port: *mut i32) -> i32;
}

/// A QuickFIX session's socket, for what QuickFIX's API does not offer (`session_socket.cpp`):
/// TCP_CORK around a batch (what QuickFIX then sends leaves in full segments, the rest at the
/// uncork).
pub(crate) struct SessionSocket(*mut c_void);

// SAFETY: the pointer is a QuickFIX `Session`, which lives as long as the acceptor; every use
// goes through `session_socket.cpp`, which takes the session's own lock.
unsafe impl Send for SessionSocket {}

impl SessionSocket {
    /// For the participant's session; `None` when QuickFIX has no such session. It must not be
    /// used after the acceptor has stopped (the session is QuickFIX's).
    pub(crate) fn new(comp_id: &str) -> Option<SessionSocket> {
        let (begin, sender) = (CString::new(BEGIN_STRING).ok()?, CString::new(EXCHANGE_COMP_ID).ok()?);
        let target = CString::new(comp_id).ok()?;
        // SAFETY: three valid C strings, which the call only reads.
        let session = unsafe { cccx_fix_session(begin.as_ptr(), sender.as_ptr(), target.as_ptr()) };
        (!session.is_null()).then_some(SessionSocket(session))
    }

    /// Corks (`on`) or uncorks the session's socket; false when it could not be done (the
    /// session has no connection: then there is nothing to hold back either).
    pub(crate) fn cork(&self, on: bool) -> bool {
        // SAFETY: a session of the running acceptor (see `new`); the call takes the session's
        // own lock.
        unsafe { cccx_fix_cork(self.0, i32::from(on)) == 0 }
    }

    /// Whether the session's socket is corked, and its peer's port; `None` when the session is
    /// not logged on.
    pub(crate) fn state(&self) -> Option<(bool, u16)> {
        let mut port = 0i32;
        // SAFETY: as in `cork`; `port` outlives the call.
        let corked = unsafe { cccx_fix_cork_state(self.0, &mut port) };
        (corked >= 0).then(|| (corked == 1, u16::try_from(port).unwrap_or(0)))
    }
}

/// Sends an outgoing message to a participant's session (stored for resend when it is not
/// logged on).
pub(crate) fn send(out: &OutMsg, comp_id: &str) -> Result<(), QuickFixError> {
    send_to(out, &session_id(comp_id)?)
}

/// The QuickFIX session id of a participant's session.
pub(crate) fn session_id(comp_id: &str) -> Result<SessionId, QuickFixError> {
    SessionId::try_new(BEGIN_STRING, EXCHANGE_COMP_ID, comp_id, "")
}

/// Sends an outgoing message to a session (stored for resend when it is not logged on).
pub(crate) fn send_to(out: &OutMsg, session: &SessionId) -> Result<(), QuickFixError> {
    send_to_target(to_message(out)?, session)
}

/// The QuickFIX message of an outgoing message. Without repeating groups, QuickFIX parses the
/// body text in one call (no data dictionary: it keeps the fields in tag order, as it does
/// for fields set one by one); with groups, fields and groups are set one by one, so that each
/// group entry keeps the dictionary's order.
fn to_message(out: &OutMsg) -> Result<Message, QuickFixError> {
    if out.groups.is_empty() {
        let mut text = String::with_capacity(out.body().len() + 8);
        text.push_str("35=");
        text.push_str(out.msg_type);
        text.push(super::wire::SOH);
        text.push_str(out.body());
        return Message::try_from_text(&text);
    }
    to_message_by_fields(out)
}

/// The QuickFIX message of an outgoing message, field by field.
fn to_message_by_fields(out: &OutMsg) -> Result<Message, QuickFixError> {
    let mut m = Message::new();
    m.with_header_mut(|h| h.set_field(MSG_TYPE, out.msg_type))?;
    for (tag, value) in out.fields() {
        m.set_field(tag, value)?;
    }
    for g in &out.groups {
        for entry in &g.entries {
            let mut group = Group::try_with_orders(g.count_tag, g.delimiter, g.order)?;
            for (tag, value) in entry {
                group.set_field(*tag, value.as_str())?;
            }
            m.add_group(&group)?;
        }
    }
    Ok(m)
}

/// QuickFIX's log, into `tracing` (messages at trace level, session events at info).
pub(crate) struct TracingLog;

impl LogCallback for TracingLog {
    fn on_incoming(&self, session: Option<&SessionId>, msg: &str) {
        tracing::trace!(target: "cccx::fix", "in  {:?}: {}", session.map(SessionId::to_repr), redacted(msg));
    }
    fn on_outgoing(&self, session: Option<&SessionId>, msg: &str) {
        tracing::trace!(target: "cccx::fix", "out {:?}: {}", session.map(SessionId::to_repr), redacted(msg));
    }
    fn on_event(&self, session: Option<&SessionId>, msg: &str) {
        tracing::info!(target: "cccx::fix", "{:?}: {msg}", session.map(SessionId::to_repr));
    }
}

/// A message for the log: SOH shown as `|`, the Password (554) hidden.
fn redacted(msg: &str) -> String {
    msg.split('\x01').map(|f| if f.starts_with("554=") { "554=***" } else { f }).collect::<Vec<_>>().join("|")
}

/// The thread that owns the QuickFIX acceptor (it borrows the callbacks, the store and the log
/// factory, so they all live on one thread's stack).
pub(crate) struct AcceptorThread {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl AcceptorThread {
    /// Starts the acceptor with a settings file and the sessions' message stores under
    /// `store_dir`; returns once it listens (or failed to).
    pub(crate) fn spawn(
        settings_path: PathBuf,
        store_dir: PathBuf,
        app: App,
    ) -> Result<AcceptorThread, String> {
        let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("cccx-fix-acceptor".into())
            .spawn(move || {
                let run = || -> Result<(), QuickFixError> {
                    let settings = SessionSettings::try_from_path(&settings_path)?;
                    let store = MmapStoreFactory::new(&store_dir).map_err(QuickFixError::invalid_argument)?;
                    let log = TracingLog;
                    let log_factory = LogFactory::try_new(&log)?;
                    let application = Application::try_new(&app)?;
                    let mut acceptor = Acceptor::try_new(
                        &settings,
                        &application,
                        &store,
                        &log_factory,
                        FixSocketServerKind::MultiThreaded,
                    )?;
                    acceptor.start()?;
                    let _ = started_tx.send(Ok(()));
                    // Until the server stops (or drops the sender).
                    let _ = stop_rx.recv();
                    // Logs out every session (waits for their Logout answers), closes sockets.
                    acceptor.stop()
                };
                match run() {
                    Ok(()) => {}
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        tracing::error!("FIX acceptor: {e}");
                    }
                }
            })
            .map_err(|e| format!("cannot start the FIX acceptor thread: {e}"))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(AcceptorThread { stop, handle }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err("the FIX acceptor thread ended at start".into())
            }
        }
    }

    /// Logs out the sessions, stops listening and waits for the thread.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::reports;

    #[test]
    fn a_message_from_text_is_the_message_set_field_by_field() {
        let business = reports::business_reject(Some("12"), "Z", "3", "message type Z is not supported");
        let mut reject = reports::new_reject(reports::NewReject {
            exec_id: "E-1".into(),
            cl_ord_id: "C1",
            symbol: "CCC-2026-O",
            side: "2",
            qty: "5",
            reason: "99",
            text: "Price 101.5 must be a whole number".into(),
        });
        reject.replace(EXEC_TYPE, "I");
        for out in [business, reject] {
            let text = to_message(&out).unwrap().to_fix_string().unwrap();
            let fields = to_message_by_fields(&out).unwrap().to_fix_string().unwrap();
            assert_eq!(text, fields);
            assert!(text.contains(&format!("\x0135={}\x01", out.msg_type)), "{text}");
            for (tag, value) in out.fields() {
                assert!(text.contains(&format!("\x01{tag}={value}\x01")), "{tag} in {text}");
            }
        }
    }

    #[test]
    fn passwords_stay_out_of_the_log() {
        assert_eq!(
            super::redacted("35=A\x01553=ALUCO\x01554=fx_secret\x0110=1\x01"),
            "35=A|553=ALUCO|554=***|10=1|"
        );
    }
}
