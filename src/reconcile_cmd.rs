//! `cccx reconcile ...`: the exchange's settlement against the registry, and the breaks.
//!
//! Exit codes: 0 when a run finds no break (or another subcommand succeeds), 1 when a run
//! finds breaks, 2 on any error (bad input, a database or registry that cannot be read,
//! something in flight).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cccx_settlement::audit::AuditLog;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
use cccx_settlement::reconcile::{
    reconcile, render, BreakStatus, BreakStore, ExchangeView, RegistryView, StoredBreak,
};
use cccx_settlement::settle::{Settlement, SettlementConfig};
use cccx_settlement::{Registry, SqliteRegistry, Timestamp};
use clap::{Args, Subcommand, ValueEnum};

/// Reconciliation subcommands.
#[derive(Subcommand, Debug)]
pub enum ReconcileCmd {
    /// Reconcile the settlement database against the registry as of one agreed time, record
    /// the breaks, and print the report.
    ///
    /// Refused while anything is in flight (an obligation submitted, failed or retried, a
    /// pending registry transfer of the exchange's). Phase 1 compares totals per account and
    /// instrument, phase 2 the serial blocks of the buckets that differ, phase 3 the transfer
    /// trail of the differing blocks; every transfer is also compared by id.
    ///
    /// Exit code: 0 no break, 1 breaks found, 2 error.
    Run(RunArgs),
    /// List the recorded breaks.
    Breaks {
        #[command(flatten)]
        db: DbArg,
        /// Only breaks with this status.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Output format.
        #[arg(long, value_enum, default_value = "summary")]
        format: Format,
    },
    /// Show one break and its history.
    Show {
        /// The break's id.
        id: i64,
        #[command(flatten)]
        db: DbArg,
    },
    /// Mark a break as being investigated, with a note.
    Investigate {
        /// The break's id.
        id: i64,
        #[command(flatten)]
        db: DbArg,
        /// Who is investigating.
        #[arg(long, value_name = "NAME")]
        by: String,
        /// What is being looked at.
        #[arg(long, value_name = "TEXT")]
        note: String,
        /// Record the change in this audit trail too.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
    },
    /// Resolve a break, with a reason.
    Resolve {
        /// The break's id.
        id: i64,
        #[command(flatten)]
        db: DbArg,
        /// Who resolves it.
        #[arg(long, value_name = "NAME")]
        by: String,
        /// Why it is resolved.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Record the change in this audit trail too.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
    },
}

/// The settlement database, which also holds the breaks.
#[derive(Args, Debug)]
pub struct DbArg {
    /// The settlement database.
    #[arg(long, value_name = "FILE")]
    settlement_db: PathBuf,
}

/// `cccx reconcile run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    db: DbArg,
    /// The embedded registry's database.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "registry_url",
        conflicts_with = "registry_url"
    )]
    registry_db: Option<PathBuf>,
    /// A registry service (`cccx registry serve`), such as http://127.0.0.1:7070.
    #[arg(long, value_name = "URL")]
    registry_url: Option<String>,
    /// The agreed time: RFC 3339 (2026-05-01T15:00:00Z) or nanoseconds since the epoch.
    #[arg(long, value_name = "TIME")]
    as_of: String,
    /// The start of the window (the session start), in the same forms.
    #[arg(long, value_name = "TIME")]
    from: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "summary")]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Record the run and the break changes in this audit trail too.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
}

/// A report format.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Format {
    /// Counts per phase and type, then one line per break.
    Summary,
    /// One JSON document.
    Json,
    /// One row per break, with a header.
    Csv,
}

/// A break status.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Status {
    /// Not looked at yet.
    Open,
    /// Being looked at.
    Investigating,
    /// Closed with a reason.
    Resolved,
}

/// Runs a reconcile subcommand and exits with its code (see the module docs).
pub fn main(cmd: ReconcileCmd) -> ! {
    let code = match run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cccx reconcile: {e:#}");
            2
        }
    };
    std::process::exit(code)
}

fn run(cmd: ReconcileCmd) -> anyhow::Result<i32> {
    match cmd {
        ReconcileCmd::Run(args) => run_reconcile(&args),
        ReconcileCmd::Breaks { db, status, format } => {
            let status = status.map(|s| match s {
                Status::Open => BreakStatus::Open,
                Status::Investigating => BreakStatus::Investigating,
                Status::Resolved => BreakStatus::Resolved,
            });
            let breaks = open_store(&db.settlement_db, None)?.breaks(status)?;
            emit(&render_breaks(&breaks, format)?, None)?;
            Ok(0)
        }
        ReconcileCmd::Show { id, db } => {
            let store = open_store(&db.settlement_db, None)?;
            let b = store.get(id)?.with_context(|| format!("no break {id}"))?;
            let mut text = break_line(&b);
            for e in store.history(id)? {
                let run = e.run.map(|r| format!(" (run {r})")).unwrap_or_default();
                text.push_str(&format!("  {} {}{run} by {}: {}\n", e.at, e.action, e.by, e.note));
            }
            emit(&text, None)?;
            Ok(0)
        }
        ReconcileCmd::Investigate { id, db, by, note, audit } => {
            let b = open_store(&db.settlement_db, audit.as_deref())?.investigate(id, &by, &note, now()?)?;
            emit(&break_line(&b), None)?;
            Ok(0)
        }
        ReconcileCmd::Resolve { id, db, by, reason, audit } => {
            let b = open_store(&db.settlement_db, audit.as_deref())?.resolve(id, &by, &reason, now()?)?;
            emit(&break_line(&b), None)?;
            Ok(0)
        }
    }
}

fn run_reconcile(a: &RunArgs) -> anyhow::Result<i32> {
    let as_of = parse_time(&a.as_of).context("--as-of")?;
    let from = parse_time(&a.from).context("--from")?;
    if from > as_of {
        bail!("--from {from} is after --as-of {as_of}");
    }
    must_exist(&a.db.settlement_db, "settlement database")?;
    let settlement = Settlement::open(&a.db.settlement_db, SettlementConfig::default())
        .with_context(|| format!("opening the settlement database {}", a.db.settlement_db.display()))?;
    let exchange = ExchangeView::from_settlement(&settlement, as_of)?;
    let registry: Box<dyn Registry> = match (&a.registry_db, &a.registry_url) {
        (Some(path), _) => {
            must_exist(path, "registry database")?;
            Box::new(
                SqliteRegistry::open(path)
                    .with_context(|| format!("opening the registry database {}", path.display()))?,
            )
        }
        (None, Some(url)) => Box::new(HttpRegistry::new(url, HttpRegistryConfig::default())?),
        (None, None) => bail!("give --registry-db or --registry-url"),
    };
    let view =
        RegistryView::load(registry.as_ref(), &exchange.accounts(), &exchange.instruments(), from, as_of)
            .context("reading the registry")?;
    let mut report = reconcile(&exchange, &view)?;
    let mut store = open_store(&a.db.settlement_db, a.audit.as_deref())?;
    store.record(&mut report, now()?).context("recording the breaks")?;
    let text = match a.format {
        Format::Summary => render::summary(&report),
        Format::Json => render::to_json(&report)? + "\n",
        Format::Csv => render::to_csv(&report)?,
    };
    emit(&text, a.out.as_deref())?;
    Ok(if report.is_clean() { 0 } else { 1 })
}

fn open_store(path: &Path, audit: Option<&Path>) -> anyhow::Result<BreakStore> {
    must_exist(path, "settlement database")?;
    let store = BreakStore::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(match audit {
        Some(p) => store.with_audit(
            AuditLog::open(p).with_context(|| format!("opening the audit trail {}", p.display()))?,
        ),
        None => store,
    })
}

fn must_exist(path: &Path, what: &str) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!("{what} {} does not exist", path.display());
    }
    Ok(())
}

/// RFC 3339, or nanoseconds since the epoch.
fn parse_time(text: &str) -> anyhow::Result<Timestamp> {
    let t = text.trim();
    if !t.is_empty() && t.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) {
        let ns: i64 = t.parse().with_context(|| format!("{t:?} is out of range for nanoseconds"))?;
        return Ok(Timestamp(ns));
    }
    Ok(Timestamp::parse_rfc3339(t)?)
}

/// The binary's clock: when an operator's change or a run is recorded.
fn now() -> anyhow::Result<Timestamp> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).context("the clock")?;
    Ok(Timestamp(i64::try_from(d.as_nanos()).context("the clock is out of range")?))
}

fn break_line(b: &StoredBreak) -> String {
    let gone = if b.found { "" } else { ", not found by the last run" };
    format!(
        "#{} [{}] {} {}: expected {}, registry {} (runs {}..{}{gone})\n",
        b.id, b.status, b.kind, b.key, b.expected, b.actual, b.first_run, b.last_run
    )
}

fn render_breaks(breaks: &[StoredBreak], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Summary => breaks.iter().map(break_line).collect(),
        Format::Json => serde_json::to_string_pretty(breaks)? + "\n",
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record([
                "id",
                "status",
                "type",
                "key",
                "expected",
                "actual",
                "note",
                "found",
                "first_run",
                "last_run",
            ])?;
            for b in breaks {
                w.write_record([
                    b.id.to_string().as_str(),
                    b.status.as_str(),
                    b.kind.as_str(),
                    &b.key,
                    &b.expected,
                    &b.actual,
                    &b.note,
                    if b.found { "true" } else { "false" },
                    &b.first_run.to_string(),
                    &b.last_run.to_string(),
                ])?;
            }
            String::from_utf8(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?
        }
    })
}

fn emit(text: &str, out: Option<&Path>) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).context("writing standard output")
        }
    }
}
