//! Load generator for the FIX acceptor: starts `cccx serve`'s server in-process on 127.0.0.1
//! with a fresh data directory, logs on several FIX sessions (one per participant) with a
//! minimal FIX 4.4 framing (`cccx::fixclient`, plain TCP), and sends NewOrderSingle messages
//! open loop at a chosen total rate (or closed loop), then prints throughput and
//! order-to-acknowledgement latency percentiles (hdrhistogram): from the moment an order was
//! due to the first ExecutionReport for it (new, fill or reject).
//!
//! ```text
//! cargo bench --bench fix_load -- [--sessions N] [--rate ORDERS_PER_S] [--seconds S]
//!                                 [--durability none|batch|every] [--window W]
//!                                 [--flow ioc|trading] [--probe]
//! ```
//!
//! `--flow ioc` (the default): immediate-or-cancel orders that never trade (New and Cancelled
//! reports); `--flow trading`: day orders at crossing prices that trade and rest (see [`Flow`]).
//!
//! `--rate 0` (the default) is closed loop with up to `--window` orders in flight per session.
//!
//! `--probe` runs the platform stall probe ([`common::stalls`]) alongside and also reports the
//! latency of the orders no stall overlapped: the server's own latency, apart from the time
//! the machine took away.
//!
//! The client is one thread driving every session's non-blocking socket with `ppoll`, its
//! timer slack set to 1 us, so that on this 2-core machine it takes as little as possible from
//! the server it measures (a real desk's FIX engine runs on its own machine). Open loop: each
//! session has its own schedule, and an order's latency runs from when it was due, so a late
//! client is charged to the server (an order due is an order due). Closed loop: whatever the
//! window allows is written at once, one `write` per session per round. Runs are shorter than
//! the 30 s heartbeat interval, so the client never needs to answer a TestRequest.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cccx::fixclient::{frame_at, next_message_end, utc_timestamp, FixSession};
use cccx_gateway::config::DurabilityName;
use cccx_gateway::server;
use hdrhistogram::Histogram;

mod common;

use common::stalls::{self, Probe};
use common::{funded_config, latency_histogram, percentiles, LoadArgs};

fn args() -> LoadArgs {
    let bench =
        LoadArgs { streams: 4, rate: 0.0, seconds: 5.0, durability: DurabilityName::Batch, window: 64 };
    // A smoke run under `cargo test`: one second.
    let smoke = LoadArgs { seconds: 1.0, ..bench };
    LoadArgs::parse("--sessions", bench, smoke)
}

/// One logged-on session, driven by the client's loop.
struct Session {
    comp_id: String,
    stream: TcpStream,
    /// Next MsgSeqNum to send.
    seq: u64,
    /// Received bytes not yet taken as messages.
    inbuf: Vec<u8>,
    /// Framed messages not yet written (the socket was full), from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Orders sent: the next ClOrdID number, and when each unanswered one was due.
    next: u64,
    due: HashMap<u64, Instant>,
    /// Open loop: when the next order is due.
    next_due: Instant,
    /// The session's place among the sessions (its side, in the trading flow).
    index: usize,
    flow: Flow,
}

/// What the sessions send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Immediate-or-cancel limit orders alternating sides. None ever rests, so none trades:
    /// each order gets two ExecutionReports, New and Cancelled (the unfilled remainder).
    Ioc,
    /// Day limit orders at crossing prices: even sessions buy at 1,000-1,002, odd ones sell at
    /// 998-1,000, 1-3 certificates each. An order trades with what rests on the other side
    /// and rests for the rest, so the book stays shallow; New plus a fill report for each side
    /// of each trade (about 2.4 reports per order).
    Trading,
}

/// `--flow ioc|trading` (default `ioc`).
fn flow() -> Flow {
    let argv: Vec<String> = std::env::args().collect();
    match argv.iter().position(|a| a == "--flow").and_then(|i| argv.get(i + 1)).map(String::as_str) {
        None | Some("ioc") => Flow::Ioc,
        Some("trading") => Flow::Trading,
        Some(other) => panic!("--flow: {other} (ioc or trading)"),
    }
}

impl Session {
    /// Frames the next order, due at `due`, onto the outbound buffer.
    fn queue_order(&mut self, due: Instant, now_text: &str) {
        let n = self.next;
        self.next += 1;
        let (side, price, tif) = match self.flow {
            Flow::Ioc => {
                let side = if (n + self.index as u64).is_multiple_of(2) { 1 } else { 2 };
                (side, 1000 + (n % 5) as i64 - 2, 3)
            }
            Flow::Trading if self.index.is_multiple_of(2) => (1, 1000 + (n % 3) as i64, 0),
            Flow::Trading => (2, 998 + (n % 3) as i64, 0),
        };
        let body = format!(
            "11=L{n}\x0155=CCC-2026-O\x0154={side}\x0160={now_text}\x0138={}\x0140=2\x0144={price}\x0159={tif}\x01",
            1 + n % 3
        );
        self.out.extend_from_slice(&frame_at("D", &self.comp_id, self.seq, &body, now_text));
        self.seq += 1;
        self.due.insert(n, due);
    }

    /// Writes what the socket takes of the outbound buffer.
    fn flush(&mut self) {
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => panic!("{}: the acceptor closed the connection", self.comp_id),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: FIX send: {e}", self.comp_id),
            }
        }
        self.out.clear();
        self.out_at = 0;
    }

    /// Reads what has arrived and records the latency of each order's first report.
    fn receive(&mut self, stats: &mut Stats, chunk: &mut [u8]) {
        loop {
            match self.stream.read(chunk) {
                Ok(0) => panic!("{}: the acceptor closed the connection", self.comp_id),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: FIX read: {e}", self.comp_id),
            }
        }
        let now = Instant::now();
        let mut start = 0;
        while let Some(len) = next_message_end(&self.inbuf[start..]) {
            let msg = &self.inbuf[start..start + len];
            start += len;
            let Report { msg_type, cl_ord_id, exec_type } = Report::of(msg);
            if msg_type != b"8" {
                continue;
            }
            *stats.reports.entry(String::from_utf8_lossy(exec_type).into_owned()).or_default() += 1;
            let Some(id) = cl_ord_id.strip_prefix(b"L").and_then(|c| std::str::from_utf8(c).ok()) else {
                continue;
            };
            let Some(t) = id.parse().ok().and_then(|id: u64| self.due.remove(&id)) else { continue };
            stats.hist.saturating_record(now.saturating_duration_since(t).as_nanos() as u64);
            if let Some(answered) = &mut stats.answered {
                answered.push((t, now));
            }
            if exec_type == b"8" {
                stats.rejected += 1;
            } else {
                stats.acked += 1;
            }
        }
        self.inbuf.drain(..start);
    }
}

/// The fields of a report the client looks at, found in one pass.
struct Report<'a> {
    msg_type: &'a [u8],
    cl_ord_id: &'a [u8],
    exec_type: &'a [u8],
}

impl<'a> Report<'a> {
    fn of(msg: &'a [u8]) -> Report<'a> {
        let mut r = Report { msg_type: b"", cl_ord_id: b"", exec_type: b"" };
        for field in msg.split(|b| *b == 1) {
            let Some(eq) = field.iter().position(|b| *b == b'=') else { continue };
            let value = &field[eq + 1..];
            match &field[..eq] {
                b"35" => r.msg_type = value,
                b"11" => r.cl_ord_id = value,
                b"150" => r.exec_type = value,
                _ => {}
            }
        }
        r
    }
}

struct Stats {
    hist: Histogram<u64>,
    acked: u64,
    rejected: u64,
    /// ExecutionReports received, by ExecType (150).
    reports: std::collections::BTreeMap<String, u64>,
    /// With `--probe`: each answered order's due and answer times.
    answered: Option<Vec<(Instant, Instant)>>,
}

/// Prints what the stall probe saw and the latency of the orders no stall overlapped.
fn report_stalls(realtime: bool, cpus: &[usize], stalls: &[stalls::Stall], answered: &[(Instant, Instant)]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let per_cpu: Vec<String> = cpus
        .iter()
        .map(|&c| {
            let mine: Vec<Duration> = stalls.iter().filter(|s| s.cpu == c).map(|s| s.to - s.from).collect();
            let largest = mine.iter().max().copied().unwrap_or_default();
            let total: Duration = mine.iter().sum();
            format!(
                "CPU {c}: {} stalls, {:.1} ms in all, largest {:.2} ms",
                mine.len(),
                ms(total),
                ms(largest)
            )
        })
        .collect();
    println!(
        "platform stalls (probe wake-ups more than {} us late, {} us period, {}): {}",
        stalls::LATE.as_micros(),
        stalls::PERIOD.as_micros(),
        if realtime { "SCHED_FIFO" } else { "NOT real-time: lateness includes the load" },
        per_cpu.join("; ")
    );
    let spans = stalls::merged(stalls);
    let mut clear = latency_histogram();
    let mut overlapped = 0u64;
    for &(due, answer) in answered {
        if stalls::overlaps(&spans, due, answer) {
            overlapped += 1;
        } else {
            clear.saturating_record(answer.saturating_duration_since(due).as_nanos() as u64);
        }
    }
    println!(
        "orders in flight during a stall: {overlapped} of {} ({:.2}%); the others' latency: {}",
        answered.len(),
        100.0 * overlapped as f64 / answered.len().max(1) as f64,
        percentiles(&clear)
    );
}

/// Waits until a session's socket is readable (or writable, where output waits) or `timeout`
/// passes. `ppoll` takes nanoseconds; `poll` and epoll would round a 100 us wait up to a
/// millisecond.
fn wait(sessions: &[Session], timeout: Duration, fds: &mut Vec<libc::pollfd>) {
    fds.clear();
    fds.extend(sessions.iter().map(|s| libc::pollfd {
        fd: s.stream.as_raw_fd(),
        events: libc::POLLIN | if s.out.is_empty() { 0 } else { libc::POLLOUT },
        revents: 0,
    }));
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` holds `fds.len()` initialised pollfd entries for sockets that stay open for
    // the call, `ts` is a live timespec, and no signal mask is passed.
    let _ = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
}

/// Drives every session from this one thread until `deadline` (sending) plus a grace second
/// (collecting the last answers).
fn drive(mut sessions: Vec<Session>, args: &LoadArgs, deadline: Instant, probe: bool) -> Stats {
    // 1 us of timer slack instead of 50 us: open loop wakes up every 100 us at 10,000 orders/s.
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only changes this thread's slack.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut stats = Stats {
        hist: latency_histogram(),
        acked: 0,
        rejected: 0,
        reports: Default::default(),
        answered: probe.then(Vec::new),
    };
    // Each session's share of the rate (there may be fewer participants than `--sessions`).
    let n = sessions.len().max(1);
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / args.rate));
    let end = deadline + Duration::from_secs(1);
    let mut chunk = vec![0u8; 1 << 16];
    let mut fds = Vec::with_capacity(sessions.len());
    let start = Instant::now();
    for (i, s) in sessions.iter_mut().enumerate() {
        // Open loop: the sessions' schedules are spread over one period.
        s.next_due = start + period.map_or(Duration::ZERO, |p| p * i as u32 / n as u32);
    }
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        if now >= end || (!sending && sessions.iter().all(|s| s.due.is_empty())) {
            break;
        }
        if sending {
            let now_text = utc_timestamp();
            for s in &mut sessions {
                match period {
                    Some(p) => {
                        while s.next_due <= now {
                            let due = s.next_due;
                            s.queue_order(due, &now_text);
                            s.next_due += p;
                        }
                    }
                    None => {
                        while s.due.len() < args.window {
                            s.queue_order(now, &now_text);
                        }
                    }
                }
            }
        }
        for s in &mut sessions {
            if !s.out.is_empty() {
                s.flush();
            }
        }
        let timeout = match period {
            Some(_) if sending => {
                let next = sessions.iter().map(|s| s.next_due).min().unwrap_or(deadline);
                next.saturating_duration_since(Instant::now())
            }
            _ if sending => deadline.saturating_duration_since(now),
            _ => end.saturating_duration_since(now),
        };
        wait(&sessions, timeout, &mut fds);
        for (s, fd) in sessions.iter_mut().zip(&fds) {
            if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
                s.receive(&mut stats, &mut chunk);
            }
        }
    }
    stats
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: LoadArgs) {
    let dir = tempfile::tempdir().unwrap();
    let config = funded_config(dir.path(), args.durability);
    let participants: Vec<(String, u32)> =
        config.participants.iter().map(|p| (p.comp_id.clone(), p.id)).take(args.streams).collect();
    let running = server::start(config).await.expect("server starts");
    let fix: SocketAddr = running.fix.expect("the FIX acceptor runs");
    let flow = flow();
    let mut sessions = Vec::new();
    for (index, (comp_id, id)) in participants.iter().enumerate() {
        let password = running.secrets.participants[id].fix_password.clone();
        let logged_on = FixSession::logon(fix, comp_id, &password, Duration::from_secs(10)).expect("logon");
        let (stream, seq, inbuf) = logged_on.into_parts();
        stream.set_nonblocking(true).expect("a non-blocking socket");
        sessions.push(Session {
            comp_id: comp_id.clone(),
            stream,
            seq,
            inbuf,
            out: Vec::new(),
            out_at: 0,
            next: 0,
            due: HashMap::new(),
            next_due: Instant::now(),
            index,
            flow,
        });
    }
    let n = sessions.len();
    let probe = std::env::args().any(|a| a == "--probe").then(Probe::start);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let probing = probe.is_some();
    let client = std::thread::spawn(move || drive(sessions, &args, deadline, probing));
    let stats = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
    let stalls = probe.map(|p| (p.realtime, p.cpus.clone(), p.finish()));
    let (hist, acked, rejected, stats_reports) = (&stats.hist, stats.acked, stats.rejected, &stats.reports);
    println!(
        "FIX: {n} sessions, {} flow, {} durability, {}: {:.0} orders/s acknowledged ({acked} acknowledged, {rejected} rejected) over {:.1} s",
        format!("{flow:?}").to_lowercase(),
        format!("{:?}", args.durability).to_lowercase(),
        if args.rate > 0.0 { args.loop_name() } else { format!("{}, window {}", args.loop_name(), args.window) },
        (acked + rejected) as f64 / args.seconds,
        args.seconds
    );
    println!("order-to-ack latency: {}", percentiles(hist));
    println!("execution reports by ExecType (150): {:?}", stats_reports);
    if let (Some((realtime, cpus, stalls)), Some(answered)) = (stalls, &stats.answered) {
        report_stalls(realtime, &cpus, &stalls, answered);
    }
    running.stop().await.unwrap();
}
