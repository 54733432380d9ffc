//! Malformed and hostile FIX input on raw sockets (frames built by hand): bad checksums, bad
//! body lengths, missing required tags, bad field values, garbage. The server answers with a
//! session Reject (35=3), drops the frame or disconnects, and keeps serving every other
//! session.
//!
//! QuickFIX keeps its sessions in a process-wide registry, so the servers of this file run one
//! at a time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use cccx_gateway::config::Config;
use cccx_gateway::fix::reports::{now_ns, utc_timestamp};
use cccx_gateway::fix::session_socket_cork;
use cccx_gateway::server::{self, Running};

static ONE_SERVER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

/// A frame: header (35, 49, 56, 34, 52), `body`, then BodyLength and CheckSum computed (or
/// replaced by `body_len` / `sum` when given, to break them).
fn frame(
    msg_type: &str,
    comp_id: &str,
    seq: u64,
    body: &[(u32, &str)],
    body_len: Option<usize>,
    sum: Option<u8>,
) -> Vec<u8> {
    let mut inner =
        format!("35={msg_type}\x0149={comp_id}\x0156=CCCX\x0134={seq}\x0152={}\x01", utc_timestamp(now_ns()));
    for (tag, value) in body {
        inner.push_str(&format!("{tag}={value}\x01"));
    }
    let mut out = format!("8=FIX.4.4\x019={}\x01", body_len.unwrap_or(inner.len())).into_bytes();
    out.extend_from_slice(inner.as_bytes());
    let sum = sum.unwrap_or_else(|| checksum(&out));
    out.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    out
}

type Msg = Vec<(u32, String)>;

fn get(m: &Msg, tag: u32) -> Option<&str> {
    m.iter().find(|(t, _)| *t == tag).map(|(_, v)| v.as_str())
}

struct Raw {
    stream: TcpStream,
    comp_id: String,
    seq: u64,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr, comp_id: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("FIX port accepts");
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Raw { stream, comp_id: comp_id.into(), seq: 0, buf: Vec::new() }
    }

    fn logon(addr: SocketAddr, comp_id: &str, password: &str) -> Raw {
        let mut r = Raw::connect(addr, comp_id);
        r.send("A", &[(98, "0"), (108, "30"), (553, comp_id), (554, password)]);
        let m = r.expect(|m| get(m, 35) == Some("A"));
        assert_eq!(get(&m, 34), Some("1"));
        r
    }

    fn send(&mut self, msg_type: &str, body: &[(u32, &str)]) {
        self.seq += 1;
        let f = frame(msg_type, &self.comp_id, self.seq, body, None, None);
        self.write(&f);
    }

    fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next whole message, if one comes within `wait`; `Err` when the server closed.
    fn read(&mut self, wait: Duration) -> Result<Option<Msg>, ()> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.take_frame() {
                return Ok(Some(m));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return Err(()),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Msg> {
        let end = self.buf.windows(4).position(|w| w == b"\x0110=")? + 8;
        if self.buf.len() < end {
            return None;
        }
        let frame: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8_lossy(&frame);
        Some(
            text.split('\x01')
                .filter_map(|p| p.split_once('='))
                .filter_map(|(t, v)| Some((t.parse().ok()?, v.to_string())))
                .collect(),
        )
    }

    /// The first message matching `pred` within 5 s (others are skipped).
    fn expect(&mut self, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.read(Duration::from_millis(200)) {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(_) => {}
                Err(()) => panic!("{}: the server closed the connection", self.comp_id),
            }
        }
        panic!("{}: no matching message", self.comp_id)
    }

    /// Whether the session still answers a TestRequest (with the next sequence number).
    fn alive(&mut self, id: &str) -> bool {
        self.send("1", &[(112, id)]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.read(Duration::from_millis(200)) {
                Ok(Some(m)) if get(&m, 35) == Some("0") && get(&m, 112) == Some(id) => return true,
                Ok(_) => {}
                Err(()) => return false,
            }
        }
        false
    }

    /// Whether the server closes this connection (or sends only a Logout) within `wait`.
    fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.read(Duration::from_millis(100)).is_err() {
                return true;
            }
        }
        false
    }
}

fn config(data_dir: &Path) -> Config {
    let mut c = Config::embedded();
    c.server.data_dir = data_dir.to_path_buf();
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.fix = "127.0.0.1:0".parse().unwrap();
    c
}

fn password(running: &Running, participant: u32) -> String {
    running.secrets.participants[&participant].fix_password.clone()
}

const ORDER: &[(u32, &str)] = &[
    (11, "O1"),
    (55, "CCC-2026-O"),
    (54, "2"),
    (60, "20260101-00:00:00"),
    (38, "1"),
    (40, "2"),
    (44, "900"),
];

fn order_with(change: (u32, &'static str), drop: Option<u32>) -> Vec<(u32, &'static str)> {
    ORDER
        .iter()
        .copied()
        .filter(|(t, _)| Some(*t) != drop)
        .map(|(t, v)| if t == change.0 { change } else { (t, v) })
        .collect()
}

/// Another participant can still trade: logon, a sell, its ExecutionReport.
fn another_session_trades(addr: SocketAddr, running: &Running) {
    let mut g = Raw::logon(addr, "GREENOFF", &password(running, 4));
    g.send("D", &order_with((11, "OK-1"), None));
    let er = g.expect(|m| get(m, 35) == Some("8"));
    assert_eq!((get(&er, 11), get(&er, 150), get(&er, 39)), (Some("OK-1"), Some("0"), Some("0")), "{er:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rejects_for_bad_messages_and_the_session_goes_on() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    let mut a = Raw::logon(addr, "ALUCO", &password(&running, 1));

    // A bad checksum: the frame is dropped (not counted); the session goes on.
    let f = frame("D", "ALUCO", a.seq + 1, ORDER, None, Some(0));
    a.write(&f);
    assert_eq!(a.read(Duration::from_millis(500)), Ok(None));
    assert!(a.alive("after-checksum"));

    // A required tag missing (Side): session Reject naming it.
    a.send("D", &order_with((11, "O2"), Some(54)));
    let rej = a.expect(|m| get(m, 35) == Some("3"));
    assert_eq!((get(&rej, 371), get(&rej, 373)), (Some("54"), Some("1")), "{rej:?}");

    // A value outside the enumeration (Side Z) and a value in the wrong format (OrderQty abc).
    a.send("D", &order_with((54, "Z"), None));
    let rej = a.expect(|m| get(m, 35) == Some("3"));
    assert_eq!((get(&rej, 371), get(&rej, 373)), (Some("54"), Some("5")), "{rej:?}");
    a.send("D", &order_with((38, "abc"), None));
    let rej = a.expect(|m| get(m, 35) == Some("3"));
    assert_eq!((get(&rej, 371), get(&rej, 373)), (Some("38"), Some("6")), "{rej:?}");

    // A message type that does not exist.
    a.send("ZZ", &[(58, "hello")]);
    let rej = a.expect(|m| matches!(get(m, 35), Some("3" | "j")));
    assert_eq!(get(&rej, 45).map(str::to_string), Some(a.seq.to_string()), "{rej:?}");

    // Valid FIX the gateway refuses: a side it does not trade, a fractional price.
    a.send("D", &order_with((54, "5"), None));
    let er = a.expect(|m| get(m, 35) == Some("8"));
    assert_eq!((get(&er, 150), get(&er, 103)), (Some("8"), Some("11")), "{er:?}");
    a.send("D", &order_with((44, "900.25"), None));
    let er = a.expect(|m| get(m, 35) == Some("8"));
    assert!(get(&er, 58).unwrap_or("").contains("whole number"), "{er:?}");

    assert!(a.alive("after-rejects"));
    another_session_trades(addr, &running);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_broken_frames_do_not_reach_other_sessions() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    let mut a = Raw::logon(addr, "ALUCO", &password(&running, 1));

    // Garbage before any logon: the connection is dropped or ignored.
    let mut junk = Raw::connect(addr, "NOBODY");
    junk.write(b"\x00\xff\xfe GET / HTTP/1.1\r\n\r\n 8=FIX.4.4\x019=zz\x01 \x01\x01\x01");
    let _ = junk.closed_within(Duration::from_millis(500));

    // A logon for a CompID that has no session: refused.
    let mut stranger = Raw::connect(addr, "STRANGER");
    stranger.send("A", &[(98, "0"), (108, "30"), (553, "STRANGER"), (554, "x")]);
    assert!(stranger.closed_within(Duration::from_secs(3)), "an unknown CompID must be disconnected");

    // A wrong password: refused.
    let mut thief = Raw::connect(addr, "CEMCO");
    thief.send("A", &[(98, "0"), (108, "30"), (553, "CEMCO"), (554, "fx_guess")]);
    assert!(thief.closed_within(Duration::from_secs(3)), "a wrong password must be disconnected");

    // A logged-on session sends a body length that is too short, then one that is too long,
    // then garbage: whatever QuickFIX makes of it, the server and the other sessions go on.
    let mut s = Raw::logon(addr, "STEELCO", &password(&running, 3));
    let short = frame("D", "STEELCO", s.seq + 1, ORDER, Some(10), None);
    s.write(&short);
    let long = frame("D", "STEELCO", s.seq + 1, ORDER, Some(5000), None);
    s.write(&long);
    s.write(&[0xff; 2048]);
    let _ = s.closed_within(Duration::from_millis(500));

    assert!(a.alive("after-garbage"));
    another_session_trades(addr, &running);
    // The HTTP side is untouched too.
    let health = reqwest_free_get(running.http, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    running.stop().await.unwrap();
}

fn reqwest_free_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// An uncross reaches market data subscribers as a trade entry with the clearing price and
/// volume and TradeCondition R, and the owners as fills; a DAY order expires with ExecType C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auction_results_and_expiry_over_fix() {
    use cccx_engine::{CommandBody, InstrumentId, ParticipantId, Phase};
    use cccx_gateway::core::Intent;
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    let operator = |body| running.core.call(ParticipantId(0), Intent::Operator(body));
    let auction = InstrumentId(0);
    operator(CommandBody::SetPhase { instrument: auction, phase: Phase::Call }).await.unwrap();

    let mut buyer = Raw::logon(addr, "ALUCO", &password(&running, 1));
    let mut seller = Raw::logon(addr, "STEELCO", &password(&running, 3));
    buyer.send(
        "V",
        &[(262, "md-a"), (263, "1"), (264, "0"), (267, "1"), (269, "2"), (146, "1"), (55, "CCC-2026-C")],
    );
    let w = buyer.expect(|m| get(m, 35) == Some("W"));
    assert_eq!(get(&w, 268), Some("0"), "{w:?}");
    let order = |cl: &'static str, side: &'static str, price: &'static str| {
        vec![
            (11, cl),
            (55, "CCC-2026-C"),
            (54, side),
            (60, "20260101-00:00:00"),
            (38, "40"),
            (40, "2"),
            (44, price),
        ]
    };
    buyer.send("D", &order("AB1", "1", "600"));
    buyer.expect(|m| get(m, 35) == Some("8") && get(m, 150) == Some("0"));
    seller.send("D", &order("AS1", "2", "400"));
    seller.expect(|m| get(m, 35) == Some("8") && get(m, 150) == Some("0"));
    operator(CommandBody::Uncross { instrument: auction }).await.unwrap();

    let x = buyer.expect(|m| get(m, 35) == Some("X") && get(m, 277) == Some("R"));
    assert_eq!((get(&x, 269), get(&x, 270), get(&x, 271)), (Some("2"), Some("500"), Some("40")), "{x:?}");
    let fill = seller.expect(|m| get(m, 35) == Some("8") && get(m, 150) == Some("F"));
    assert_eq!(
        (get(&fill, 31), get(&fill, 32), get(&fill, 39)),
        (Some("500"), Some("40"), Some("2")),
        "{fill:?}"
    );

    // A DAY order in the continuous book expires at the end of the day.
    let mut day = order("DAY1", "1", "300");
    day[1] = (55, "CCC-2026-O");
    day.push((59, "0"));
    buyer.send("D", &day);
    buyer.expect(|m| get(m, 35) == Some("8") && get(m, 11) == Some("DAY1") && get(m, 150) == Some("0"));
    operator(CommandBody::ExpireDay { instrument: InstrumentId(1) }).await.unwrap();
    let expired =
        buyer.expect(|m| get(m, 35) == Some("8") && get(m, 11) == Some("DAY1") && get(m, 150) == Some("C"));
    assert_eq!((get(&expired, 39), get(&expired, 151)), (Some("C"), Some("0")), "{expired:?}");
    running.stop().await.unwrap();
}

/// Orders the participant that never reads sends at most.
const SLOW_READER_ORDERS: u64 = 30_000;

/// A participant that sends orders and never reads its reports: once the socket stops taking
/// them, the server cuts the session off (logs it out and disconnects it) instead of stalling;
/// another session trades meanwhile; when the participant logs on again it gets the status of
/// the orders whose reports it missed (ExecType I).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_reads_is_cut_off_and_resynchronised() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    let mut slow = Raw::logon(addr, "ALUCO", &password(&running, 1));
    slow.stream.set_write_timeout(Some(Duration::from_millis(100))).unwrap();

    // Orders (each answered by an ExecutionReport it never reads) until its socket stops
    // taking them, then heartbeats until the server cuts the connection.
    let started = Instant::now();
    let mut checked_other = false;
    let mut cut = false;
    let mut sending_orders = true;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(60) {
        let f = if sending_orders && n < SLOW_READER_ORDERS {
            n += 1;
            let id = format!("S{n}");
            let mut body: Vec<(u32, &str)> = ORDER.to_vec();
            body[0] = (11, &id);
            frame("D", "ALUCO", slow.seq + 1, &body, None, None)
        } else {
            std::thread::sleep(Duration::from_millis(200));
            frame("0", "ALUCO", slow.seq + 1, &[], None, None)
        };
        slow.seq += 1;
        match slow.stream.write_all(&f) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                // The server stopped reading it (a frame may be cut: the session is lost).
                sending_orders = false;
                if !checked_other {
                    // Meanwhile the exchange serves the others.
                    another_session_trades(addr, &running);
                    checked_other = true;
                }
            }
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the server never cut off a session that does not read ({n} orders sent)");
    if !checked_other {
        another_session_trades(addr, &running);
    }

    // Back, with sequence numbers reset: the orders it missed, as status reports.
    let mut back = back_on(addr, &password(&running, 1));
    let status = back.expect(|m| get(m, 35) == Some("8") && get(m, 150) == Some("I"));
    assert!(get(&status, 11).is_some_and(|c| c.starts_with('S')), "{status:?}");
    assert!(back.alive("after-cut-off"));
    running.stop().await.unwrap();
}

/// A session's socket is corked around a batch of reports (`session_socket.cpp` reaches the
/// connection QuickFIX keeps private): the socket reached is this session's (its peer is the
/// client), uncorking leaves it uncorked, and a burst of orders gets every report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_socket_is_corked_for_a_batch_of_reports_and_uncorked_after() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    assert_eq!(session_socket_cork("ALUCO", None), None, "not logged on yet");
    let mut r = Raw::logon(addr, "ALUCO", &password(&running, 1));
    let port = r.stream.local_addr().unwrap().port();
    assert_eq!(session_socket_cork("ALUCO", None), Some((false, port)));
    assert_eq!(session_socket_cork("ALUCO", Some(true)), Some((true, port)));
    assert_eq!(session_socket_cork("ALUCO", Some(false)), Some((false, port)));
    assert_eq!(session_socket_cork("NOSUCH", Some(true)), None);

    // 300 orders in one write: their reports go out in batches, corked.
    let ids: Vec<String> = (0..300).map(|i| format!("B{i}")).collect();
    let mut burst = Vec::new();
    for id in &ids {
        r.seq += 1;
        let mut body: Vec<(u32, &str)> = ORDER.to_vec();
        body[0] = (11, id);
        burst.extend(frame("D", "ALUCO", r.seq, &body, None, None));
    }
    r.write(&burst);
    let mut unanswered: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !unanswered.is_empty() && Instant::now() < deadline {
        if let Ok(Some(m)) = r.read(Duration::from_millis(200)) {
            if get(&m, 35) == Some("8") {
                unanswered.remove(get(&m, 11).unwrap_or(""));
            }
        }
    }
    assert!(unanswered.is_empty(), "{} orders without a report", unanswered.len());
    // The last batch's uncork follows its last send at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    while session_socket_cork("ALUCO", None) != Some((false, port)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(session_socket_cork("ALUCO", None), Some((false, port)));
    assert!(r.alive("after-the-burst"));
    running.stop().await.unwrap();
}

/// Logs ALUCO on again with sequence numbers reset (retrying while the server is still
/// disconnecting the old connection).
fn back_on(addr: SocketAddr, password: &str) -> Raw {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut r = Raw::connect(addr, "ALUCO");
        r.send("A", &[(98, "0"), (108, "30"), (141, "Y"), (553, "ALUCO"), (554, password)]);
        let wait = Instant::now() + Duration::from_secs(3);
        while Instant::now() < wait {
            match r.read(Duration::from_millis(200)) {
                Ok(Some(m)) if get(&m, 35) == Some("A") => return r,
                Ok(_) => {}
                Err(()) => break,
            }
        }
        assert!(Instant::now() < deadline, "ALUCO cannot log on again after its cut-off");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Trading phases over FIX: a TradingSessionStatusRequest is answered per instrument, and a
/// subscriber hears of every phase change (unsolicited); an unknown session is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_changes_reach_trading_session_status_subscribers() {
    use cccx_engine::{CommandBody, InstrumentId, ParticipantId, Phase};
    use cccx_gateway::core::Intent;
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    let symbol = running.core.instruments()[0].symbol.clone();
    let mut a = Raw::logon(addr, "ALUCO", &password(&running, 1));

    a.send("g", &[(335, "st-1"), (336, &symbol), (263, "1")]);
    let h = a.expect(|m| get(m, 35) == Some("h"));
    assert_eq!(
        (get(&h, 335), get(&h, 336), get(&h, 325)),
        (Some("st-1"), Some(symbol.as_str()), Some("N")),
        "{h:?}"
    );
    let before = get(&h, 625).unwrap_or("").to_string();

    let phase = if before == "call" { Phase::Continuous } else { Phase::Call };
    let body = CommandBody::SetPhase { instrument: InstrumentId(0), phase };
    running.core.call(ParticipantId(0), Intent::Operator(body)).await.unwrap();
    let h = a.expect(|m| get(m, 35) == Some("h") && get(m, 325) == Some("Y"));
    let (sub_id, status) = if phase == Phase::Call { ("call", "4") } else { ("continuous", "2") };
    assert_eq!(
        (get(&h, 336), get(&h, 625), get(&h, 340)),
        (Some(symbol.as_str()), Some(sub_id), Some(status)),
        "{h:?}"
    );

    a.send("g", &[(335, "st-2"), (336, "NO-SUCH"), (263, "0")]);
    let h = a.expect(|m| get(m, 35) == Some("h") && get(m, 335) == Some("st-2"));
    assert_eq!((get(&h, 340), get(&h, 567)), (Some("6"), Some("1")), "{h:?}");
    assert!(a.alive("after-status"));
    running.stop().await.unwrap();
}

/// QuickFIX binds the FIX port on every interface; the configured address (127.0.0.1 here) is
/// the only one that answers (Linux: a socket filter on the listening socket).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fix_port_answers_only_on_the_configured_address() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(dir.path())).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    // This machine's address on its default route (no packet is sent by a UDP connect).
    let other = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    let timeout = Duration::from_millis(1500);
    assert!(std::net::TcpStream::connect_timeout(&addr, timeout).is_ok(), "127.0.0.1 answers");
    another_session_trades(addr, &running);
    match other {
        Some(ip) => {
            let elsewhere = SocketAddr::new(ip, addr.port());
            let connected = std::net::TcpStream::connect_timeout(&elsewhere, timeout);
            assert!(connected.is_err(), "the FIX port answered on {elsewhere}");
        }
        None => eprintln!("no non-loopback IPv4 address here: only loopback checked"),
    }
    running.stop().await.unwrap();
}

/// A deployment that ran with QuickFIX's FileStore: on the first start with the memory-mapped
/// store, each session takes over the sequence numbers of its FileStore files, so a client
/// logging on goes on from where it was, and the store file records them from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequence_numbers_of_file_store_files_are_taken_over() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("fix").join("store");
    let (running, mut g) = log_on_over_file_store(dir.path(), "", "").await;
    g.send("D", &order_with((11, "TAKEN-1"), None));
    let er = g.expect(|m| get(m, 35) == Some("8"));
    let sent: u64 = get(&er, 34).unwrap().parse().unwrap();
    assert!(sent >= 8, "{er:?}");
    drop(g);
    running.stop().await.unwrap();
    let recorded = cccx_gateway::fix::store::stored_seqnums(&store.join("FIX.4.4-CCCX-GREENOFF.mstore"));
    let (sender, target) = recorded.expect("the session's store file");
    assert!(sender > sent && target >= 7, "{sender} {target}");
}

/// A message that QuickFIX's file store holds is taken over with the sequence numbers: a
/// resend request for it gets it again, marked as a possible duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_file_store_files_is_resent_after_the_take_over() {
    let _one = ONE_SERVER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // The ExecutionReport the exchange sent as number 6, as the file store keeps it: the raw
    // message in the body file, "sequence,offset,size " in the header file.
    let inner = format!(
        "35=8\x0134=6\x0149=CCCX\x0152={}\x0156=GREENOFF\x016=0\x0111=KEPT-1\x0114=0\x0117=E77\x01\
         37=77\x0138=5\x0139=0\x0144=1000\x0154=1\x0155=CCC-2026-O\x01150=0\x01151=5\x01",
        utc_timestamp(now_ns())
    );
    let mut stored = format!("8=FIX.4.4\x019={}\x01{inner}", inner.len());
    stored.push_str(&format!("10={:03}\x01", checksum(stored.as_bytes())));
    let header = format!("6,0,{} ", stored.len());
    let (running, mut g) = log_on_over_file_store(dir.path(), &stored, &header).await;
    // ResendRequest for number 6 alone.
    g.send("2", &[(7, "6"), (16, "6")]);
    let resent = g.expect(|m| get(m, 35) == Some("8") && get(m, 43) == Some("Y"));
    assert_eq!(
        (get(&resent, 34), get(&resent, 11), get(&resent, 37)),
        (Some("6"), Some("KEPT-1"), Some("77"))
    );
    assert!(get(&resent, 122).is_some(), "OrigSendingTime on a resent message: {resent:?}");
    drop(g);
    running.stop().await.unwrap();
}

/// Writes GREENOFF's QuickFIX file store into a fresh data directory (next to send: 7; next
/// expected from the client: 5, in QuickFIX's 64-bit format; created today, because QuickFIX
/// resets a session created in an earlier period when it starts; `body` and `header` as given),
/// starts the server on it and logs GREENOFF on with sequence number 5, checking that the
/// Logon answer is number 7.
async fn log_on_over_file_store(data_dir: &Path, body: &str, header: &str) -> (Running, Raw) {
    let store = data_dir.join("fix").join("store");
    std::fs::create_dir_all(&store).unwrap();
    let prefix = store.join("FIX.4.4-CCCX-GREENOFF.");
    let file =
        |suffix: &str, text: &str| std::fs::write(format!("{}{suffix}", prefix.display()), text).unwrap();
    file("seqnums", "00000000000000000007 : 00000000000000000005");
    file("session", &utc_timestamp(now_ns())[..17]);
    file("body", body);
    file("header", header);
    let running = server::start(config(data_dir)).await.unwrap();
    let addr = running.fix.expect("FIX runs");
    let mut g = Raw::connect(addr, "GREENOFF");
    g.seq = 4;
    g.send("A", &[(98, "0"), (108, "30"), (553, "GREENOFF"), (554, &password(&running, 4))]);
    let logon = g.expect(|m| get(m, 35) == Some("A"));
    assert_eq!(get(&logon, 34), Some("7"), "{logon:?}");
    (running, g)
}
