//! `cccx`: the carbon credit certificate exchange core's command line.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use cccx::bench::{self, BenchOptions};
use cccx::canonical;
use cccx::flow::{read_flow, Flow};
use cccx::genflow::{write_flow, GenFlowArgs};
use cccx::journaled::{self, JournalArgs};
use cccx_engine::{Book, ReferenceBook};

mod reconcile_cmd;
mod registry_cmd;
mod settlement_cmd;

/// cccx: an exchange core for carbon credit certificate (CCC) markets.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a standard workload CSV (the same bytes as shared/workloads/genflow.py).
    GenFlow {
        #[command(flatten)]
        gen: GenFlowArgs,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run a workload through the engine: throughput, latency percentiles, canonical outputs.
    ///
    /// Without --flow, the workload is generated in memory from the generator options
    /// (--profile, --ops, --seed, ...), as `cccx gen-flow` would write it.
    Bench(BenchArgs),
    /// Run a workload through the journal and the engine, restartably.
    ///
    /// Recovers the journal in --journal (the newest valid snapshot plus the journal after it),
    /// or creates it for the flow's instruments, then journals and applies the flow's commands
    /// after the last one the journal holds. Prints `recovered ...`, then `ack SEQ` as each
    /// command becomes durable, then `state HASH` and `last seq=N`.
    Run(RunArgs),
    /// Rebuild the state from a journal directory (snapshot plus journal) and print its
    /// canonical state hash and statistics. Writes nothing.
    Replay {
        /// The journal directory.
        dir: PathBuf,
    },
    /// Journal maintenance.
    #[command(subcommand)]
    Journal(JournalCmd),
    /// The settlement audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run the exchange: the engine, the REST/WebSocket API and the session scheduler.
    ///
    /// Without --config it runs on embedded defaults: two CCC instruments (the compliance
    /// segment as a monthly call auction, the offset segment continuous), four participants
    /// with deposits and holdings, one operator, data under ./data, HTTP on 127.0.0.1:8080.
    /// API keys are generated on first start into DATA_DIR/secrets.json. Restarting recovers
    /// the journal; SIGTERM or Ctrl-C drains and syncs it.
    Serve {
        /// A TOML configuration (see the gateway's config module for every field).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the embedded default configuration and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// The reference registry as its own process.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCmd),
    /// Delivery versus payment against a registry, and where obligations stand.
    #[command(subcommand)]
    Settlement(settlement_cmd::SettlementCmd),
    /// Run a whole monthly CCC call auction end to end and print a report.
    ///
    /// In this one process: a reference registry service with holdings (one seller moved most
    /// of its certificates away outside the exchange), the exchange with FIX and HTTP on free
    /// ports of 127.0.0.1, six participants bidding over FIX 4.4, the bid window closing, the
    /// registry's holdings check removing the short seller's bids, the uncross (MCP, MCV, fills
    /// per participant), settlement (delivery versus payment) and reconciliation. Exit code 0
    /// when everything settled without breaks, 1 otherwise.
    Demo {
        /// Keep the registry's and the exchange's data in this (new or empty) directory
        /// instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Reconcile settlement against the registry, and work the breaks.
    ///
    /// Exit codes: 0 no break found (or success), 1 breaks found, 2 error.
    #[command(subcommand)]
    Reconcile(reconcile_cmd::ReconcileCmd),
}

#[derive(Subcommand, Debug)]
enum JournalCmd {
    /// Check a journal's framing, CRCs, sequence continuity and hash chain; name the first bad
    /// record, or print the head hash to anchor.
    Verify {
        /// The journal directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check an audit log's hash chain: print the number of records and the head hash to
    /// keep, or name the first record that is not intact (exit code 1).
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The workload CSV (command N of the file is journal sequence N).
    #[arg(long, value_name = "FILE")]
    flow: PathBuf,
    /// The journal directory.
    #[arg(long, value_name = "DIR")]
    journal: PathBuf,
    /// Write a snapshot every N commands (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    snapshot_every: u64,
    /// Create the journal with pre-trade risk checks on: participants need FUNDS and HOLDINGS
    /// lines before they can buy or sell. An existing journal keeps its setting.
    #[arg(long)]
    risk: bool,
    /// Append to the journal on a second thread, ahead of the engine (each command is still
    /// applied only once the journal holds it). Faster when a second core is free.
    #[arg(long)]
    journal_thread: bool,
    #[command(flatten)]
    journal_args: JournalArgs,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// The workload CSV to run (see WORKLOADS.md); without it one is generated.
    #[arg(long, value_name = "FILE")]
    flow: Option<PathBuf>,
    /// Write the canonical trades to this file.
    #[arg(long, value_name = "OUT.csv")]
    trades: Option<PathBuf>,
    /// Write the canonical final book to this file.
    #[arg(long, value_name = "OUT.csv")]
    book: Option<PathBuf>,
    /// Also run the naive reference book, check that both produce the same trades and book,
    /// and print the speed ratio.
    #[arg(long)]
    compare_naive: bool,
    /// Throughput passes per book; the fastest counts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Skip the latency pass.
    #[arg(long)]
    no_latency: bool,
    /// Also run with pre-trade risk checks on (every participant funded without limit, a price
    /// ceiling at the flow's highest price), check that the trades and books are the same, and
    /// print the speed ratio.
    #[arg(long)]
    compare_risk: bool,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Also run the flow through the journal, in fresh directories under DIR (removed after
    /// each pass): on one thread, and with the journal on a second thread ahead of the engine;
    /// then replay it. Prints each speed as a ratio to the engine alone.
    #[arg(long, value_name = "DIR")]
    journal: Option<PathBuf>,
    #[command(flatten)]
    journal_args: JournalArgs,
    #[command(flatten)]
    gen: GenFlowArgs,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::GenFlow { gen, out } => gen_flow(&gen, out.as_deref()),
        Cmd::Bench(args) => run_bench(&args),
        Cmd::Run(args) => load_file(&args.flow).and_then(|flow| {
            let opts = journaled::RunOptions {
                snapshot_every: args.snapshot_every,
                risk: args.risk,
                journal_thread: args.journal_thread,
            };
            journaled::run(&flow, &args.journal, &args.journal_args, &opts)
        }),
        Cmd::Replay { dir } => journaled::replay(&dir),
        Cmd::Journal(JournalCmd::Verify { dir }) => journaled::verify(&dir),
        Cmd::Audit(AuditCmd::Verify { file }) => match cccx_settlement::audit::verify(&file) {
            Ok((records, head)) => {
                println!("intact: {records} records, head {}", cccx_settlement::audit::hash_hex(&head));
                Ok(())
            }
            Err(e) => Err(anyhow::Error::msg(e.to_string())),
        },
        Cmd::Serve { print_default_config: true, .. } => {
            print!("{}", cccx_gateway::config::DEFAULT_CONFIG.trim_start());
            Ok(())
        }
        Cmd::Serve { config, .. } => {
            cccx_gateway::server::serve(config.as_deref()).map_err(anyhow::Error::msg)
        }
        Cmd::Registry(cmd) => registry_cmd::run(cmd),
        Cmd::Settlement(cmd) => settlement_cmd::run(cmd),
        Cmd::Demo { data_dir } => match cccx::demo::run(&cccx::demo::DemoOptions { data_dir }) {
            Ok(true) => Ok(()),
            Ok(false) => {
                println!("\nthe session ended with breaks (see above)");
                std::process::exit(1);
            }
            Err(e) => Err(e),
        },
        Cmd::Reconcile(cmd) => reconcile_cmd::main(cmd),
    };
    if let Err(e) = result {
        eprintln!("cccx: {e:#}");
        std::process::exit(1);
    }
}

fn gen_flow(gen: &GenFlowArgs, out: Option<&Path>) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            write_flow(gen, BufWriter::new(file)).with_context(|| format!("writing {}", path.display()))
        }
        None => write_flow(gen, std::io::stdout().lock()).context("writing standard output"),
    }
}

fn load_file(path: &Path) -> anyhow::Result<Flow> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_flow(BufReader::with_capacity(1 << 20, file)).with_context(|| path.display().to_string())
}

fn load_flow(args: &BenchArgs) -> anyhow::Result<Flow> {
    match &args.flow {
        Some(path) => load_file(path),
        None => {
            let mut bytes = Vec::new();
            write_flow(&args.gen, &mut bytes).context("generating the workload")?;
            read_flow(bytes.as_slice()).context("reading the generated workload")
        }
    }
}

fn run_bench(args: &BenchArgs) -> anyhow::Result<()> {
    let flow = load_flow(args)?;
    if args.trades.is_some() || args.book.is_some() {
        let (engine, trades) = canonical::run::<Book>(&flow)?;
        if let Some(path) = &args.trades {
            write_file(path, |w| canonical::write_trades(w, &flow.instruments, &trades))?;
        }
        if let Some(path) = &args.book {
            write_file(path, |w| canonical::write_book(w, &engine))?;
        }
    }
    if args.compare_naive {
        check_naive_agrees(&flow)?;
    }
    if args.compare_risk {
        check_risk_agrees(&flow)?;
    }
    let opts = BenchOptions {
        journal: args.journal.clone().map(|dir| (dir, args.journal_args.clone())),
        repeat: args.repeat as usize,
        compare_naive: args.compare_naive,
        latency: !args.no_latency,
        compare_risk: args.compare_risk,
    };
    let report = bench::run(&flow, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(())
}

fn write_file(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::new(file);
    f(&mut w).with_context(|| format!("writing {}", path.display()))?;
    w.flush().with_context(|| format!("writing {}", path.display()))
}

/// Runs the flow with risk checks on (everyone funded) and off; fails unless the events other
/// than the funding and the books are identical.
fn check_risk_agrees(flow: &Flow) -> anyhow::Result<()> {
    use cccx_engine::{Engine, RiskConfig};
    let (specs, setup) = bench::funded(flow);
    let mut plain = Engine::<Book>::new(specs.clone())?;
    let mut risky = Engine::<Book>::with_risk(specs, RiskConfig::ON)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for cmd in &setup {
        risky.apply(cmd, &mut b);
    }
    for (i, cmd) in flow.commands.iter().enumerate() {
        a.clear();
        b.clear();
        plain.apply(cmd, &mut a);
        risky.apply(cmd, &mut b);
        if a != b {
            bail!("command {} gives other events with risk checks on: this is a bug", i + 1);
        }
    }
    risky.check_invariants().map_err(|e| anyhow::anyhow!("risk invariants: {e}"))?;
    if plain.image().instruments != risky.image().instruments {
        bail!("the books differ with risk checks on: this is a bug");
    }
    Ok(())
}

/// Runs the flow through both books and fails unless the canonical outputs are identical.
fn check_naive_agrees(flow: &Flow) -> anyhow::Result<()> {
    let outputs = |trades: &[cccx_engine::Trade],
                   book: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>| {
        let (mut t, mut b) = (Vec::new(), Vec::new());
        canonical::write_trades(&mut t, &flow.instruments, trades)?;
        book(&mut b)?;
        Ok::<_, std::io::Error>((t, b))
    };
    let fast = {
        let (engine, trades) = canonical::run::<Book>(flow)?;
        outputs(&trades, &mut |w| canonical::write_book(w, &engine))?
    };
    let naive = {
        let (engine, trades) = canonical::run::<ReferenceBook>(flow)?;
        outputs(&trades, &mut |w| canonical::write_book(w, &engine))?
    };
    if fast.0 != naive.0 {
        bail!("the fast and the naive book disagree on the trades: this is a bug");
    }
    if fast.1 != naive.1 {
        bail!("the fast and the naive book disagree on the final book: this is a bug");
    }
    Ok(())
}
