//! `cccx demo`: a whole monthly CCC session end to end, on embedded defaults.
//!
//! 1. A reference registry service (its own SQLite database, over HTTP on 127.0.0.1) with
//!    accounts and holdings; one seller moved most of its certificates away outside the
//!    exchange after its deposit was recorded, so the holdings check will find it short.
//! 2. The exchange (`cccx serve`'s server, in this process, FIX and HTTP on free ports of
//!    127.0.0.1) settling against that registry.
//! 3. The operator opens the bid window (REST); three obligated entities and three sellers log
//!    on over FIX 4.4 and send their bids.
//! 4. The window closes; the holdings check asks the registry for each seller's available units
//!    and removes the short seller's bids.
//! 5. The uncross: the market clearing price and volume, fills per participant (as the FIX
//!    sessions received them).
//! 6. Settlement: every trade becomes a registry transfer (delivery versus payment).
//! 7. Reconciliation of the exchange's view against the registry's, as of one timestamp.
//!
//! It prints a report and exits 0 when the session settled without breaks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cccx_engine::types::InstrumentId;
use cccx_gateway::config::{Config, AUDIT_FILE, SETTLEMENT_FILE};
use cccx_gateway::server;
use cccx_settlement::audit::AuditLog;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
use cccx_settlement::faults::Faults;
use cccx_settlement::reconcile::{reconcile, render, BreakStore, ExchangeView, RegistryView};
use cccx_settlement::service::RegistryServer;
use cccx_settlement::settle::{Settlement, SettlementConfig};
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RequestId, SqliteRegistry,
    Timestamp, Vintage,
};
use serde_json::{json, Value};

use crate::fixclient::{field, FixSession};

/// The auction instrument of the demo session.
pub const SYMBOL: &str = "CCC-2026-C";
const VINTAGE: Vintage = Vintage(2026);
/// The auction instrument's id (the first and only instrument of the demo configuration).
const INSTRUMENT: InstrumentId = InstrumentId(0);
const OUTSIDE_ACCOUNT: &str = "IN-CCC-9001";

/// One participant of the demo.
struct Member {
    id: u32,
    name: &'static str,
    comp_id: &'static str,
    account: &'static str,
    /// Certificates deposited at the exchange (and issued at the registry).
    holdings: u64,
    /// Certificates moved away at the registry, outside the exchange, before the session.
    moved_away: u64,
    /// Bids: (buy, qty, limit price).
    bids: &'static [(bool, u64, i64)],
}

const MEMBERS: &[Member] = &[
    Member {
        id: 1,
        name: "Aluminium Co (obligated)",
        comp_id: "ALUCO",
        account: "IN-CCC-0001",
        holdings: 0,
        moved_away: 0,
        bids: &[(true, 8_000, 1_250), (true, 6_000, 1_150)],
    },
    Member {
        id: 2,
        name: "Cement Co (obligated)",
        comp_id: "CEMCO",
        account: "IN-CCC-0002",
        holdings: 0,
        moved_away: 0,
        bids: &[(true, 10_000, 1_200)],
    },
    Member {
        id: 3,
        name: "Fertiliser Co (obligated)",
        comp_id: "FERTCO",
        account: "IN-CCC-0003",
        holdings: 0,
        moved_away: 0,
        bids: &[(true, 5_000, 1_300), (true, 4_000, 1_100)],
    },
    Member {
        id: 4,
        name: "Steel Co (surplus)",
        comp_id: "STEELCO",
        account: "IN-CCC-0004",
        holdings: 50_000,
        moved_away: 0,
        bids: &[(false, 12_000, 1_050), (false, 8_000, 1_180)],
    },
    Member {
        id: 5,
        name: "Paper Co (surplus)",
        comp_id: "PAPERCO",
        account: "IN-CCC-0005",
        holdings: 20_000,
        moved_away: 15_000,
        bids: &[(false, 12_000, 1_000)],
    },
    Member {
        id: 6,
        name: "Textile Co (surplus)",
        comp_id: "TEXCO",
        account: "IN-CCC-0006",
        holdings: 15_000,
        moved_away: 0,
        bids: &[(false, 6_000, 1_150), (false, 4_000, 1_220)],
    },
];

/// Options of `cccx demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the registry's and the exchange's data go (a temporary directory if `None`).
    pub data_dir: Option<PathBuf>,
}

fn now() -> Timestamp {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    Timestamp(ns)
}

fn req(id: String) -> anyhow::Result<RequestId> {
    Ok(RequestId::new(id)?)
}

fn acct(id: &str) -> anyhow::Result<AccountId> {
    Ok(AccountId::new(id)?)
}

/// The exchange's configuration for the demo: one auction instrument with a manual session
/// (the operator moves the phases), the members above, settlement against `registry_url`.
fn exchange_config(data_dir: &Path, registry_url: &str) -> anyhow::Result<Config> {
    let mut text = format!(
        r#"
[server]
data_dir = {data_dir:?}
http = "127.0.0.1:0"
fix = "127.0.0.1:0"
durability = "batch"
risk = true

[settlement]
registry_url = "{registry_url}"
fee_bps = 10

[[instrument]]
symbol = "{SYMBOL}"
segment = "compliance"
mode = "auction"
price_floor = 100
price_ceiling = 10000
max_order_qty = 1000000

[[operator]]
name = "ops"
"#,
        data_dir = data_dir.display().to_string()
    );
    for m in MEMBERS {
        let funds = if m.bids.iter().any(|b| b.0) { 100_000_000 } else { 1_000_000 };
        text.push_str(&format!(
            "\n[[participant]]\nid = {}\nname = {:?}\ncomp_id = {:?}\nregistry_account = {:?}\ninitial_funds = {funds}\n",
            m.id, m.name, m.comp_id, m.account
        ));
        if m.holdings > 0 {
            text.push_str(&format!("initial_holdings = {{ {SYMBOL:?} = {} }}\n", m.holdings));
        }
    }
    Ok(Config::parse(&text, Path::new("<demo>"))?)
}

/// Opens the members' accounts at the registry, issues their certificates, and moves the
/// short seller's units away (an off-exchange transfer).
fn seed_registry(registry: &mut SqliteRegistry, instrument: InstrumentId) -> anyhow::Result<()> {
    let mut accounts: Vec<&str> = MEMBERS.iter().map(|m| m.account).collect();
    accounts.push(OUTSIDE_ACCOUNT);
    for a in accounts {
        registry.open_account(&OpenAccount { id: req(format!("open-{a}"))?, account: acct(a)? }, now())?;
    }
    for m in MEMBERS.iter().filter(|m| m.holdings > 0) {
        let issue = IssueUnits {
            id: req(format!("issue-{}", m.account))?,
            account: acct(m.account)?,
            instrument,
            vintage: VINTAGE,
            quantity: m.holdings,
        };
        registry.issue(&issue, now())?;
        if m.moved_away > 0 {
            let id = req(format!("otc-{}", m.account))?;
            let propose = ProposeTransfer {
                id: id.clone(),
                from: acct(m.account)?,
                to: acct(OUTSIDE_ACCOUNT)?,
                instrument,
                quantity: m.moved_away,
                vintage: None,
            };
            registry.propose(&propose, now())?;
            registry
                .post(&PostTransfer { id: req(format!("otc-{}-post", m.account))?, transfer: id }, now())?;
        }
    }
    Ok(())
}

/// A blocking REST client with the operator's key.
struct Rest {
    base: String,
    key: String,
    http: reqwest::blocking::Client,
}

impl Rest {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut rq = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let resp = rq.send().with_context(|| format!("REST {path}"))?;
        let status = resp.status();
        let text = resp.text()?;
        if !status.is_success() {
            bail!("REST {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None)
    }
    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body))
    }
}

/// Fills and reports one FIX session saw.
#[derive(Default)]
struct SessionLog {
    acknowledged: u64,
    rejected: Vec<String>,
    cancelled: u64,
    filled_qty: u64,
    filled_value: i128,
}

fn drain(session: &mut FixSession, log: &mut SessionLog, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    while let Some(m) = session.recv(deadline)? {
        if field(&m, "35") != Some("8") {
            continue;
        }
        match field(&m, "150") {
            Some("0") => log.acknowledged += 1,
            Some("8") => log.rejected.push(field(&m, "58").unwrap_or("rejected").to_string()),
            Some("4") | Some("C") => log.cancelled += 1,
            Some("F") => {
                let qty: u64 = field(&m, "32").and_then(|v| v.parse().ok()).unwrap_or(0);
                let px: i64 = field(&m, "31").and_then(|v| v.parse().ok()).unwrap_or(0);
                log.filled_qty += qty;
                log.filled_value += i128::from(px) * i128::from(qty);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs the demo; returns whether the session settled without breaks.
pub fn run(options: &DemoOptions) -> anyhow::Result<bool> {
    let temp;
    let dir = match &options.data_dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("{}: the demo needs an empty or new directory", d.display());
            }
            std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let exchange_dir = dir.join("exchange");
    // The registry, seeded, then served over HTTP.
    let instrument = INSTRUMENT;
    let mut registry = SqliteRegistry::open(dir.join("registry.sqlite"))?;
    seed_registry(&mut registry, instrument)?;
    let session_start = now();
    let registry_server =
        RegistryServer::start(registry, SocketAddr::from(([127, 0, 0, 1], 0)), Faults::default())?;
    println!("== cccx demo: a monthly {SYMBOL} call auction, end to end ==");
    println!("registry service: {} (data in {})", registry_server.url(), dir.display());
    let config = exchange_config(&exchange_dir, &registry_server.url())?;
    anyhow::ensure!(config.instrument_id(SYMBOL) == Some(instrument), "instrument numbering");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let running = runtime.block_on(server::start(config)).map_err(anyhow::Error::msg)?;
    let fix = running.fix.context("the FIX acceptor did not start")?;
    println!("exchange: FIX {fix}, HTTP http://{}", running.http);
    let ops_key = running.secrets.operators.get("ops").context("operator key")?.clone();
    let rest = Rest {
        base: format!("http://{}", running.http),
        key: ops_key,
        http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build()?,
    };
    let settled = session(&running, &rest, fix, &registry_server.url());
    runtime.block_on(running.stop()).map_err(anyhow::Error::msg)?;
    let clean = match settled {
        Ok(settled) => {
            reconcile_session(&exchange_dir, &registry_server.url(), session_start).map(|c| settled && c)
        }
        Err(e) => Err(e),
    };
    registry_server.stop()?;
    clean
}

/// Step 6: reconciliation of the exchange's settlement database against the registry, over
/// the session (from before the exchange opened to now), recorded in the break store and the
/// audit trail, which is then verified.
fn reconcile_session(exchange_dir: &Path, registry_url: &str, from: Timestamp) -> anyhow::Result<bool> {
    println!("\n-- 6. reconciliation: the exchange's view against the registry's --");
    let db = exchange_dir.join(SETTLEMENT_FILE);
    let settlement = Settlement::open(&db, SettlementConfig::default())?;
    let as_of = now();
    let exchange = ExchangeView::from_settlement(&settlement, as_of)?;
    let registry = HttpRegistry::new(registry_url, HttpRegistryConfig::default())?;
    let view = RegistryView::load(&registry, &exchange.accounts(), &exchange.instruments(), from, as_of)?;
    let mut report = reconcile(&exchange, &view)?;
    let audit_path = exchange_dir.join(AUDIT_FILE);
    let mut store = BreakStore::open(&db)?.with_audit(AuditLog::open(&audit_path)?);
    store.record(&mut report, as_of)?;
    print!("{}", render::summary(&report));
    let (records, head) = cccx_settlement::audit::verify(&audit_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "audit trail {}: intact, {records} records, head {}",
        audit_path.display(),
        cccx_settlement::audit::hash_hex(&head)
    );
    Ok(report.is_clean())
}

fn session(
    running: &server::Running,
    rest: &Rest,
    fix: SocketAddr,
    registry_url: &str,
) -> anyhow::Result<bool> {
    println!("\n-- 1. the bid window opens --");
    rest.post(&format!("/v1/admin/instruments/{SYMBOL}/phase"), json!({"phase": "call"}))?;
    let mut sessions = Vec::new();
    for m in MEMBERS {
        let password = &running.secrets.participants[&m.id].fix_password;
        let mut s = FixSession::logon(fix, m.comp_id, password, Duration::from_secs(10))?;
        for (i, (buy, qty, price)) in m.bids.iter().enumerate() {
            s.new_limit_order(&format!("{}-{}", m.comp_id, i + 1), SYMBOL, *buy, *qty, *price)?;
        }
        sessions.push((m, s, SessionLog::default()));
    }
    for (m, s, log) in sessions.iter_mut() {
        drain(s, log, Duration::from_millis(500))?;
        let side = if m.bids[0].0 { "buys" } else { "sells" };
        let bids: Vec<String> = m.bids.iter().map(|(_, q, p)| format!("{q} @ {p}")).collect();
        println!(
            "{:<9} {side:<5} {:<28} over FIX: {} acknowledged{}",
            m.comp_id,
            bids.join(", "),
            log.acknowledged,
            if log.rejected.is_empty() { String::new() } else { format!(", rejected: {:?}", log.rejected) }
        );
    }

    println!("\n-- 2. the window closes: the registry's holdings check --");
    let registry = HttpRegistry::new(registry_url, HttpRegistryConfig::default())?;
    let instrument = INSTRUMENT;
    let totals = rest.get(&format!("/v1/admin/instruments/{SYMBOL}/sell-totals"))?;
    rest.post(&format!("/v1/admin/instruments/{SYMBOL}/phase"), json!({"phase": "call_closed"}))?;
    for seller in totals["sellers"].as_array().into_iter().flatten() {
        let account = seller["registry_account"].as_str().unwrap_or_default();
        let held = registry.holdings(&acct(account)?, instrument, None)?;
        println!(
            "{account}: offered {:>6}, at the registry {:>6} available",
            seller["qty"], held.total.available
        );
    }
    // The settlement thread runs the check on the close and removes the short sellers' bids;
    // their FIX sessions are told (ExecType 4, cancelled).
    let short: Vec<&Member> = MEMBERS.iter().filter(|m| m.holdings - m.moved_away < offered(m)).collect();
    for (m, s, log) in sessions.iter_mut() {
        if short.iter().any(|x| x.id == m.id) {
            let deadline = Instant::now() + Duration::from_secs(15);
            while log.cancelled < m.bids.len() as u64 && Instant::now() < deadline {
                drain(s, log, Duration::from_millis(100))?;
            }
            println!(
                "{} ({}) found short: {} of its {} bids removed before the uncross",
                m.comp_id,
                m.account,
                log.cancelled,
                m.bids.len()
            );
        }
    }

    println!("\n-- 3. the uncross --");
    rest.post(&format!("/v1/admin/instruments/{SYMBOL}/uncross"), json!({}))?;
    let auction = rest.get(&format!("/v1/instruments/{SYMBOL}/auction"))?;
    let last = &auction["last_uncross"];
    let (mcp, mcv) = (last["price"].as_i64(), last["volume"].as_u64().unwrap_or(0));
    match mcp {
        Some(p) => println!("market clearing price {p}, market clearing volume {mcv}"),
        None => println!("nothing crossed"),
    }
    let mut filled_total = 0;
    for (m, s, log) in sessions.iter_mut() {
        drain(s, log, Duration::from_millis(300))?;
        filled_total += log.filled_qty;
        let side = if m.bids[0].0 { "bought" } else { "sold" };
        let avg = if log.filled_qty > 0 { log.filled_value / i128::from(log.filled_qty) } else { 0 };
        println!("{:<9} {side:<6} {:>6} @ {avg} (fills reported over FIX)", m.comp_id, log.filled_qty);
    }
    anyhow::ensure!(filled_total == 2 * mcv, "fills over FIX ({filled_total}) are not twice the MCV ({mcv})");
    for (_, s, _) in sessions {
        s.logout()?;
    }

    println!("\n-- 4. settlement: delivery versus payment at the registry --");
    let deadline = Instant::now() + Duration::from_secs(60);
    let summary = loop {
        let summary = rest.get("/v1/settlement/summary")?;
        let states = &summary["states"];
        let open: u64 = ["created", "submitted", "failed", "retried"]
            .iter()
            .map(|k| states[*k].as_u64().unwrap_or(0))
            .sum();
        let total = summary["total"].as_u64().unwrap_or(0);
        if (total > 0 || mcv == 0) && open == 0 {
            break summary;
        }
        if Instant::now() > deadline {
            bail!("settlement did not finish within a minute: {summary}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let obligations = rest.get("/v1/settlement/obligations?limit=10000")?;
    let mut broken = 0;
    for o in obligations.as_array().into_iter().flatten().rev() {
        let state = o["state"].as_str().unwrap_or_default();
        broken += usize::from(state == "broken");
        println!(
            "{:<24} {} -> {}  {:>6} @ {}  fee {}  {state}{}",
            o["trade_id"].as_str().unwrap_or_default(),
            o["seller_account"].as_str().unwrap_or_default(),
            o["buyer_account"].as_str().unwrap_or_default(),
            o["qty"],
            o["price"],
            o["fee"],
            o["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    println!("obligations per state: {}", summary["states"]);

    println!("\n-- 5. registry holdings after settlement --");
    for m in MEMBERS {
        let held = registry.holdings(&acct(m.account)?, instrument, None)?;
        println!("{:<9} {}: {:>6}", m.comp_id, m.account, held.total.held);
    }
    Ok(broken == 0)
}

/// A member's total sell quantity.
fn offered(m: &Member) -> u64 {
    m.bids.iter().filter(|b| !b.0).map(|b| b.1).sum()
}
