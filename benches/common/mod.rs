//! What the gateway load generators (`gateway_load`, `fix_load`) share: their options and the
//! server configuration they start.

// Each bench binary uses a part of this module.
#![allow(dead_code)]

use std::path::Path;

pub mod stalls;

use cccx_gateway::config::{Config, DurabilityName};
use hdrhistogram::Histogram;

/// An empty latency histogram in nanoseconds: 1 us to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// `p50 .. us, p90 .. us, p99 .. us, p99.9 .. us, max .. us` of a latency histogram in
/// nanoseconds.
pub fn percentiles(hist: &Histogram<u64>) -> String {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    format!(
        "p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1e3
    )
}

/// The options of a load generator.
#[derive(Clone, Copy)]
pub struct LoadArgs {
    /// Concurrent clients or sessions.
    pub streams: usize,
    /// Orders per second in all (0: closed loop).
    pub rate: f64,
    /// How long to send.
    pub seconds: f64,
    /// The journal's durability.
    pub durability: DurabilityName,
    /// Orders in flight per stream in closed loop (where the generator has a window).
    pub window: usize,
}

impl LoadArgs {
    /// Reads `--<streams_flag> N --rate R --seconds S --durability none|batch|every --window W`
    /// over `bench` (the defaults under `cargo bench`, which passes `--bench`) or `smoke` (the
    /// defaults when `cargo test --all-targets` runs the bench once without it). Other
    /// arguments are ignored.
    pub fn parse(streams_flag: &str, bench: LoadArgs, smoke: LoadArgs) -> LoadArgs {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut a = if argv.iter().any(|a| a == "--bench") { bench } else { smoke };
        let mut i = 0;
        while i < argv.len() {
            let value = argv.get(i + 1).cloned().unwrap_or_default();
            match argv[i].as_str() {
                flag if flag == streams_flag => a.streams = value.parse().expect("a number of streams"),
                "--rate" => a.rate = value.parse().expect("--rate ORDERS_PER_S"),
                "--seconds" => a.seconds = value.parse().expect("--seconds S"),
                "--window" => a.window = value.parse().expect("--window W"),
                "--durability" => {
                    a.durability = match value.as_str() {
                        "none" => DurabilityName::None,
                        "batch" => DurabilityName::Batch,
                        "every" => DurabilityName::Every,
                        other => panic!("--durability: {other}"),
                    }
                }
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        a
    }

    /// `closed loop` or `open loop at R/s`, for the report.
    pub fn loop_name(&self) -> String {
        if self.rate > 0.0 {
            format!("open loop at {:.0}/s", self.rate)
        } else {
            "closed loop".into()
        }
    }
}

/// The embedded defaults with a fresh data directory, HTTP and FIX on free ports of 127.0.0.1,
/// and every participant funded with more money and offset certificates than a run can use.
/// Settlement is off: these runs measure order entry (the settlement thread would compete for
/// the two cores and queue trades faster than a registry settles them); settlement has its own
/// benches in `settlement/benches`.
pub fn funded_config(data_dir: &Path, durability: DurabilityName) -> Config {
    let mut config = Config::embedded();
    config.settlement.enabled = false;
    config.server.data_dir = data_dir.to_path_buf();
    config.server.http = "127.0.0.1:0".parse().expect("an address");
    config.server.fix = "127.0.0.1:0".parse().expect("an address");
    config.server.durability = durability;
    for p in &mut config.participants {
        p.initial_funds = i64::MAX / 8;
        p.initial_holdings.insert("CCC-2026-O".into(), i64::MAX / 8);
    }
    config
}
