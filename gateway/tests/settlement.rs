//! Settlement inside `cccx serve`, against a real server on 127.0.0.1 (an ephemeral port) with
//! the embedded registry: trades become confirmed obligations and certificates move at the
//! registry; the holdings check removes a short seller's offers before the uncross; a restart
//! settles what was journaled and nothing twice.

use std::path::Path;
use std::time::Duration;

use cccx_engine::InstrumentId;
use cccx_gateway::config::{Config, REGISTRY_FILE, SETTLEMENT_FILE};
use cccx_gateway::server::{self, Running};
use cccx_settlement::settle::{Settlement, SettlementConfig};
use cccx_settlement::{AccountId, Registry, SqliteRegistry};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const OFFSET: InstrumentId = InstrumentId(1);
const COMPLIANCE: InstrumentId = InstrumentId(0);

fn config(data_dir: &Path) -> Config {
    let mut c = Config::embedded();
    c.server.data_dir = data_dir.to_path_buf();
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.fix_enabled = false;
    c.settlement.retry_ms = 50;
    c
}

struct Api {
    running: Running,
    client: Client,
}

impl Api {
    async fn start(config: Config) -> Api {
        let running = server::start(config).await.expect("server starts");
        Api { running, client: Client::new() }
    }

    fn key(&self, participant: u32) -> String {
        self.running.secrets.participants[&participant].api_key.clone()
    }

    fn ops(&self) -> String {
        self.running.secrets.operators["ops"].clone()
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r =
            self.client.request(method, format!("http://{}{path}", self.running.http)).bearer_auth(key);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let response = r.send().await.expect("the server answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn order(&self, participant: u32, body: Value) -> Value {
        let (s, r) = self.call(Method::POST, "/v1/orders", &self.key(participant), Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        r
    }

    async fn phase(&self, symbol: &str, phase: &str) {
        let path = format!("/v1/admin/instruments/{symbol}/phase");
        let (s, r) = self.call(Method::POST, &path, &self.ops(), Some(json!({"phase": phase}))).await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }

    /// The operator's view of the obligations, once `n` are confirmed (or a timeout).
    async fn confirmed(&self, n: usize) -> Vec<Value> {
        let mut list = Vec::new();
        for _ in 0..200 {
            let (s, all) = self.call(Method::GET, "/v1/settlement/obligations", &self.ops(), None).await;
            assert_eq!(s, StatusCode::OK, "{all}");
            list = all.as_array().unwrap().clone();
            if list.iter().filter(|o| o["state"] == "confirmed").count() >= n {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} obligations were not confirmed: {list:?}");
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.running.http);
        self.client.get(url).send().await.unwrap().text().await.unwrap()
    }
}

fn held(data_dir: &Path, account: &str, instrument: InstrumentId) -> u64 {
    let registry = SqliteRegistry::open(data_dir.join(REGISTRY_FILE)).unwrap();
    registry.holdings(&AccountId::new(account).unwrap(), instrument, None).unwrap().total.held
}

fn settlement(data_dir: &Path) -> Settlement {
    Settlement::open(data_dir.join(SETTLEMENT_FILE), SettlementConfig::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_trades_settle_delivery_versus_payment() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.settlement.fee_bps = 10;
    let api = Api::start(c).await;
    // Participant 4 offers 100 at 900; participant 1 buys 120 at 950: 100 trade at 900.
    api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 900, "qty": 100})).await;
    api.order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 950, "qty": 120})).await;
    let list = api.confirmed(1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let o = &list[0];
    let (_, trades) = api.call(Method::GET, "/v1/instruments/CCC-2026-O/trades", &api.key(1), None).await;
    assert_eq!(o["trade_id"], json!(format!("CCC-2026-O-{}", trades[0]["trade_id"].as_str().unwrap())));
    assert_eq!((o["buyer"].clone(), o["seller"].clone()), (json!(1), json!(4)));
    assert_eq!(
        (o["buyer_account"].as_str(), o["seller_account"].as_str()),
        (Some("IN-CCC-0001"), Some("IN-CCC-0004"))
    );
    assert_eq!(
        (o["qty"].clone(), o["price"].clone(), o["value"].clone(), o["fee"].clone()),
        (json!(100), json!(900), json!(90000), json!(90))
    );

    // Each side sees its own obligations; another participant sees none.
    for (p, n) in [(1, 1), (4, 1), (2, 0)] {
        let (s, mine) = api.call(Method::GET, "/v1/settlement/obligations", &api.key(p), None).await;
        assert_eq!((s, mine.as_array().unwrap().len()), (StatusCode::OK, n), "participant {p}: {mine}");
    }
    let (_, mine) = api.call(Method::GET, "/v1/settlement/summary", &api.key(4), None).await;
    assert_eq!(mine["states"]["confirmed"], 1, "{mine}");
    assert_eq!(mine["participants"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["participants"][0]["funds_balance"], 90000 - 90);
    let (_, all) = api.call(Method::GET, "/v1/settlement/summary", &api.ops(), None).await;
    assert_eq!((all["total"].clone(), all["states"]["confirmed"].clone()), (json!(1), json!(1)), "{all}");
    assert_eq!(all["participants"].as_array().unwrap().len(), 4, "{all}");
    let (_, none) = api
        .call(Method::GET, "/v1/settlement/obligations?state=broken&instrument=CCC-2026-O", &api.ops(), None)
        .await;
    assert_eq!(none, json!([]));

    // Bad query parameters are problem documents.
    for query in ["state=lost", "instrument=NOPE", "limit=0", "limit=x", "colour=red"] {
        let path = format!("/v1/settlement/obligations?{query}");
        let (s, p) = api.call(Method::GET, &path, &api.ops(), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {p}");
        assert_eq!(p["status"], 400, "{query}: {p}");
    }
    let (s, _) = api.call(Method::GET, "/v1/settlement/obligations", "not-a-key", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let metrics = api.metrics().await;
    assert!(metrics.contains("cccx_settlement_obligations{state=\"confirmed\"} 1"), "{metrics}");
    api.running.stop().await.unwrap();

    // The registry moved the certificates; the funds ledger balances.
    assert_eq!(held(dir.path(), "IN-CCC-0001", OFFSET), 100);
    assert_eq!(held(dir.path(), "IN-CCC-0004", OFFSET), 30_000 - 100);
    assert_eq!(held(dir.path(), "IN-CCC-0003", COMPLIANCE), 50_000);
    let s = settlement(dir.path());
    s.check().unwrap();
    assert_eq!(s.balance("IN-CCC-0001").unwrap(), -(90_000 + 90));
    assert_eq!(s.balance("IN-CCC-0004").unwrap(), 90_000 - 90);
}

/// Participant 2 holds compliance certificates in the engine (an operator credit) but none at
/// the registry: when the bid window closes the registry finds it short and its offers go
/// before the uncross.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_short_at_the_registry_loses_its_offers_before_the_uncross() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(config(dir.path())).await;
    let credit = json!({"participant": 2, "symbol": "CCC-2026-C", "qty": 500});
    let (s, r) = api.call(Method::POST, "/v1/admin/holdings", &api.ops(), Some(credit)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    api.phase("CCC-2026-C", "call").await;
    api.order(1, json!({"symbol": "CCC-2026-C", "side": "buy", "price": 1200, "qty": 300})).await;
    api.order(3, json!({"symbol": "CCC-2026-C", "side": "sell", "price": 1000, "qty": 200})).await;
    let short = api.order(2, json!({"symbol": "CCC-2026-C", "side": "sell", "price": 900, "qty": 400})).await;
    let short_id = short["order"]["order_id"].as_u64().unwrap();
    api.phase("CCC-2026-C", "call_closed").await;

    // The window close triggers the check on its own.
    let mut status = Value::Null;
    for _ in 0..200 {
        let (_, o) = api.call(Method::GET, &format!("/v1/orders/{short_id}"), &api.key(2), None).await;
        status = o["status"].clone();
        if status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "cancelled");
    let (_, account) = api.call(Method::GET, "/v1/account", &api.key(2), None).await;
    assert_eq!(account["standing"]["defaults_in_quarter"], 1, "{account}");

    // The operator can run it again: only participant 3 sells now, and it holds enough.
    let path = "/v1/admin/instruments/CCC-2026-C/holdings-check";
    let (s, check) = api.call(Method::POST, path, &api.ops(), None).await;
    assert_eq!(s, StatusCode::OK, "{check}");
    assert_eq!((check["sellers_checked"].clone(), check["short"].clone()), (json!(1), json!([])), "{check}");
    let (s, _) = api.call(Method::POST, path, &api.key(1), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, r) = api.call(Method::POST, "/v1/admin/instruments/CCC-2026-C/uncross", &api.ops(), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let list = api.confirmed(1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0]["seller"].clone(), list[0]["qty"].clone()), (json!(3), json!(200)));
    let metrics = api.metrics().await;
    assert!(metrics.contains("cccx_shortfalls_total 1"), "{metrics}");
    assert!(metrics.contains("cccx_holdings_check_failures_total 0"), "{metrics}");
    api.running.stop().await.unwrap();
    assert_eq!(held(dir.path(), "IN-CCC-0001", COMPLIANCE), 200);
    assert_eq!(held(dir.path(), "IN-CCC-0003", COMPLIANCE), 50_000 - 200);
    settlement(dir.path()).check().unwrap();
}

/// A registry that cannot answer the holdings check is reported, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_answer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = config(dir.path());
    c.settlement.registry = Some(cccx_gateway::config::RegistryKind::Http);
    c.settlement.registry_url = Some(format!("http://127.0.0.1:{port}"));
    let api = Api::start(c).await;
    api.phase("CCC-2026-C", "call").await;
    api.order(3, json!({"symbol": "CCC-2026-C", "side": "sell", "price": 1000, "qty": 200})).await;
    api.phase("CCC-2026-C", "call_closed").await;
    let path = "/v1/admin/instruments/CCC-2026-C/holdings-check";
    let (s, p) = api.call(Method::POST, path, &api.ops(), None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{p}");
    assert_eq!(p["title"], "registry unavailable", "{p}");
    let metrics = api.metrics().await;
    assert!(!metrics.contains("cccx_holdings_check_failures_total 0"), "{metrics}");
    // Nothing was removed.
    let (_, orders) = api.call(Method::GET, "/v1/orders?open=true", &api.key(3), None).await;
    assert_eq!(orders.as_array().unwrap().len(), 1, "{orders}");
    api.running.stop().await.unwrap();
}

/// Trades journaled while settlement was not running (off, or the process died first) are
/// settled after the restart, and a restart settles nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_settles_what_was_journaled_and_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut off = config(dir.path());
    off.settlement.enabled = false;
    let api = Api::start(off).await;
    api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 900, "qty": 100})).await;
    api.order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 900, "qty": 60})).await;
    api.order(2, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 900, "qty": 40})).await;
    let (s, _) = api.call(Method::GET, "/v1/settlement/summary", &api.ops(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    api.running.stop().await.unwrap();

    let api = Api::start(config(dir.path())).await;
    let list = api.confirmed(2).await;
    assert_eq!(list.len(), 2, "{list:?}");
    api.running.stop().await.unwrap();
    assert_eq!(held(dir.path(), "IN-CCC-0001", OFFSET), 60);
    assert_eq!(held(dir.path(), "IN-CCC-0002", OFFSET), 40);

    // Again: the replay feeds the same trades, nothing moves twice; new trades settle.
    let api = Api::start(config(dir.path())).await;
    api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 950, "qty": 10})).await;
    api.order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 950, "qty": 10})).await;
    let list = api.confirmed(3).await;
    assert_eq!(list.len(), 3, "{list:?}");
    api.running.stop().await.unwrap();
    assert_eq!(held(dir.path(), "IN-CCC-0001", OFFSET), 70);
    assert_eq!(held(dir.path(), "IN-CCC-0002", OFFSET), 40);
    assert_eq!(held(dir.path(), "IN-CCC-0004", OFFSET), 30_000 - 110);
    let s = settlement(dir.path());
    s.check().unwrap();
    assert_eq!(s.balance("IN-CCC-0004").unwrap(), 100 * 900 + 10 * 950);
}

/// A registry service that is down at first, then up and faulty (503s, lost answers): failed
/// obligations are retried with a backoff until the registry answers, and every trade moves
/// its certificates exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_service_down_then_faulty_settles_every_trade_once() {
    use cccx_settlement::faults::Faults;
    use cccx_settlement::service::RegistryServer;
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut c = config(dir.path());
    c.settlement.registry = Some(cccx_gateway::config::RegistryKind::Http);
    c.settlement.registry_url = Some(format!("http://{addr}"));
    c.settlement.max_attempts = 100;
    let mut registry = SqliteRegistry::open_in_memory().unwrap();
    cccx_gateway::settlement::seed(&mut registry, &c, cccx_settlement::Timestamp(1)).unwrap();
    let api = Api::start(c).await;
    api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 900, "qty": 100})).await;
    for (p, qty) in [(1, 30), (2, 20), (1, 10)] {
        api.order(p, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 900, "qty": qty})).await;
    }
    // Nothing answers yet: the obligations fail and wait.
    let mut failed = Value::Null;
    for _ in 0..200 {
        let (_, summary) = api.call(Method::GET, "/v1/settlement/summary", &api.ops(), None).await;
        failed = summary["states"]["failed"].clone();
        if failed == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 3);
    let faults = Faults { seed: 7, error_pct: 30, drop_pct: 20, ..Faults::default() };
    let service = tokio::task::spawn_blocking(move || RegistryServer::start(registry, addr, faults).unwrap())
        .await
        .unwrap();
    let list = api.confirmed(3).await;
    assert!(
        list.iter().all(|o| o["state"] == "confirmed" && o["attempts"].as_u64().unwrap() >= 2),
        "{list:?}"
    );
    api.running.stop().await.unwrap();
    let registry = tokio::task::spawn_blocking(move || service.stop().unwrap()).await.unwrap();
    let held = |a: &str| registry.holdings(&AccountId::new(a).unwrap(), OFFSET, None).unwrap().total.held;
    assert_eq!((held("IN-CCC-0001"), held("IN-CCC-0002"), held("IN-CCC-0004")), (40, 20, 30_000 - 60));
    settlement(dir.path()).check().unwrap();
}
