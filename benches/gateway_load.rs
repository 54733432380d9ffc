//! Load generator for the gateway: starts `cccx serve`'s server in-process on 127.0.0.1 with a
//! fresh data directory and drives it with orders, open loop at a chosen rate (or closed loop
//! as fast as it answers), then prints throughput and order-to-acknowledgement latency
//! percentiles (hdrhistogram). Latency is measured from the moment each order was due, so a
//! server that falls behind is charged for the queueing it causes (no coordinated omission).
//!
//! ```text
//! cargo bench --bench gateway_load -- [--clients N] [--rate ORDERS_PER_S] [--seconds S]
//!                                     [--durability none|batch|every]
//! ```
//!
//! `--rate 0` (the default) is closed loop: each client sends its next order when the last
//! one is answered. Orders alternate buy and sell around one price on the continuous
//! instrument, so about half of them trade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cccx_gateway::config::DurabilityName;
use cccx_gateway::server;
use serde_json::json;

mod common;

use common::{funded_config, latency_histogram, LoadArgs};

fn args() -> LoadArgs {
    let bench =
        LoadArgs { streams: 32, rate: 0.0, seconds: 5.0, durability: DurabilityName::Batch, window: 1 };
    // A smoke run under `cargo test`: one second, four clients.
    let smoke = LoadArgs { streams: 4, seconds: 1.0, ..bench };
    LoadArgs::parse("--clients", bench, smoke)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: LoadArgs) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = funded_config(dir.path(), args.durability);
    config.server.fix_enabled = false;
    let running = server::start(config).await.expect("server starts");
    let url = format!("http://{}/v1/orders", running.http);
    let keys: Vec<String> = (1..=4).map(|p| running.secrets.participants[&p].api_key.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let per_client =
        if args.rate > 0.0 { Some(Duration::from_secs_f64(args.streams as f64 / args.rate)) } else { None };
    let mut tasks = Vec::new();
    for c in 0..args.streams {
        let (url, key, stop) = (url.clone(), keys[c % keys.len()].clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut hist = latency_histogram();
            let (mut ok, mut refused) = (0u64, 0u64);
            let mut due = Instant::now() + per_client.map_or(Duration::ZERO, |p| p.mul_f64(c as f64 / 32.0 % 1.0));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if per_client.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                } else {
                    due = Instant::now();
                }
                let side = if (n + c as u64).is_multiple_of(2) { "buy" } else { "sell" };
                let price = 1000 + (n % 5) as i64 - 2;
                let body = json!({"symbol": "CCC-2026-O", "side": side, "price": price, "qty": 1 + n % 3, "tif": "ioc"});
                let response = client.post(&url).bearer_auth(&key).json(&body).send().await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    Ok(r) => {
                        let _ = r.bytes().await;
                        refused += 1;
                    }
                    Err(_) => refused += 1,
                }
                hist.saturating_record(due.elapsed().as_nanos() as u64);
                if let Some(period) = per_client {
                    due += period;
                }
                n += 1;
            }
            (hist, ok, refused)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = latency_histogram();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (h, o, r) = t.await.unwrap();
        hist.add(h).unwrap();
        ok += o;
        refused += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    println!(
        "REST: {} clients, {} durability, {}: {:.0} orders/s acknowledged ({ok} ok, {refused} refused) over {elapsed:.1} s",
        args.streams,
        format!("{:?}", args.durability).to_lowercase(),
        args.loop_name(),
        ok as f64 / elapsed
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
