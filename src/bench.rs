//! `cccx bench`: throughput and per-command latency of the engine on a workload, optionally
//! against the naive reference book in the same run.
//!
//! Parsing is never timed: the flow is read into memory first. Throughput comes from passes
//! that apply every command back to back (the best of `repeat` passes counts); latency from a
//! separate pass that reads the clock around each command (so each sample includes one clock
//! read, about 20 ns here). Fast and naive passes alternate, so that a slow moment of a shared
//! machine hurts both.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cccx_engine::journal::pipeline::journal_and_apply;
use cccx_engine::journal::{scan, scan_pipelined};
use cccx_engine::recovery::read_instruments;
use cccx_engine::{
    Book, Command, CommandBody, Discard, Engine, InstrumentId, OrderBook, OrderType, ReferenceBook,
    RiskConfig,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::flow::Flow;
use crate::journaled::{bench_dir, bench_writer, JournalArgs};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Also run the flow through the journal (in fresh directories under this one) and replay it.
    pub journal: Option<(std::path::PathBuf, JournalArgs)>,
    /// Throughput passes per book; the fastest counts.
    pub repeat: usize,
    /// Also measure the naive reference book and report the ratio.
    pub compare_naive: bool,
    /// Run the latency pass.
    pub latency: bool,
    /// Also measure the engine with risk checks on (every participant funded without limit)
    /// and report the ratio.
    pub compare_risk: bool,
}

/// The engine's figures with pre-trade risk checks on.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RiskFigures {
    /// Commands per second with risk checks on (best pass).
    pub commands_per_s: f64,
    /// `commands_per_s` divided by the engine alone's (risk off).
    pub ratio_to_engine: f64,
}

/// Per-command latency percentiles, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// The naive book's figures on the same flow.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NaiveFigures {
    /// Commands per second of the naive book (best pass).
    pub commands_per_s: f64,
    /// Fast commands/s divided by naive commands/s.
    pub ratio: f64,
}

/// The journal's figures on the same flow.
#[derive(Debug, Clone, Serialize)]
pub struct JournalFigures {
    /// The durability policy, as given.
    pub durability: String,
    /// Commands per second through journal and engine on one thread (best pass, final sync
    /// included).
    pub commands_per_s: f64,
    /// `commands_per_s` divided by the engine alone's.
    pub ratio_to_engine: f64,
    /// Commands per second with the journal appending on a second thread, ahead of the engine
    /// (`journal::pipeline`; best pass, final sync included).
    pub pipelined_commands_per_s: f64,
    /// `pipelined_commands_per_s` divided by the engine alone's.
    pub pipelined_ratio_to_engine: f64,
    /// Commands per second replaying the journal just written (scan, CRC and chain checks and
    /// engine, which builds no events, as recovery; best pass).
    pub replay_commands_per_s: f64,
    /// `replay_commands_per_s` divided by the engine alone's.
    pub replay_ratio_to_engine: f64,
    /// Commands per second replaying with the checks and the engine on one thread (`scan`,
    /// as `cccx journal verify` reads; best pass): what replay costs without a free second core.
    pub replay_one_thread_commands_per_s: f64,
    /// `replay_one_thread_commands_per_s` divided by the engine alone's.
    pub replay_one_thread_ratio_to_engine: f64,
}

/// The result of `cccx bench`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Commands in the flow.
    pub commands: usize,
    /// Events the engine emitted over one pass.
    pub events: usize,
    /// Commands per second of the fast engine (best pass).
    pub commands_per_s: f64,
    /// Throughput passes per book.
    pub passes: usize,
    /// Latency percentiles (absent with `--no-latency`).
    pub latency_ns: Option<Latency>,
    /// The naive book's figures (with `--compare-naive`).
    pub naive: Option<NaiveFigures>,
    /// The journal's figures (with `--journal`).
    pub journal: Option<JournalFigures>,
    /// The figures with risk checks on (with `--compare-risk`).
    pub risk: Option<RiskFigures>,
    /// Peak resident memory of the whole process (flow in memory included), if known.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory before the first engine was built (the parsed flow, mostly), if known:
    /// `peak_rss_bytes - flow_rss_bytes` is what the engines added at their peak.
    pub flow_rss_bytes: Option<u64>,
}

/// Runs the measurements.
pub fn run(flow: &Flow, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let repeat = opts.repeat.max(1);
    let flow_rss_bytes = proc_status_bytes("VmRSS:");
    let (mut fast_best, mut naive_best) = (Duration::MAX, Duration::MAX);
    let (mut journal_best, mut replay_best, mut replay1_best) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut pipelined_best = Duration::MAX;
    let mut risk_best = Duration::MAX;
    let mut events = 0;
    for pass in 0..repeat {
        let (elapsed, n) = throughput_pass::<Book>(flow)?;
        fast_best = fast_best.min(elapsed);
        events = n;
        if opts.compare_naive {
            naive_best = naive_best.min(throughput_pass::<ReferenceBook>(flow)?.0);
        }
        if opts.compare_risk {
            risk_best = risk_best.min(risk_pass(flow)?);
        }
        if let Some((root, args)) = &opts.journal {
            let (written, replayed, replayed1) = journal_pass(flow, root, args, pass)?;
            journal_best = journal_best.min(written);
            replay_best = replay_best.min(replayed);
            replay1_best = replay1_best.min(replayed1);
            pipelined_best = pipelined_best.min(pipelined_pass(flow, root, args, pass)?);
        }
    }
    let per_s = |d: Duration| flow.commands.len() as f64 / d.as_secs_f64().max(1e-9);
    let commands_per_s = per_s(fast_best);
    let naive = opts.compare_naive.then(|| {
        let naive = per_s(naive_best);
        NaiveFigures { commands_per_s: naive, ratio: commands_per_s / naive }
    });
    let journal = opts.journal.as_ref().map(|(_, args)| JournalFigures {
        durability: format!("{:?}", args.durability()),
        commands_per_s: per_s(journal_best),
        ratio_to_engine: per_s(journal_best) / commands_per_s,
        pipelined_commands_per_s: per_s(pipelined_best),
        pipelined_ratio_to_engine: per_s(pipelined_best) / commands_per_s,
        replay_commands_per_s: per_s(replay_best),
        replay_ratio_to_engine: per_s(replay_best) / commands_per_s,
        replay_one_thread_commands_per_s: per_s(replay1_best),
        replay_one_thread_ratio_to_engine: per_s(replay1_best) / commands_per_s,
    });
    let risk = opts.compare_risk.then(|| RiskFigures {
        commands_per_s: per_s(risk_best),
        ratio_to_engine: per_s(risk_best) / commands_per_s,
    });
    let latency_ns = if opts.latency { Some(latency_pass(flow)?) } else { None };
    Ok(BenchReport {
        commands: flow.commands.len(),
        events,
        commands_per_s,
        passes: repeat,
        latency_ns,
        naive,
        journal,
        risk,
        peak_rss_bytes: proc_status_bytes("VmHWM:"),
        flow_rss_bytes,
    })
}

/// Applies every command once on a fresh engine; returns the time and the number of events.
fn throughput_pass<B: OrderBook>(flow: &Flow) -> anyhow::Result<(Duration, usize)> {
    let mut engine = Engine::<B>::new(flow.canonical_specs())?;
    let mut events = Vec::with_capacity(4096);
    let mut count = 0usize;
    let start = Instant::now();
    for cmd in &flow.commands {
        events.clear();
        engine.apply(cmd, &mut events);
        count += events.len();
    }
    let elapsed = start.elapsed();
    black_box(&engine);
    Ok((elapsed, black_box(count)))
}

/// The flow's canonical instruments with a price ceiling at the flow's highest limit price (so
/// that market buys can lock funds), and commands that give every participant of the flow more
/// funds and certificates than it can use: with them, risk checks on change no trade.
pub fn funded(flow: &Flow) -> (Vec<cccx_engine::InstrumentSpec>, Vec<Command>) {
    let mut highest = vec![None::<i64>; flow.instruments.len()];
    let mut participants = std::collections::BTreeSet::new();
    for cmd in &flow.commands {
        match cmd.body {
            CommandBody::New(o) => {
                participants.insert(o.participant);
                if o.order_type == OrderType::Limit {
                    let h = &mut highest[o.instrument.0 as usize];
                    *h = Some(h.map_or(o.price, |h| h.max(o.price)));
                }
            }
            CommandBody::Amend { instrument, price, .. } => {
                let h = &mut highest[instrument.0 as usize];
                *h = Some(h.map_or(price, |h| h.max(price)));
            }
            _ => {}
        }
    }
    let mut specs = flow.canonical_specs();
    for (spec, highest) in specs.iter_mut().zip(highest) {
        spec.price_ceiling = highest.filter(|h| *h > 0);
    }
    let plenty = i64::MAX / 4;
    let mut setup = Vec::new();
    for participant in participants {
        setup.push(Command { ts_ns: 0, body: CommandBody::Funds { participant, amount: plenty } });
        for i in 0..flow.instruments.len() as u32 {
            let body = CommandBody::Holdings { participant, instrument: InstrumentId(i), qty: plenty };
            setup.push(Command { ts_ns: 0, body });
        }
    }
    (specs, setup)
}

/// Applies every command once on a fresh engine with risk checks on and every participant
/// funded ([`funded`]; the funding is not timed); returns the time.
fn risk_pass(flow: &Flow) -> anyhow::Result<Duration> {
    let (specs, setup) = funded(flow);
    let mut engine = Engine::<Book>::with_risk(specs, RiskConfig::ON)?;
    let mut events = Vec::with_capacity(4096);
    for cmd in &setup {
        engine.apply(cmd, &mut events);
    }
    let start = Instant::now();
    for cmd in &flow.commands {
        events.clear();
        engine.apply(cmd, &mut events);
    }
    let elapsed = start.elapsed();
    black_box(&engine);
    Ok(elapsed)
}

/// Journals and applies every command in a fresh directory (final sync included), then replays
/// that journal into a fresh engine as recovery does and again on one thread; returns the three
/// times. The directory is removed afterwards.
fn journal_pass(
    flow: &Flow,
    root: &std::path::Path,
    args: &JournalArgs,
    pass: usize,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let dir = bench_dir(root, pass)?;
    let written = write_pass(flow, &dir, args, false)?;
    // Replay: a new engine built first (as the engine-alone pass does), then scan and apply, as
    // recovery does (the checks on a second thread, the engine on this one, no events built).
    let (config, genesis) = read_instruments(&dir)?;
    let mut engine = config.engine::<Book>()?;
    let start = Instant::now();
    let report = scan_pipelined(&dir, genesis, |_, cmd| engine.apply_into(cmd, &mut Discard))?;
    let replayed = start.elapsed();
    anyhow::ensure!(
        report.commands == flow.commands.len() as u64,
        "replay read {} commands",
        report.commands
    );
    black_box(&engine);
    let mut engine = config.engine::<Book>()?;
    let start = Instant::now();
    scan(&dir, genesis, |_, cmd| engine.apply_into(cmd, &mut Discard))?;
    let replayed_one_thread = start.elapsed();
    black_box(&engine);
    std::fs::remove_dir_all(&dir)?;
    Ok((written, replayed, replayed_one_thread))
}

/// Journals and applies every command in a fresh directory with the appends on a second
/// thread ([`journal_and_apply`]; final sync included); returns the time. The directory is
/// removed afterwards.
fn pipelined_pass(
    flow: &Flow,
    root: &std::path::Path,
    args: &JournalArgs,
    pass: usize,
) -> anyhow::Result<Duration> {
    let dir = bench_dir(root, pass)?;
    let elapsed = write_pass(flow, &dir, args, true)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(elapsed)
}

/// Journals and applies every command in `dir`, a new journal (final sync included): append
/// then apply on this thread, or with the appends on a second thread when `pipelined`.
/// Returns the time.
fn write_pass(
    flow: &Flow,
    dir: &std::path::Path,
    args: &JournalArgs,
    pipelined: bool,
) -> anyhow::Result<Duration> {
    let (mut engine, mut writer) = bench_writer(flow, dir, args)?;
    let mut events = Vec::with_capacity(4096);
    let mut apply = |cmd: &Command| {
        events.clear();
        engine.apply(cmd, &mut events);
    };
    let start = Instant::now();
    if pipelined {
        journal_and_apply(&mut writer, &flow.commands, |_, cmd, _| {
            apply(cmd);
            Ok::<(), std::convert::Infallible>(())
        })?;
    } else {
        for cmd in &flow.commands {
            writer.append(cmd)?;
            apply(cmd);
        }
    }
    writer.close()?;
    let elapsed = start.elapsed();
    black_box(&engine);
    Ok(elapsed)
}

fn latency_pass(flow: &Flow) -> anyhow::Result<Latency> {
    let mut engine = Engine::<Book>::new(flow.canonical_specs())?;
    let mut events = Vec::with_capacity(4096);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for cmd in &flow.commands {
        events.clear();
        let start = Instant::now();
        engine.apply(cmd, &mut events);
        let ns = start.elapsed().as_nanos();
        hist.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
    }
    black_box(&engine);
    Ok(Latency {
        p50: hist.value_at_quantile(0.50),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    })
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM:` is the peak resident set,
/// `VmRSS:` the current one), where the OS reports it.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl BenchReport {
    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "commands        {}\nevents          {}\nthroughput      {:.0} commands/s (best of {} passes)\n",
            self.commands, self.events, self.commands_per_s, self.passes
        );
        if let Some(l) = self.latency_ns {
            s += &format!(
                "latency         p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns\n",
                l.p50, l.p99, l.p999, l.max
            );
        }
        if let Some(n) = self.naive {
            s += &format!(
                "naive book      {:.0} commands/s\nratio           {:.2}x the naive book\n",
                n.commands_per_s, n.ratio
            );
        }
        if let Some(j) = &self.journal {
            s += &format!(
                "journal         {:.0} commands/s with durability {} ({:.2}x the engine alone)\n\
                 pipelined       {:.0} commands/s with the journal on a second thread ({:.2}x)\n\
                 replay          {:.0} commands/s ({:.2}x the engine alone; {:.0} commands/s, {:.2}x, on one thread)\n",
                j.commands_per_s,
                j.durability,
                j.ratio_to_engine,
                j.pipelined_commands_per_s,
                j.pipelined_ratio_to_engine,
                j.replay_commands_per_s,
                j.replay_ratio_to_engine,
                j.replay_one_thread_commands_per_s,
                j.replay_one_thread_ratio_to_engine
            );
        }
        if let Some(r) = self.risk {
            s += &format!(
                "risk checks on  {:.0} commands/s ({:.2}x the engine alone)\n",
                r.commands_per_s, r.ratio_to_engine
            );
        }
        if let Some(peak) = self.peak_rss_bytes {
            s += &format!("peak RSS        {:.1} MB (whole process)\n", peak as f64 / 1e6);
            if let Some(flow) = self.flow_rss_bytes {
                s += &format!(
                    "                {:.1} MB before the engines (the flow), {:.1} MB added by them\n",
                    flow as f64 / 1e6,
                    peak.saturating_sub(flow) as f64 / 1e6
                );
            }
        }
        s
    }
}
