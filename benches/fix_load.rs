//! Load generator for the FIX acceptor: starts `cccx serve`'s server in-process on 127.0.0.1
//! with a fresh data directory, logs on several FIX sessions (one per participant) with a
//! minimal FIX 4.4 framing (`cccx::fixclient`, plain TCP, so the client's cost stays small), and
//! sends NewOrderSingle messages open loop at a chosen total rate (or closed loop), then prints
//! throughput and order-to-acknowledgement latency percentiles (hdrhistogram): from the moment
//! an order was due to the first ExecutionReport for it (new, fill or reject).
//!
//! ```text
//! cargo bench --bench fix_load -- [--sessions N] [--rate ORDERS_PER_S] [--seconds S]
//!                                 [--durability none|batch|every] [--window W]
//! ```
//!
//! `--rate 0` (the default) is closed loop with up to `--window` orders in flight per session.
//! Open loop paces each session's sending thread with `std::thread::sleep` (tens of
//! microseconds of timer slack, not tokio's 1 ms timer); an order's latency runs from when it was
//! due, so a late sender is charged to the server (an order due is an order due). Runs are shorter than the
//! 30 s heartbeat interval, so the client never needs to answer a TestRequest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cccx::fixclient::{field, frame, take_messages, utc_timestamp};
use cccx_gateway::config::DurabilityName;
use cccx_gateway::server;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Condvar, Mutex};

mod common;

use common::{funded_config, LoadArgs};

fn args() -> LoadArgs {
    let bench =
        LoadArgs { streams: 4, rate: 0.0, seconds: 5.0, durability: DurabilityName::Batch, window: 64 };
    // A smoke run under `cargo test`: one second.
    let smoke = LoadArgs { seconds: 1.0, ..bench };
    LoadArgs::parse("--sessions", bench, smoke)
}

struct Stats {
    hist: Histogram<u64>,
    acked: u64,
    rejected: u64,
}

/// Sleeps until `at` with `std::thread::sleep` (tens of microseconds late at most on Linux,
/// where tokio's timer would add up to a millisecond).
fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// One session on two threads: this one reads reports, a second one sends orders (paced, or
/// as the window allows).
fn session(
    addr: std::net::SocketAddr,
    comp_id: String,
    password: String,
    args: Arc<LoadArgs>,
    index: usize,
    deadline: Instant,
) -> Stats {
    let mut rd = TcpStream::connect(addr).expect("FIX connect");
    rd.set_nodelay(true).ok();
    let mut wr = rd.try_clone().expect("a second handle on the socket");
    let mut seq = 1u64;
    let logon = frame("A", &comp_id, seq, &format!("98=0\x01108=30\x01553={comp_id}\x01554={password}\x01"));
    wr.write_all(&logon).unwrap();
    seq += 1;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    // Wait for the logon answer.
    'logon: loop {
        let n = rd.read(&mut chunk).expect("read");
        assert!(n > 0, "{comp_id}: disconnected at logon");
        buf.extend_from_slice(&chunk[..n]);
        for m in take_messages(&mut buf) {
            if field(&m, "35") == Some("A") {
                break 'logon;
            }
            if field(&m, "35") == Some("5") {
                panic!("{comp_id}: logon refused");
            }
        }
    }
    let mut stats =
        Stats { hist: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap(), acked: 0, rejected: 0 };
    let due: Arc<Mutex<HashMap<u64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.streams as f64 / args.rate));
    // Closed loop: orders in flight, at most the window.
    let in_flight = Arc::new((Mutex::new(0usize), Condvar::new()));
    let window = args.window;
    let sender = {
        let (due, in_flight, comp_id) = (due.clone(), in_flight.clone(), comp_id.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut n = 0u64;
            while Instant::now() < deadline {
                if period.is_some() {
                    sleep_until(next);
                } else {
                    let (lock, cv) = &*in_flight;
                    let mut k = lock.lock().unwrap();
                    while *k >= window {
                        k = cv.wait_timeout(k, Duration::from_millis(100)).unwrap().0;
                        if Instant::now() >= deadline {
                            return;
                        }
                    }
                    *k += 1;
                    next = Instant::now();
                }
                let side = if (n + index as u64).is_multiple_of(2) { 1 } else { 2 };
                let price = 1000 + (n % 5) as i64 - 2;
                let body = format!(
                    "11=L{n}\x0155=CCC-2026-O\x0154={side}\x0160={}\x0138={}\x0140=2\x0144={price}\x0159=3\x01",
                    utc_timestamp(),
                    1 + n % 3
                );
                due.lock().unwrap().insert(n, next);
                let msg = frame("D", &comp_id, seq, &body);
                seq += 1;
                if wr.write_all(&msg).is_err() {
                    break;
                }
                if let Some(p) = period {
                    next += p;
                }
                n += 1;
            }
        })
    };
    // Read reports until the deadline plus a grace second.
    let end = deadline + Duration::from_secs(1);
    while Instant::now() < end {
        rd.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
        ))
        .ok();
        let n = match rd.read(&mut chunk) {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        for m in take_messages(&mut buf) {
            if field(&m, "35") != Some("8") {
                continue;
            }
            let Some(id) = field(&m, "11").and_then(|c| c.strip_prefix('L')).and_then(|c| c.parse().ok())
            else {
                continue;
            };
            let Some(t) = due.lock().unwrap().remove(&id) else { continue };
            stats.hist.saturating_record(t.elapsed().as_nanos() as u64);
            if field(&m, "150") == Some("8") {
                stats.rejected += 1;
            } else {
                stats.acked += 1;
            }
            if period.is_none() {
                let (lock, cv) = &*in_flight;
                *lock.lock().unwrap() -= 1;
                cv.notify_one();
            }
        }
    }
    let _ = sender.join();
    stats
}

fn main() {
    let args = Arc::new(args());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Arc<LoadArgs>) {
    let dir = tempfile::tempdir().unwrap();
    let config = funded_config(dir.path(), args.durability);
    let participants: Vec<(String, String)> = config
        .participants
        .iter()
        .map(|p| (p.comp_id.clone(), p.id))
        .map(|(c, id)| (c, id.to_string()))
        .collect();
    let running = server::start(config).await.expect("server starts");
    let fix = running.fix.expect("the FIX acceptor runs");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for (i, (comp_id, id)) in participants.iter().take(args.streams).cloned().enumerate() {
        let password = running.secrets.participants[&id.parse::<u32>().unwrap()].fix_password.clone();
        let args = args.clone();
        tasks.push(std::thread::spawn(move || session(fix, comp_id, password, args, i, deadline)));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
    let (mut acked, mut rejected) = (0, 0);
    for t in tasks {
        let s = t.join().unwrap();
        hist.add(s.hist).unwrap();
        acked += s.acked;
        rejected += s.rejected;
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    println!(
        "FIX: {} sessions, {} durability, {}: {:.0} orders/s acknowledged ({acked} acknowledged, {rejected} rejected) over {:.1} s",
        args.streams.min(participants.len()),
        format!("{:?}", args.durability).to_lowercase(),
        if args.rate > 0.0 { args.loop_name() } else { format!("{}, window {}", args.loop_name(), args.window) },
        (acked + rejected) as f64 / args.seconds,
        args.seconds
    );
    println!(
        "order-to-ack latency: p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1e3
    );
    running.stop().await.unwrap();
}
