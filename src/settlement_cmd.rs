//! `cccx settlement ...`: delivery versus payment as a standalone process for clearing teams
//! (`settle`), and where the obligations stand (`status`).
//!
//! Only the settlement library's public API is used: the obligations are read through
//! [`Settlement`]'s own methods, never by SQL on its tables. `status` never writes to the
//! database it reports on: it takes a consistent copy (`VACUUM INTO`, through a read-only
//! connection) and opens the copy. Every time handed to the library comes from the system
//! clock here; the library reads none.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use cccx_settlement::audit::AuditLog;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig, TimeSource};
use cccx_settlement::settle::{
    Obligation, ObligationState, Settlement, SettlementConfig, SettlementError, TradeToSettle,
};
use cccx_settlement::{AccountId, Registry, SqliteRegistry, Timestamp};
use clap::{Subcommand, ValueEnum};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// The most trades one trades file may hold.
pub const TRADES_PER_FILE_MAX: usize = 1_000_000;
/// India Standard Time (UTC+05:30), in seconds: a session is the trade's calendar date in IST.
const IST_OFFSET_S: i32 = 5 * 3600 + 30 * 60;
/// Exit code of `settle` when every trade of the file is confirmed.
const EXIT_CONFIRMED: i32 = 0;
/// Exit code of `settle` when some trades of the file ended as breaks.
const EXIT_BREAKS: i32 = 1;
/// Exit code of `settle` on an error (nothing is known to be final).
const EXIT_ERROR: i32 = 2;

/// Settlement subcommands.
#[derive(Subcommand, Debug)]
pub enum SettlementCmd {
    /// Where obligations stand, per state, session and participant.
    ///
    /// Counts per state, per session (the trade's calendar date in IST, UTC+05:30) and per
    /// participant (as buyer and as seller), and whether the funds ledger balances.
    ///
    /// Opens the database read-only (a consistent copy is taken, so it may run while
    /// `settle` does). Filters combine; `--list` also prints each obligation: trade id,
    /// registry transfer id, seller -> buyer, quantity, price, fee, state, attempts and
    /// the reason of a break or of the last failed attempt. Exit code 1 if the ledger does
    /// not balance or the database cannot be read.
    Status(StatusArgs),
    /// Settle a file of trades against a registry, restartably.
    ///
    /// Reads the trades (JSON lines, one trade per line: {"trade_id", "instrument",
    /// "buyer", "seller", "qty", "price", "traded_at" (ns since the epoch, UTC)}); a bad
    /// line stops it with an error naming the file and line, before anything is recorded.
    /// Records them as obligations (a trade already recorded is skipped, so the same file
    /// can be given again), then works every open obligation of the database until none is
    /// open, retrying those without an answer after --retry-ms. Killed at any point and
    /// started again, it resumes: certificates never move twice. Prints a summary of the
    /// file's trades. Exit code 0: all confirmed; 1: some are breaks (listed, with the
    /// reason); 2: an error (run it again to resume).
    Settle(SettleArgs),
}

/// An obligation state, as named on the command line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Recorded, not sent to the registry yet.
    Created,
    /// Sent to the registry, the answer not recorded yet.
    Submitted,
    /// Delivered and paid.
    Confirmed,
    /// The last attempt got no answer.
    Failed,
    /// Queued for another attempt.
    Retried,
    /// A break to resolve.
    Broken,
}

impl StateArg {
    fn state(self) -> ObligationState {
        match self {
            StateArg::Created => ObligationState::Created,
            StateArg::Submitted => ObligationState::Submitted,
            StateArg::Confirmed => ObligationState::Confirmed,
            StateArg::Failed => ObligationState::Failed,
            StateArg::Retried => ObligationState::Retried,
            StateArg::Broken => ObligationState::Broken,
        }
    }
}

/// How `status` prints.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// One JSON object for scripts.
    Json,
}

/// `cccx settlement status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The settlement database (as written by `cccx settlement settle`).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Only obligations where this registry account is the buyer or the seller.
    #[arg(long, value_name = "ACCOUNT")]
    participant: Option<String>,
    /// Only obligations in this state.
    #[arg(long, value_enum, value_name = "STATE")]
    state: Option<StateArg>,
    /// Only trades of this session: their calendar date in IST (UTC+05:30).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_session)]
    session: Option<String>,
    /// Only trades of this instrument (its index in the exchange's configuration).
    #[arg(long, value_name = "ID")]
    instrument: Option<u32>,
    /// How to print.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also print each obligation.
    #[arg(long)]
    list: bool,
}

/// `cccx settlement settle`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("registry").required(true).args(["registry_url", "registry_db"]))]
pub struct SettleArgs {
    /// The settlement database (created if missing).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// The trades to settle: JSON lines, one trade per line.
    #[arg(long, value_name = "FILE.jsonl")]
    trades: PathBuf,
    /// A registry service (`cccx registry serve`), such as http://127.0.0.1:7070. It dates
    /// changes with its own clock.
    #[arg(long, value_name = "URL")]
    registry_url: Option<String>,
    /// An embedded registry: its SQLite database, which must exist.
    #[arg(long, value_name = "FILE")]
    registry_db: Option<PathBuf>,
    /// The fee charged to each side, in basis points of the trade's value (rounded down).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    fee_bps: u32,
    /// Attempts without an answer before the registry is asked what became of a transfer
    /// (then it is confirmed, or broken, or asked again next round if the registry cannot say).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    max_attempts: u32,
    /// Obligations per registry batch (one request proposes a batch, one posts it).
    #[arg(long, default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    chunk: u64,
    /// Also append every obligation, state change and registry answer to this hash-chained
    /// audit trail (JSON lines; check it with `cccx audit verify`).
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// The pause before another round over the obligations still open.
    #[arg(long, default_value_t = 1_000, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    retry_ms: u64,
    /// Rounds before giving up while obligations stay open (exit code 2; run again to resume).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rounds_max: u32,
}

/// Runs a settlement subcommand. `settle` ends the process with its own exit code.
pub fn run(cmd: SettlementCmd) -> anyhow::Result<()> {
    match cmd {
        SettlementCmd::Status(args) => status(&args),
        SettlementCmd::Settle(args) => {
            let code = settle(&args).unwrap_or_else(|e| {
                eprintln!("cccx: {e:#}");
                EXIT_ERROR
            });
            let _ = std::io::stdout().flush();
            std::process::exit(code)
        }
    }
}

fn parse_session(text: &str) -> Result<String, String> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shaped =
        b.len() == 10 && b[4] == b'-' && b[7] == b'-' && digits(0..4) && digits(5..7) && digits(8..10);
    let valid = shaped && {
        let (y, m, d) =
            (text[0..4].parse().unwrap_or(0), text[5..7].parse().unwrap_or(0), text[8..10].parse());
        time::Month::try_from(m)
            .ok()
            .zip(d.ok())
            .is_some_and(|(m, d)| time::Date::from_calendar_date(y, m, d).is_ok())
    };
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a date YYYY-MM-DD"))
    }
}

/// The session of a trade: its calendar date in IST.
fn session_of(at: Timestamp) -> String {
    let utc = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let offset = time::UtcOffset::from_whole_seconds(IST_OFFSET_S).unwrap_or(time::UtcOffset::UTC);
    let date = utc.to_offset(offset).date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

// ---------------------------------------------------------------------------------------------
// status

/// A consistent copy of a settlement database, opened through the library (the copy is
/// removed when this is dropped).
struct Snapshot {
    settlement: Settlement,
    _dir: tempfile::TempDir,
}

/// Copies the database through a read-only connection, after checking that it is one.
fn open_snapshot(db: &Path) -> anyhow::Result<Snapshot> {
    let name = db.display();
    let meta =
        std::fs::metadata(db).with_context(|| format!("cannot open the settlement database {name}"))?;
    if !meta.is_file() {
        bail!("{name} is not a settlement database (not a file)");
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags)
        .with_context(|| format!("cannot open the settlement database {name}"))?;
    // The library's schema-version table marks a settlement database.
    let marked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'settlement_schema'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| anyhow!("{name} is not a settlement database ({e})"))?;
    if marked == 0 {
        bail!("{name} is not a settlement database (no settlement schema in it)");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory for the snapshot")?;
    let copy = dir.path().join("snapshot.db");
    let target = copy.to_str().ok_or_else(|| anyhow!("the temporary directory's path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("reading the settlement database {name}"))?;
    drop(conn);
    let settlement = Settlement::open(&copy, SettlementConfig::default())
        .with_context(|| format!("reading the settlement database {name}"))?;
    Ok(Snapshot { settlement, _dir: dir })
}

/// What `status` selects.
struct Filter<'a> {
    participant: Option<&'a str>,
    state: Option<ObligationState>,
    session: Option<&'a str>,
    instrument: Option<u32>,
}

impl Filter<'_> {
    fn keeps(&self, o: &Obligation) -> bool {
        let t = &o.trade;
        self.participant.is_none_or(|p| t.buyer.as_str() == p || t.seller.as_str() == p)
            && self.state.is_none_or(|s| o.state == s)
            && self.session.is_none_or(|s| session_of(t.traded_at) == s)
            && self.instrument.is_none_or(|i| t.instrument.0 == i)
    }
}

/// A participant's obligations.
#[derive(Default, Serialize)]
struct Sides {
    buyer: u64,
    seller: u64,
}

/// The funds ledger check.
#[derive(Serialize)]
struct LedgerCheck {
    balanced: bool,
    problem: Option<String>,
}

/// One obligation as listed.
#[derive(Serialize)]
struct Row {
    trade_id: String,
    transfer_id: String,
    instrument: u32,
    seller: String,
    buyer: String,
    qty: u64,
    price: i64,
    fee: i64,
    state: &'static str,
    attempts: u32,
    reason: Option<String>,
    session: String,
    traded_at: String,
    updated_at: String,
}

/// What `status` prints.
#[derive(Serialize)]
struct StatusReport {
    db: String,
    /// Obligations selected by the filters.
    obligations: u64,
    /// Of those, still open (not confirmed, not broken).
    open: u64,
    states: BTreeMap<&'static str, u64>,
    sessions: BTreeMap<String, u64>,
    participants: BTreeMap<String, Sides>,
    /// Over the whole ledger, whatever the filters.
    ledger: LedgerCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    list: Option<Vec<Row>>,
}

const STATES: [ObligationState; 6] = [
    ObligationState::Created,
    ObligationState::Submitted,
    ObligationState::Failed,
    ObligationState::Retried,
    ObligationState::Confirmed,
    ObligationState::Broken,
];

fn status(a: &StatusArgs) -> anyhow::Result<()> {
    let snapshot = open_snapshot(&a.db)?;
    let s = &snapshot.settlement;
    let filter = Filter {
        participant: a.participant.as_deref(),
        state: a.state.map(StateArg::state),
        session: a.session.as_deref(),
        instrument: a.instrument,
    };
    let all = s.obligations().with_context(|| format!("reading {}", a.db.display()))?;
    let mut report = StatusReport {
        db: a.db.display().to_string(),
        obligations: 0,
        open: 0,
        states: STATES.iter().map(|s| (s.as_str(), 0)).collect(),
        sessions: BTreeMap::new(),
        participants: BTreeMap::new(),
        ledger: match s.check() {
            Ok(()) => LedgerCheck { balanced: true, problem: None },
            Err(problem) => LedgerCheck { balanced: false, problem: Some(problem) },
        },
        list: a.list.then(Vec::new),
    };
    for o in all.iter().filter(|o| filter.keeps(o)) {
        count(&mut report, o);
    }
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Table => write_table(&mut out, &report)?,
    }
    out.flush()?;
    match report.ledger.problem {
        Some(problem) => bail!("{}: the funds ledger does not check: {problem}", a.db.display()),
        None => Ok(()),
    }
}

fn count(report: &mut StatusReport, o: &Obligation) {
    let t = &o.trade;
    let session = session_of(t.traded_at);
    report.obligations += 1;
    report.open += u64::from(o.state.is_open());
    *report.states.entry(o.state.as_str()).or_default() += 1;
    *report.sessions.entry(session.clone()).or_default() += 1;
    report.participants.entry(t.buyer.to_string()).or_default().buyer += 1;
    report.participants.entry(t.seller.to_string()).or_default().seller += 1;
    if let Some(list) = report.list.as_mut() {
        list.push(Row {
            trade_id: t.trade_id.clone(),
            transfer_id: o.transfer_id().map(|id| id.to_string()).unwrap_or_else(|e| format!("({e})")),
            instrument: t.instrument.0,
            seller: t.seller.to_string(),
            buyer: t.buyer.to_string(),
            qty: t.qty,
            price: t.price,
            fee: o.fee,
            state: o.state.as_str(),
            attempts: o.attempts,
            reason: o.reason.clone(),
            session,
            traded_at: t.traded_at.to_rfc3339(),
            updated_at: o.updated_at.to_rfc3339(),
        });
    }
}

fn write_table(out: &mut impl Write, r: &StatusReport) -> std::io::Result<()> {
    writeln!(out, "settlement database {}", r.db)?;
    writeln!(out, "obligations {} ({} open)", r.obligations, r.open)?;
    writeln!(out, "\nby state")?;
    for state in STATES {
        writeln!(out, "  {:<10} {:>8}", state.as_str(), r.states.get(state.as_str()).copied().unwrap_or(0))?;
    }
    writeln!(out, "\nby session (IST)")?;
    for (session, n) in &r.sessions {
        writeln!(out, "  {session:<10} {n:>8}")?;
    }
    let width = r.participants.keys().map(String::len).max().unwrap_or(0).max("participant".len());
    writeln!(out, "\n  {:<width$} {:>8} {:>8}", "participant", "buyer", "seller")?;
    for (account, sides) in &r.participants {
        writeln!(out, "  {account:<width$} {:>8} {:>8}", sides.buyer, sides.seller)?;
    }
    match &r.ledger.problem {
        None => writeln!(out, "\nfunds ledger balanced")?,
        Some(problem) => writeln!(out, "\nfunds ledger DOES NOT CHECK: {problem}")?,
    }
    if let Some(rows) = &r.list {
        write_rows(out, rows)?;
    }
    Ok(())
}

fn write_rows(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let w = |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let (wt, wx) = (w(|r| r.trade_id.len(), "trade"), w(|r| r.transfer_id.len(), "transfer"));
    let wp = w(|r| r.seller.len() + r.buyer.len() + 4, "seller -> buyer");
    writeln!(
        out,
        "\n{:<wt$} {:<wx$} {:<wp$} {:>8} {:>10} {:>8} {:<9} {:>8}  reason",
        "trade", "transfer", "seller -> buyer", "qty", "price", "fee", "state", "attempts"
    )?;
    for r in rows {
        let parties = format!("{} -> {}", r.seller, r.buyer);
        let line = format!(
            "{:<wt$} {:<wx$} {parties:<wp$} {:>8} {:>10} {:>8} {:<9} {:>8}  {}",
            r.trade_id,
            r.transfer_id,
            r.qty,
            r.price,
            r.fee,
            r.state,
            r.attempts,
            r.reason.as_deref().unwrap_or("")
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// settle

/// The trades of a file, and the line each came from.
struct TradesFile {
    path: PathBuf,
    trades: Vec<TradeToSettle>,
    /// Per trade id: its line, and its index in `trades`.
    lines: BTreeMap<String, (usize, usize)>,
}

impl TradesFile {
    /// Reads and checks every line before anything is recorded.
    fn read(path: &Path) -> anyhow::Result<TradesFile> {
        let name = path.display();
        let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
        let mut out = TradesFile { path: path.to_path_buf(), trades: Vec::new(), lines: BTreeMap::new() };
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let line = line.with_context(|| format!("{name}:{n}: cannot read the line"))?;
            if line.trim().is_empty() {
                continue;
            }
            if out.trades.len() >= TRADES_PER_FILE_MAX {
                bail!("{name}:{n}: more than {TRADES_PER_FILE_MAX} trades in one file");
            }
            let trade: TradeToSettle =
                serde_json::from_str(&line).map_err(|e| anyhow!("{name}:{n}: not a trade: {e}"))?;
            for account in [&trade.buyer, &trade.seller] {
                AccountId::new(account.as_str()).map_err(|e| anyhow!("{name}:{n}: {e}"))?;
            }
            match out.lines.get(&trade.trade_id) {
                // The same trade twice: it settles once.
                Some(&(_, index)) if out.trades[index] == trade => {}
                Some(&(first, _)) => {
                    bail!("{name}:{n}: trade {} was given on line {first} with other fields", trade.trade_id)
                }
                None => {
                    out.lines.insert(trade.trade_id.clone(), (n, out.trades.len()));
                    out.trades.push(trade);
                }
            }
        }
        Ok(out)
    }

    /// A settlement error, with the file and line of the trade it names.
    fn locate(&self, e: SettlementError) -> anyhow::Error {
        let name = self.path.display();
        match &e {
            SettlementError::BadTrade { trade_id, .. } => match self.lines.get(trade_id) {
                Some((n, _)) => anyhow!("{name}:{n}: {e}"),
                None => anyhow!("{name}: {e}"),
            },
            _ => anyhow!("recording the trades of {name}: {e}"),
        }
    }
}

/// The system clock, never going backwards within the process (the registry refuses a change
/// dated before its last one).
#[derive(Default)]
struct Clock {
    last_ns: i64,
}

impl Clock {
    fn now(&mut self) -> Timestamp {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        self.last_ns = self.last_ns.max(ns);
        Timestamp(self.last_ns)
    }
}

fn open_registry(a: &SettleArgs) -> anyhow::Result<Box<dyn Registry>> {
    if let Some(url) = &a.registry_url {
        // Several clients may share a registry service: let its clock date the changes.
        let config = HttpRegistryConfig { time_source: TimeSource::Service, ..Default::default() };
        let client = HttpRegistry::new(url, config).with_context(|| format!("registry service {url}"))?;
        return Ok(Box::new(client));
    }
    let path = a.registry_db.as_deref().ok_or_else(|| anyhow!("give --registry-url or --registry-db"))?;
    if !path.is_file() {
        bail!("the registry database {} does not exist", path.display());
    }
    let registry = SqliteRegistry::open(path)
        .with_context(|| format!("opening the registry database {}", path.display()))?;
    Ok(Box::new(registry))
}

fn settle(a: &SettleArgs) -> anyhow::Result<i32> {
    let file = TradesFile::read(&a.trades)?;
    let mut registry = open_registry(a)?;
    let config = SettlementConfig { fee_bps: a.fee_bps, max_attempts: a.max_attempts };
    let db = a.db.display();
    let mut settlement = Settlement::open(&a.db, config)
        .with_context(|| format!("opening the settlement database {db}"))?
        .with_chunk(a.chunk as usize);
    if let Some(path) = &a.audit {
        let log =
            AuditLog::open(path).with_context(|| format!("opening the audit trail {}", path.display()))?;
        settlement = settlement.with_audit(log);
    }
    let mut clock = Clock::default();
    let added = settlement.add_trades(&file.trades, clock.now()).map_err(|e| file.locate(e))?;
    eprintln!("recorded {added} new trades of {} in {}", file.trades.len(), a.trades.display());
    let rounds = drive(&mut settlement, registry.as_mut(), a, &mut clock)?;
    summarize(&settlement, &file, rounds)
}

/// Rounds over the open obligations until none is open; returns how many it took.
fn drive(
    s: &mut Settlement,
    registry: &mut dyn Registry,
    a: &SettleArgs,
    clock: &mut Clock,
) -> anyhow::Result<u32> {
    let db = a.db.display();
    for round in 1..=a.rounds_max {
        let report = s.run(registry, clock.now()).with_context(|| format!("settling in {db}"))?;
        let open: u64 = s
            .counts()
            .with_context(|| format!("reading {db}"))?
            .iter()
            .filter(|(state, _)| state.is_open())
            .map(|(_, n)| n)
            .sum();
        eprintln!(
            "round {round}: {} confirmed, {} broken, {} without an answer; {open} open",
            report.confirmed, report.broken, report.failed
        );
        if open == 0 {
            return Ok(round);
        }
        if round < a.rounds_max {
            std::thread::sleep(Duration::from_millis(a.retry_ms));
        }
    }
    bail!(
        "obligations still open after {} rounds (the registry does not answer?); run again to resume",
        a.rounds_max
    )
}

/// Prints what became of the file's trades; the exit code.
fn summarize(s: &Settlement, file: &TradesFile, rounds: u32) -> anyhow::Result<i32> {
    let mut confirmed = 0usize;
    let mut broken = Vec::new();
    for t in &file.trades {
        let o = s
            .obligation(&t.trade_id)
            .with_context(|| format!("reading trade {}", t.trade_id))?
            .ok_or_else(|| anyhow!("trade {} is not recorded: this is a bug", t.trade_id))?;
        match o.state {
            ObligationState::Confirmed => confirmed += 1,
            ObligationState::Broken => broken.push(o),
            state => bail!("trade {} is still {}: this is a bug", t.trade_id, state.as_str()),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} trades, {confirmed} confirmed, {} broken ({rounds} rounds)",
        file.path.display(),
        file.trades.len(),
        broken.len()
    )?;
    for o in &broken {
        let t = &o.trade;
        let reason = o.reason.as_deref().unwrap_or("no reason recorded");
        writeln!(
            out,
            "broken {} {} -> {} qty {} price {}: {reason}",
            t.trade_id, t.seller, t.buyer, t.qty, t.price
        )?;
    }
    out.flush()?;
    Ok(if broken.is_empty() { EXIT_CONFIRMED } else { EXIT_BREAKS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_ist_calendar_dates() {
        let at = |text: &str| Timestamp::parse_rfc3339(text).unwrap();
        assert_eq!(session_of(at("2026-05-01T18:29:59Z")), "2026-05-01");
        assert_eq!(session_of(at("2026-05-01T18:30:00Z")), "2026-05-02");
        assert_eq!(session_of(at("2026-04-30T20:00:00+05:30")), "2026-04-30");
    }

    #[test]
    fn session_filters_must_be_dates() {
        assert_eq!(parse_session("2026-05-01"), Ok("2026-05-01".to_string()));
        for bad in ["2026-5-01", "2026-02-30", "2026-13-01", "yesterday", "2026-05-01x", "+026-05-01"] {
            assert!(parse_session(bad).is_err(), "{bad}");
        }
    }
}
