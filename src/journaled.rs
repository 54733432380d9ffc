//! The journaled commands of the binary: `cccx run` (a workload through journal and engine,
//! restartable), `cccx replay` and `cccx journal verify`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cccx_engine::journal::pipeline::{journal_and_apply, PipelineError};
use cccx_engine::journal::{Durability, JournalWriter, ScanReport, SEGMENT_BYTES_DEFAULT};
use cccx_engine::recovery::{self, EngineConfig, Recovery};
use cccx_engine::snapshot::{hex, state_hash, write_snapshot};
use cccx_engine::{Book, Engine, RiskConfig, Side};

use crate::flow::Flow;

/// `--durability`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityArg {
    /// Records reach the page cache; a crash of the process loses nothing, a crash of the
    /// machine may.
    None,
    /// Group commit: one sync per --batch-records commands or --batch-interval-us.
    Batch,
    /// One sync per command.
    Every,
}

/// How the journal is written (shared by `run` and `bench`).
#[derive(clap::Args, Debug, Clone)]
pub struct JournalArgs {
    /// Durability policy.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Batch)]
    pub durability: DurabilityArg,
    /// With batch durability: commands per sync at most.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_records: u32,
    /// With batch durability: microseconds between syncs at most.
    #[arg(long, default_value_t = 1000)]
    pub batch_interval_us: u64,
    /// Size of each journal segment file, in bytes (a multiple of 64).
    #[arg(long, default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
}

impl JournalArgs {
    /// The engine's durability policy.
    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityArg::None => Durability::None,
            DurabilityArg::Batch => {
                Durability::Batch { records: self.batch_records, interval_us: self.batch_interval_us }
            }
            DurabilityArg::Every => Durability::Every,
        }
    }
}

/// Describes what recovery did, one line.
pub fn recovery_line(r: &Recovery) -> String {
    let mut line = format!(
        "recovered seq={} snapshot={} replayed={}",
        r.journal.last_seq,
        r.snapshot.as_ref().map_or("none".to_string(), |(seq, _)| seq.to_string()),
        r.replayed
    );
    if let Some(t) = &r.journal.torn_tail {
        line += &format!(" torn-tail-cut={}:{} ({})", t.segment.display(), t.offset, t.reason);
    }
    for (path, reason) in &r.skipped_snapshots {
        line += &format!(" skipped-snapshot={} ({reason})", path.display());
    }
    line
}

/// `cccx run`: recovers the journal in `dir` (or creates it for the flow's instruments), then
/// journals and applies the flow's commands after the last one the journal holds, printing
/// `ack SEQ` as each becomes durable, and finally the state hash.
///
/// A new journal is created with risk checks on when `risk` is set; an existing one keeps the
/// setting it was created with.
pub fn run(flow: &Flow, dir: &Path, args: &JournalArgs, opts: &RunOptions) -> anyhow::Result<()> {
    let config = EngineConfig {
        instruments: run_specs(flow),
        risk: if opts.risk { RiskConfig::ON } else { RiskConfig::OFF },
    };
    let (mut engine, mut writer, rec) =
        recovery::open::<Book>(dir, &config, args.segment_bytes, args.durability())
            .with_context(|| format!("recovering {}", dir.display()))?;
    let journaled: Vec<&str> = engine.instruments().iter().map(|s| s.symbol.as_str()).collect();
    if journaled != flow.instruments {
        bail!(
            "{} was created for instruments {journaled:?}, the flow names {:?}",
            dir.display(),
            flow.instruments
        );
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "{}", recovery_line(&rec))?;
    out.flush()?;
    let start = writer.last_seq() as usize;
    if start > flow.commands.len() {
        bail!("{} holds {start} commands, more than the flow's {}", dir.display(), flow.commands.len());
    }
    let mut acked = writer.durable_seq();
    let mut events = Vec::with_capacity(1024);
    let snapshot_every = opts.snapshot_every;
    if opts.journal_thread {
        journal_and_apply(&mut writer, &flow.commands[start..], |seq, cmd, progress| {
            events.clear();
            engine.apply(cmd, &mut events);
            if snapshot_every > 0 && seq % snapshot_every == 0 {
                // The journal must cover every snapshot. (If the journal thread failed, its
                // error is what `journal_and_apply` returns.)
                if !progress.sync_to(seq) {
                    return Ok(());
                }
                write_snapshot(dir, seq, &engine)?;
            }
            // The journal runs ahead: acknowledge what is both durable and applied.
            ack(&mut out, &mut acked, progress.durable_seq().min(seq))
        })
        .map_err(|e| match e {
            PipelineError::Journal(e) => anyhow::Error::from(e),
            PipelineError::Apply(e) => e,
        })?;
    } else {
        for cmd in &flow.commands[start..] {
            let seq = writer.append(cmd)?;
            events.clear();
            engine.apply(cmd, &mut events);
            if snapshot_every > 0 && seq % snapshot_every == 0 {
                // The journal must cover every snapshot: sync it first.
                writer.sync()?;
                write_snapshot(dir, seq, &engine)?;
            }
            ack(&mut out, &mut acked, writer.durable_seq())?;
        }
    }
    writer.sync()?;
    ack(&mut out, &mut acked, writer.durable_seq())?;
    let last = writer.last_seq();
    writer.close()?;
    writeln!(out, "state {}", hex(&state_hash(&engine)))?;
    writeln!(out, "last seq={last}")?;
    Ok(())
}

/// The instruments a new journal for `flow` is created with: the canonical ones, with room for
/// at least the default number of resting orders, so that a longer flow continuing the same
/// journal keeps the canonical semantics.
/// The canonical semantics: the flow's canonical instruments, risk checks off.
pub fn canonical_config(flow: &Flow) -> EngineConfig {
    EngineConfig { instruments: flow.canonical_specs(), risk: RiskConfig::OFF }
}

fn run_specs(flow: &Flow) -> Vec<cccx_engine::InstrumentSpec> {
    let mut specs = flow.canonical_specs();
    for spec in &mut specs {
        spec.resting_orders_max = spec.resting_orders_max.max(cccx_engine::RESTING_ORDERS_DEFAULT);
    }
    specs
}

/// How `cccx run` runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Write a snapshot every this many commands (0: never).
    pub snapshot_every: u64,
    /// Create a new journal with pre-trade risk checks on.
    pub risk: bool,
    /// Append on a second thread, ahead of the engine (`journal::pipeline`).
    pub journal_thread: bool,
}

fn ack(out: &mut impl Write, acked: &mut u64, durable: u64) -> anyhow::Result<()> {
    if durable > *acked {
        for seq in *acked + 1..=durable {
            writeln!(out, "ack {seq}")?;
        }
        *acked = durable;
        out.flush()?;
    }
    Ok(())
}

/// `cccx replay`: rebuilds the state from `dir` and prints its hash and statistics.
pub fn replay(dir: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let (engine, rec) =
        recovery::replay::<Book>(dir).with_context(|| format!("replaying {}", dir.display()))?;
    let elapsed = start.elapsed();
    println!("state {}", hex(&state_hash(&engine)));
    println!("last seq={}", rec.journal.last_seq);
    match &rec.snapshot {
        Some((seq, path)) => println!("snapshot        seq {seq} ({})", path.display()),
        None => println!("snapshot        none"),
    }
    for (path, reason) in &rec.skipped_snapshots {
        println!("skipped         {} ({reason})", path.display());
    }
    println!(
        "replayed        {} commands in {:.1} ms ({:.0} commands/s, scan and checks included)",
        rec.replayed,
        elapsed.as_secs_f64() * 1e3,
        rec.replayed as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    print_journal(&rec.journal);
    print_books(&engine);
    Ok(())
}

/// `cccx journal verify`: checks the whole journal and prints its head hash.
pub fn verify(dir: &Path) -> anyhow::Result<()> {
    let report = recovery::verify(dir).with_context(|| format!("verifying {}", dir.display()))?;
    println!("ok");
    print_journal(&report);
    Ok(())
}

fn print_journal(r: &ScanReport) {
    println!(
        "journal         {} segments, {} commands (last seq {}), {} seals, {} commands after the last seal",
        r.segments.len(),
        r.commands,
        r.last_seq,
        r.seals,
        r.unsealed
    );
    println!("head            {}", hex(&r.head));
    if let Some(t) = &r.torn_tail {
        println!(
            "torn tail       {} offset {}: {} (cut off when the journal is next opened)",
            t.segment.display(),
            t.offset,
            t.reason
        );
    }
}

fn print_books(engine: &Engine<Book>) {
    use cccx_engine::OrderBook;
    for (i, spec) in engine.instruments().iter().enumerate() {
        let Some(book) = engine.book(cccx_engine::InstrumentId(i as u32)) else { continue };
        let px = |p: Option<i64>| p.map_or("-".to_string(), |p| p.to_string());
        println!(
            "book            {}: {} orders, best bid {}, best ask {}",
            spec.symbol,
            book.order_count(),
            px(book.best_price(Side::Buy)),
            px(book.best_price(Side::Sell))
        );
    }
}

/// A fresh directory for one journaled bench pass, inside the user's `--journal` directory.
pub fn bench_dir(root: &Path, pass: usize) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("bench-pass-{pass}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Opens a new journal for a bench pass.
pub fn bench_writer(
    flow: &Flow,
    dir: &Path,
    args: &JournalArgs,
) -> anyhow::Result<(Engine<Book>, JournalWriter)> {
    let (engine, writer, _) =
        recovery::open::<Book>(dir, &canonical_config(flow), args.segment_bytes, args.durability())?;
    Ok((engine, writer))
}
