//! Prometheus metrics: counters, gauges and latency histograms kept in atomics (the engine
//! thread never locks), rendered in the text exposition format at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default, Debug)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets it.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Takes one away (not below zero).
    pub fn dec(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS_S: [f64; 14] =
    [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 1e-1];

/// A latency histogram with fixed buckets.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_S.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything the server measures.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Commands journaled and applied.
    pub commands: Counter,
    /// Commands the engine rejected.
    pub rejects: Counter,
    /// Requests refused because the input queue was full.
    pub busy: Counter,
    /// Input queue depth after the last batch.
    pub queue_depth: Gauge,
    /// Engine time per command.
    pub engine_ns: Histogram,
    /// REST order requests: arrival to answer.
    pub rest_latency: Histogram,
    /// HTTP requests answered.
    pub http_requests: Counter,
    /// FIX application messages received.
    pub fix_messages: Counter,
    /// FIX sessions logged on now.
    pub fix_sessions: Gauge,
    /// WebSocket subscribers now.
    pub ws_subscribers: Gauge,
    /// Subscribers cut off for reading too slowly.
    pub slow_consumers: Counter,
    /// Obligations per settlement state, after the last run (in `ObligationState` order).
    pub obligations: [Gauge; OBLIGATION_STATES.len()],
    /// Settlement runs.
    pub settlement_runs: Counter,
    /// Settlement errors: trades that could not be recorded, runs that failed.
    pub settlement_errors: Counter,
    /// Holdings checks asked of the registry.
    pub holdings_checks: Counter,
    /// Holdings checks the registry did not answer.
    pub holdings_check_failures: Counter,
    /// Sellers found short by the registry.
    pub shortfalls: Counter,
}

/// The settlement states, as the metrics label them.
pub const OBLIGATION_STATES: [&str; 6] = ["created", "submitted", "confirmed", "failed", "retried", "broken"];

impl Metrics {
    /// Sets the obligation gauges from settlement's counts.
    pub fn set_obligations(&self, counts: &[(cccx_settlement::settle::ObligationState, u64)]) {
        for (name, gauge) in OBLIGATION_STATES.iter().zip(&self.obligations) {
            gauge.set(counts.iter().find(|(s, _)| s.as_str() == *name).map_or(0, |(_, n)| *n));
        }
    }

    /// The Prometheus text format.
    pub fn render(&self, queue_depth_now: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(&mut out, "cccx_commands_total", "Commands journaled and applied.", self.commands.get());
        counter(&mut out, "cccx_rejects_total", "Commands the engine rejected.", self.rejects.get());
        counter(
            &mut out,
            "cccx_busy_total",
            "Requests refused because the input queue was full.",
            self.busy.get(),
        );
        counter(&mut out, "cccx_http_requests_total", "HTTP requests answered.", self.http_requests.get());
        counter(
            &mut out,
            "cccx_fix_messages_total",
            "FIX application messages received.",
            self.fix_messages.get(),
        );
        counter(
            &mut out,
            "cccx_slow_consumers_total",
            "Subscribers cut off for reading too slowly.",
            self.slow_consumers.get(),
        );
        gauge(
            &mut out,
            "cccx_queue_depth",
            "Requests waiting in the engine's input queue.",
            queue_depth_now as u64,
        );
        gauge(&mut out, "cccx_fix_sessions", "FIX sessions logged on.", self.fix_sessions.get());
        gauge(&mut out, "cccx_ws_subscribers", "WebSocket subscribers.", self.ws_subscribers.get());
        let _ = writeln!(
            out,
            "# HELP cccx_settlement_obligations Obligations per settlement state.\n# TYPE cccx_settlement_obligations gauge"
        );
        for (name, gauge) in OBLIGATION_STATES.iter().zip(&self.obligations) {
            let _ = writeln!(out, "cccx_settlement_obligations{{state=\"{name}\"}} {}", gauge.get());
        }
        counter(&mut out, "cccx_settlement_runs_total", "Settlement runs.", self.settlement_runs.get());
        counter(
            &mut out,
            "cccx_settlement_errors_total",
            "Trades settlement could not record and runs that failed.",
            self.settlement_errors.get(),
        );
        counter(
            &mut out,
            "cccx_holdings_checks_total",
            "Holdings checks asked of the registry.",
            self.holdings_checks.get(),
        );
        counter(
            &mut out,
            "cccx_holdings_check_failures_total",
            "Holdings checks the registry did not answer.",
            self.holdings_check_failures.get(),
        );
        counter(
            &mut out,
            "cccx_shortfalls_total",
            "Sellers the registry found short.",
            self.shortfalls.get(),
        );
        self.engine_ns.render(&mut out, "cccx_engine_seconds", "Engine time per command.");
        self.rest_latency.render(
            &mut out,
            "cccx_rest_order_seconds",
            "REST order requests from arrival to answer.",
        );
        out
    }
}
