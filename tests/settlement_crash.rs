//! Process-level crash test of settlement: `cccx settlement settle` runs against `cccx registry
//! serve` with faults switched on (latency, 503s, answers lost after the work was done,
//! requests applied twice) and is killed with SIGKILL at seeded random moments while it submits
//! transfers, then restarted, until it finishes. Afterwards every trade is confirmed exactly
//! once or is a break with its reason, and the registry's ledger agrees with the exchange's:
//! each confirmed trade's transfer moved its certificates once, no other transfer moved any,
//! every account holds its opening holdings plus its confirmed movements, and the funds ledger
//! balances.
//!
//! The seed is printed; `CCCX_CRASH_SEED=N` repeats a run's trades, faults and kill moments.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use cccx_engine::types::InstrumentId;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
use cccx_settlement::settle::{ObligationState, Settlement, SettlementConfig, TradeToSettle};
use cccx_settlement::{
    AccountId, EntryKind, IssueUnits, OpenAccount, Registry, RequestId, Timestamp, TransferStatus, Vintage,
};

const CCC: InstrumentId = InstrumentId(2);
const TRADES: usize = 300;
const KILLS_MIN: usize = 5;
const RUNS_MAX: usize = 40;
/// Opening holdings: S3 and X2 are short for what they sell, so some trades must break.
const OPENING: [(&str, u64); 8] =
    [("S1", 4_000), ("S2", 3_000), ("S3", 150), ("X1", 800), ("X2", 0), ("B1", 0), ("B2", 0), ("B3", 0)];
const SELLERS: [&str; 5] = ["S1", "S2", "S3", "X1", "X2"];
const BUYERS: [&str; 5] = ["B1", "B2", "B3", "X1", "X2"];

/// A small deterministic random source (splitmix64), so that any failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// The registry process and its base URL; killed if the test fails before stopping it.
struct Service {
    child: Child,
    url: String,
    /// Kept open, so the process can still write to its standard error.
    _stderr: BufReader<ChildStderr>,
}

impl Service {
    fn start(db: &Path, faults: &[String]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cccx"))
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(faults)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cccx registry serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("first line");
        let url = line.trim().strip_prefix("registry listening on ").expect("listening line").to_string();
        Service { child, url, _stderr: stderr }
    }

    /// SIGTERM, then the exit status must be success.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn acct(s: &str) -> AccountId {
    AccountId::new(s).expect("account")
}

fn id(s: &str) -> RequestId {
    RequestId::new(s).expect("id")
}

/// Opens the accounts and issues the opening holdings, through the (faulty) service.
fn open_accounts(r: &mut HttpRegistry) {
    for (n, (a, _)) in OPENING.iter().enumerate() {
        let open = OpenAccount { id: id(&format!("open-{a}")), account: acct(a) };
        r.open_account(&open, Timestamp(1 + n as i64)).expect("open account");
    }
    for (n, (a, qty)) in OPENING.iter().enumerate().filter(|(_, (_, q))| *q > 0) {
        let issue = IssueUnits {
            id: id(&format!("issue-{a}")),
            account: acct(a),
            instrument: CCC,
            vintage: Vintage(2025),
            quantity: *qty,
        };
        r.issue(&issue, Timestamp(100 + n as i64)).expect("issue");
    }
}

/// Random trades over two IST sessions, and one from an account the registry does not know.
fn trades(rng: &mut Rng) -> Vec<TradeToSettle> {
    let day0 = Timestamp::parse_rfc3339("2026-05-04T10:00:00+05:30").expect("time").0;
    let mut out = Vec::new();
    for n in 0..TRADES {
        let seller = SELLERS[rng.below(SELLERS.len() as u64) as usize];
        let buyer = loop {
            let b = BUYERS[rng.below(BUYERS.len() as u64) as usize];
            if b != seller {
                break b;
            }
        };
        out.push(TradeToSettle {
            trade_id: format!("T{n:04}"),
            instrument: CCC,
            buyer: acct(buyer),
            seller: acct(seller),
            qty: 1 + rng.below(40),
            price: 900 + rng.below(200) as i64,
            traded_at: Timestamp(day0 + (n as i64 / 150) * 86_400_000_000_000 + n as i64 * 1_000_000_000),
        });
    }
    let mut ghost = out[0].clone();
    ghost.trade_id = "T-GHOST".into();
    ghost.seller = acct("NOBODY");
    out.push(ghost);
    out
}

fn settle_command(dir: &Path, url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cccx"));
    cmd.args(["settlement", "settle", "--registry-url", url, "--fee-bps", "5", "--max-attempts", "3"])
        // Small batches: many registry requests, so that kills land between them.
        .args(["--retry-ms", "20", "--chunk", "2"])
        .arg("--db")
        .arg(dir.join("settlement.db"))
        .arg("--trades")
        .arg(dir.join("trades.jsonl"))
        .arg("--audit")
        .arg(dir.join("audit.jsonl"));
    cmd
}

/// `cccx settlement status --format json` on the database (read-only; after a kill, too).
fn status(dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cccx"))
        .args(["settlement", "status", "--format", "json", "--db"])
        .arg(dir.join("settlement.db"))
        .output()
        .expect("status runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status failed (the funds ledger does not check?): {stderr}");
    serde_json::from_slice(&out.stdout).expect("status prints JSON")
}

/// Starts `settle`, waits until it has recorded the trades and is submitting, lets it run for
/// about `run_ms` (checking `status` halfway) and kills it. Returns false if it ended by itself
/// first.
fn run_and_kill(dir: &Path, url: &str, run_ms: u64) -> bool {
    let mut child = settle_command(dir, url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cccx settlement settle");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.starts_with("recorded ") {
        line.clear();
        if stderr.read_line(&mut line).expect("read stderr") == 0 {
            let status = child.wait().expect("wait");
            assert!(status.code() == Some(1) || status.success(), "settle failed: {status}");
            return false;
        }
    }
    std::thread::sleep(Duration::from_millis(run_ms / 2));
    // Status reads a consistent copy while settle writes: the funds ledger checks mid-flight.
    status(dir);
    std::thread::sleep(Duration::from_millis(run_ms / 2));
    if child.try_wait().expect("try_wait").is_some() {
        return false;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    true
}

/// Units of each transfer credited and debited, over every account's whole statement.
fn moved_by_transfer(r: &HttpRegistry, accounts: &[String]) -> BTreeMap<String, (u64, u64)> {
    let mut moved: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for a in accounts {
        let statement = r.statement(&acct(a), Timestamp(0), Timestamp(i64::MAX)).expect("statement");
        for line in statement.lines {
            let (Some(transfer), qty) = (line.transfer, line.block.quantity()) else { continue };
            let entry = moved.entry(transfer.to_string()).or_default();
            match line.kind {
                EntryKind::Credited => entry.0 += qty,
                EntryKind::Debited => entry.1 += qty,
                _ => {}
            }
        }
    }
    moved
}

#[test]
fn settlement_killed_at_random_settles_every_trade_once_against_a_faulty_registry() {
    let seed = std::env::var("CCCX_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("seed {seed} (CCCX_CRASH_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let faults: Vec<String> = [
        "--fault-seed",
        &seed.to_string(),
        "--fault-latency-ms",
        "2",
        "--fault-jitter-ms",
        "4",
        "--fault-error-pct",
        "10",
        "--fault-drop-pct",
        "10",
        "--fault-drop-mode",
        "close",
        "--fault-duplicate-pct",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let service = Service::start(&dir.path().join("registry.db"), &faults);
    let config =
        HttpRegistryConfig { attempts_max: 40, backoff_ms: 1, backoff_max_ms: 20, ..Default::default() };
    let mut registry = HttpRegistry::new(&service.url, config).expect("client");
    open_accounts(&mut registry);
    let trades = trades(&mut rng);
    let lines: Vec<String> = trades.iter().map(|t| serde_json::to_string(t).expect("json")).collect();
    std::fs::write(dir.path().join("trades.jsonl"), lines.join("\n") + "\n").expect("write trades");

    // Kill it while it submits, at least KILLS_MIN times, checking the ledger after each kill.
    let mut kills = 0;
    for _ in 0..RUNS_MAX {
        if kills >= KILLS_MIN {
            break;
        }
        // Short enough that even a fast machine is still submitting after the kills: every
        // request takes 2 to 6 ms and carries 2 obligations (`--chunk 2`), so the file takes
        // over a second.
        let run_ms = 20 + rng.below(200);
        if !run_and_kill(dir.path(), &service.url, run_ms) {
            break;
        }
        let after = status(dir.path());
        if after["open"].as_u64().expect("open") > 0 {
            kills += 1;
        }
    }
    assert!(kills >= KILLS_MIN, "only {kills} kills landed while it was submitting (seed {seed})");

    // Then let it finish.
    let mut child = settle_command(dir.path(), &service.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cccx settlement settle");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "settle did not finish in time (seed {seed})");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    let code = child.wait().expect("wait").code();
    assert_eq!(code, Some(1), "some trades break, so the exit code is 1 (seed {seed}): {stderr}\n{stdout}");

    check_outcome(&registry, &service.url, dir.path(), &trades, &stdout, seed);
    eprintln!("{kills} kills, {:?} in all", started.elapsed());
    service.stop();
}

/// Now, in nanoseconds since the epoch.
fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as i64
}

/// The exchange's ledger and the registry's agree; every trade is final.
fn check_outcome(
    registry: &HttpRegistry,
    url: &str,
    dir: &Path,
    trades: &[TradeToSettle],
    stdout: &str,
    seed: u64,
) {
    let s = Settlement::open(dir.join("settlement.db"), SettlementConfig::default()).expect("open");
    s.check().unwrap_or_else(|e| panic!("the funds ledger does not check (seed {seed}): {e}"));
    let mut confirmed = Vec::new();
    let mut broken = 0;
    for t in trades {
        let o =
            s.obligation(&t.trade_id).expect("read").unwrap_or_else(|| panic!("{} is missing", t.trade_id));
        assert_eq!(&o.trade, t);
        match o.state {
            ObligationState::Confirmed => confirmed.push(t),
            ObligationState::Broken => {
                assert!(
                    o.reason.as_deref().is_some_and(|r| !r.is_empty()),
                    "{}: a break without a reason",
                    t.trade_id
                );
                assert!(stdout.contains(&format!("broken {} ", t.trade_id)), "{} not reported", t.trade_id);
                broken += 1;
            }
            state => panic!("{} is still {state:?} (seed {seed})", t.trade_id),
        }
    }
    assert!(!confirmed.is_empty() && broken > 0, "{} confirmed, {broken} broken", confirmed.len());

    // Holdings: the opening holdings plus the confirmed movements, nothing reserved.
    let mut expected: BTreeMap<String, i64> =
        OPENING.iter().map(|(a, q)| (a.to_string(), *q as i64)).collect();
    for t in &confirmed {
        *expected.entry(t.seller.to_string()).or_default() -= t.qty as i64;
        *expected.entry(t.buyer.to_string()).or_default() += t.qty as i64;
    }
    for (a, want) in &expected {
        let total = registry.holdings(&acct(a), CCC, None).expect("holdings").total;
        assert_eq!(
            total.held as i64, *want,
            "{a} holds {} units, the exchange says {want} (seed {seed})",
            total.held
        );
        assert_eq!(total.reserved, 0, "{a} has units still reserved (seed {seed})");
    }

    // Every movement belongs to a confirmed trade's transfer, which moved its quantity once.
    let accounts: Vec<String> = expected.keys().cloned().collect();
    let mut moved = moved_by_transfer(registry, &accounts);
    for t in trades {
        let transfer_id = format!("{}:p", t.trade_id);
        let was_moved = moved.remove(&transfer_id).unwrap_or((0, 0));
        let transfer = registry.transfer(&id(&transfer_id)).expect("transfer");
        if confirmed.contains(&t) {
            assert_eq!(was_moved, (t.qty, t.qty), "{transfer_id} moved {was_moved:?} (seed {seed})");
            let transfer = transfer.unwrap_or_else(|| panic!("{transfer_id} is confirmed but unknown"));
            assert_eq!(transfer.status, TransferStatus::Completed, "{transfer_id}");
            assert_eq!((&transfer.from, &transfer.to, transfer.quantity), (&t.seller, &t.buyer, t.qty));
        } else {
            assert_eq!(was_moved, (0, 0), "{transfer_id} is broken but moved units (seed {seed})");
            let status = transfer.map(|t| t.status);
            assert!(status != Some(TransferStatus::Completed), "{transfer_id} is broken but {status:?}");
        }
    }
    assert!(moved.is_empty(), "transfers that belong to no trade moved units: {moved:?} (seed {seed})");

    let report = status(dir);
    assert_eq!(report["open"], 0);
    assert_eq!(report["states"]["confirmed"], confirmed.len() as u64);
    assert_eq!(report["states"]["broken"], broken as u64);
    assert_eq!(report["ledger"]["balanced"], true);

    // And `cccx reconcile` (three phases, through the still faulty service) finds no break.
    let out = Command::new(env!("CARGO_BIN_EXE_cccx"))
        .args(["reconcile", "run", "--format", "json", "--from", "0", "--as-of"])
        .arg(now_ns().to_string())
        .arg("--registry-url")
        .arg(url)
        .arg("--settlement-db")
        .arg(dir.join("settlement.db"))
        .output()
        .expect("cccx reconcile runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "reconciliation found breaks or failed (seed {seed}): {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&text).expect("reconcile prints JSON");
    assert_eq!(json["matched"], confirmed.len() as u64, "{text}");
}
