//! The FIX 4.4 acceptor: order routing and market data for participants' trading systems.
//!
//! - Session layer: QuickFIX (C++) through the `quickfix` crate. One session per participant:
//!   SenderCompID [`EXCHANGE_COMP_ID`], TargetCompID the participant's `comp_id`. Logon needs
//!   Username (553) = the CompID and Password (554) = the participant's generated
//!   `fix_password` ([`crate::secrets`]). Heartbeats, test requests, resend requests, gap fills,
//!   sequence resets and logout are QuickFIX's. Messages are stored ([`store`]: one
//!   memory-mapped file per session under `<data_dir>/fix/store`, which takes over QuickFIX
//!   `FileStore` files there on first start) so sequence numbers and resends survive restarts
//!   (a killed process too; not a power cut, as with QuickFIX's own store); incoming
//!   messages are validated against the FIX 4.4 data dictionary (vendored, written to
//!   `<data_dir>/fix/FIX44.xml` at start): a malformed message gets a session Reject (35=3)
//!   from QuickFIX, a garbled frame is dropped or disconnected, and neither touches another
//!   session.
//! - Known limits of the session layer: QuickFIX's threaded acceptor binds the wildcard
//!   address whatever `SocketAcceptHost` says; on Linux a socket filter on the listening socket
//!   then drops every packet not addressed to the configured IPv4 address (`listener.rs`), so
//!   the port answers only there (elsewhere, or for IPv6, firewall it); and the store keeps
//!   every message ever sent, so it grows without bound
//!   (no rotation yet). To start a store afresh (a new trading day, say), stop the server,
//!   move `<data_dir>/fix/store` away, and have the participants log on with
//!   ResetSeqNumFlag (141=Y); the messages of the old store can then no longer be resent.
//! - Application layer: [`router`] (NewOrderSingle D, OrderCancelRequest F,
//!   OrderCancelReplaceRequest G, OrderMassCancelRequest q → r, OrderStatusRequest H,
//!   MarketDataRequest V → W/X, TradingSessionStatusRequest g → h and phase changes as h,
//!   [`status`]; anything else gets BusinessMessageReject j), [`reports`]
//!   (ExecutionReport 8, OrderCancelReject 9), [`market`] (snapshots and increments).
//! - Threads: QuickFIX's (callbacks, `session`: one per connection, which also parses each
//!   NewOrderSingle and puts it on the engine's queue itself); the acceptor's owner thread;
//!   the router thread, fed directly by the engine thread's release step (a bounded record tap,
//!   [`crate::core::Core::tap`], that never blocks the engine); one sender thread per session
//!   ([`outbound`]: a bounded queue; a participant that stops reading is cut off, logged out
//!   and resynchronised when it logs on again). A sender thread corks its session's socket
//!   around a batch of messages (`session_socket.cpp`), so that they leave in full TCP segments.
//!
//! Conventions a FIX desk needs to know:
//! - OrderID (37) is the exchange's order id; ClOrdID (11) is kept as the order's client id
//!   and a replace renames the order to the new ClOrdID. F, G and H find the order by OrderID
//!   when given, else by OrigClOrdID (41) (H: by ClOrdID); only the participant's own orders.
//! - Prices are whole numbers of the instrument's price unit: `101` or `101.0`, never `101.5`
//!   (rejected with Text saying so). Quantities are whole certificates.
//! - OrdType 1 market, 2 limit. TimeInForce 0 DAY, 1 GTC, 3 IOC, 4 FOK; absent: GTC for a
//!   limit order (auction sessions span days), IOC for a market order. ExecInst 6
//!   (participate, don't initiate) is post-only.
//! - A replace's OrderQty (38) is the new total quantity; the engine gets OrderQty - CumQty as
//!   the new open quantity (refused when not positive). No Price keeps the current one.
//! - Rejects: OrdRejReason (103) or CxlRejReason (102), mapped from the engine's codes, and
//!   Text (58) `<engine text> (cccx code <n>)`. A full engine queue rejects at once with Text
//!   saying the exchange is busy.
//! - Reports for every order of a participant go to its session once it has logged on after
//!   the server started, whatever channel (FIX or REST) entered the order; while the session is
//!   away they are stored and delivered by resend when it reconnects.
//! - A session that stops reading is cut off: once [`outbound::OUTBOUND_MESSAGES_MAX`] messages
//!   wait for its socket, or one send has been blocked for [`outbound::SEND_TIMEOUT`], the
//!   exchange drops what waits, logs the session out and disconnects it. Those reports are not
//!   stored for resend; instead, when the session logs on again, it gets an unsolicited status
//!   ExecutionReport (ExecType I) for each of its orders that changed since the last report it
//!   was sent, and its market data subscriptions have ended (subscribe again).

mod listener;
pub mod market;
pub mod outbound;
pub mod reports;
pub mod router;
mod session;
pub mod status;
pub mod store;
pub mod tags;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;

use cccx_engine::ParticipantId;

use crate::config::Config;
use crate::core::Core;
use crate::secrets::Secrets;
use router::Router;
use session::{AcceptorThread, App};

/// The exchange's CompID (SenderCompID of every session).
pub const EXCHANGE_COMP_ID: &str = "CCCX";
/// The FIX version.
pub const BEGIN_STRING: &str = "FIX.4.4";
/// The FIX 4.4 data dictionary (QuickFIX's), vendored.
pub const FIX44_XML: &str = include_str!("../../fix/FIX44.xml");
/// The FIX directory inside the data directory.
pub const FIX_DIR: &str = "fix";
/// Application messages waiting for the router before sessions are told the exchange is busy.
pub const INBOUND_CAPACITY: usize = 16_384;
/// Published records waiting for the router before it counts as lagging (the engine thread
/// then drops them and the router resynchronises the sessions).
pub const FEED_CAPACITY: usize = 65_536;
/// The send buffer asked for on the FIX listening socket (`SocketSendBufferSize`; the kernel
/// caps it at `net.core.wmem_max`). QuickFIX copies the listening socket's buffer sizes onto
/// every connection it accepts, which also turns off the kernel's autotuning of them: left to
/// its default, a connection's send buffer was 32 KiB, and a batch of reports bigger than that
/// waited for the participant's acknowledgement, which a receiver that has nothing to send
/// delays by 40 ms.
pub const SEND_BUFFER_BYTES: usize = 1 << 20;
/// Heartbeat interval the acceptor proposes (the initiator's Logon sets the real one).
pub const HEARTBEAT_S: u32 = 30;

/// The QuickFIX settings for the participants of `config`, listening on `addr`, with stores
/// and the data dictionary under `fix_dir`.
pub fn settings_text(config: &Config, addr: SocketAddr, fix_dir: &Path) -> String {
    let mut s = format!(
        "# Generated by cccx at start from the participant configuration: do not edit.\n\
         [DEFAULT]\n\
         ConnectionType=acceptor\n\
         SocketAcceptHost={ip}\n\
         SocketAcceptPort={port}\n\
         SocketReuseAddress=Y\n\
         SocketNodelay=Y\n\
         SocketSendBufferSize={SEND_BUFFER_BYTES}\n\
         FileStorePath={store}\n\
         PersistMessages=Y\n\
         NonStopSession=Y\n\
         HeartBtInt={HEARTBEAT_S}\n\
         ResetOnLogon=N\n\
         ResetOnLogout=N\n\
         ResetOnDisconnect=N\n\
         UseDataDictionary=Y\n\
         DataDictionary={dict}\n\
         ValidateUserDefinedFields=Y\n\
         AllowUnknownMsgFields=N\n\
         CheckLatency=N\n",
        ip = addr.ip(),
        port = addr.port(),
        store = store_dir(fix_dir).display(),
        dict = fix_dir.join("FIX44.xml").display(),
    );
    for p in &config.participants {
        s.push_str(&format!(
            "\n[SESSION]\nBeginString={BEGIN_STRING}\nSenderCompID={EXCHANGE_COMP_ID}\nTargetCompID={}\n",
            p.comp_id
        ));
    }
    s
}

/// A running FIX acceptor.
pub struct FixAcceptor {
    /// The address it listens on.
    pub addr: SocketAddr,
    acceptor: AcceptorThread,
    router: JoinHandle<()>,
    stop_router: crossbeam_channel::Sender<()>,
}

/// A free TCP port on `ip` (QuickFIX cannot report the port it bound, so port 0 in the
/// configuration is resolved here).
/// Where the sessions' message stores live (`FileStorePath` of the settings).
fn store_dir(fix_dir: &Path) -> PathBuf {
    fix_dir.join("store")
}

fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = TcpListener::bind(addr).map_err(|e| format!("cannot find a free FIX port on {addr}: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

impl FixAcceptor {
    /// Writes the settings and the data dictionary under `<data_dir>/fix`, starts the router
    /// and the acceptor.
    pub fn start(config: &Config, secrets: &Secrets, core: Core) -> Result<FixAcceptor, String> {
        let addr = resolve_port(config.server.fix)?;
        let fix_dir: PathBuf = config.server.data_dir.join(FIX_DIR);
        std::fs::create_dir_all(store_dir(&fix_dir)).map_err(|e| format!("{}: {e}", fix_dir.display()))?;
        let write = |name: &str, text: &str| {
            std::fs::write(fix_dir.join(name), text)
                .map_err(|e| format!("{}: {e}", fix_dir.join(name).display()))
        };
        write("FIX44.xml", FIX44_XML)?;
        let settings_path = fix_dir.join("acceptor.cfg");
        write("acceptor.cfg", &settings_text(config, addr, &fix_dir))?;

        let comp_ids: HashMap<u32, String> =
            config.participants.iter().map(|p| (p.id, p.comp_id.clone())).collect();
        let passwords = config
            .participants
            .iter()
            .filter_map(|p| Some((p.comp_id.clone(), secrets.participants.get(&p.id)?.fix_password.clone())))
            .collect();
        let (inbound_tx, inbound_rx) = crossbeam_channel::bounded(INBOUND_CAPACITY);
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (stop_router, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let cut_off = session::CutOff::default();

        // Tap the engine before anything can trade through FIX, so no report is missed.
        let feed = core.tap(FEED_CAPACITY).map_err(|e| format!("FIX router: {e}"))?;
        let symbols = core.instruments().iter().map(|s| s.symbol.clone()).collect();
        let router = Router {
            core: core.clone(),
            comp_ids,
            active: HashSet::new(),
            pending: HashMap::new(),
            md: market::MarketData::new(symbols),
            status_subs: status::StatusSubscriptions::default(),
            last_ts_ns: 0,
            out: outbound::Outbound::new(),
            cut: HashSet::new(),
            cut_off: cut_off.clone(),
        };
        let router = std::thread::Builder::new()
            .name("cccx-fix-router".into())
            .spawn(move || router.run(inbound_rx, events_rx, feed, stop_rx))
            .map_err(|e| format!("cannot start the FIX router thread: {e}"))?;
        let app = App {
            cut_off,
            tx: inbound_tx,
            events: events_tx,
            core: core.clone(),
            participants: config
                .participants
                .iter()
                .map(|p| (p.comp_id.clone(), ParticipantId(p.id)))
                .collect(),
            passwords,
            metrics: core.metrics().clone(),
            logged_on: AtomicU64::new(0),
        };
        let acceptor = match AcceptorThread::spawn(settings_path, store_dir(&fix_dir), app) {
            Ok(a) => a,
            Err(e) => {
                let _ = stop_router.send(());
                let _ = router.join();
                return Err(format!("FIX acceptor on {addr}: {e}"));
            }
        };
        let setup = listener::set_up(addr);
        if !setup.send_timeout {
            tracing::warn!(
                "FIX: cannot set a send timeout on the listening socket {addr}: a participant that stops reading is cut off only when its outbound queue fills"
            );
        }
        if !setup.address_only {
            tracing::warn!(
                "FIX: QuickFIX listens on every interface and the packets to other addresses than {} cannot be filtered here: firewall port {}",
                addr.ip(),
                addr.port()
            );
        }
        Ok(FixAcceptor { addr, acceptor, router, stop_router })
    }

    /// Stops the router (what it has queued is sent first), then stops accepting and logs out
    /// every session (QuickFIX waits for their Logout answers, about a second). Blocking.
    pub fn stop(self) {
        let _ = self.stop_router.send(());
        let _ = self.router.join();
        self.acceptor.stop();
    }
}

/// For tests: corks (`Some(true)`), uncorks (`Some(false)`) or leaves (`None`) the socket of a
/// participant's logged-on session as the sender threads do, then tells whether it is corked
/// and the port of its peer (which shows the socket is that session's). `None` when the
/// session is not logged on or unknown. Only while the acceptor runs.
#[doc(hidden)]
pub fn session_socket_cork(comp_id: &str, set: Option<bool>) -> Option<(bool, u16)> {
    let socket = session::SessionSocket::new(comp_id)?;
    if let Some(on) = set {
        socket.cork(on);
    }
    socket.state()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_participant() {
        let config = Config::embedded();
        let text = settings_text(&config, "127.0.0.1:9878".parse().unwrap(), Path::new("data/fix"));
        assert_eq!(text.matches("[SESSION]").count(), config.participants.len());
        assert!(text.contains("TargetCompID=ALUCO\n"));
        assert!(text.contains("SenderCompID=CCCX\n"));
        assert!(text.contains("FileStorePath=data/fix/store\n"));
        assert!(text.contains("PersistMessages=Y\n"));
        assert!(FIX44_XML.contains("major='4' minor='4'"));
    }
}
