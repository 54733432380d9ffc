//! The REST API and the WebSocket feed against a real server on 127.0.0.1 (an ephemeral port),
//! with real HTTP and WebSocket clients.

use std::path::Path;
use std::time::Duration;

use cccx_gateway::config::Config;
use cccx_gateway::server::{self, Running};
use futures_util::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

fn config(data_dir: &Path) -> Config {
    let mut c = Config::embedded();
    c.server.data_dir = data_dir.to_path_buf();
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.durability = cccx_gateway::config::DurabilityName::Batch;
    // These tests run several servers in one process; QuickFIX allows one acceptor per process
    // (the FIX tests have their own).
    c.server.fix_enabled = false;
    c
}

struct Api {
    running: Running,
    client: Client,
}

impl Api {
    async fn start(data_dir: &Path) -> Api {
        let running = server::start(config(data_dir)).await.expect("server starts");
        Api { running, client: Client::new() }
    }

    fn key(&self, participant: u32) -> String {
        self.running.secrets.participants[&participant].api_key.clone()
    }

    fn ops(&self) -> String {
        self.running.secrets.operators["ops"].clone()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.client.request(method, format!("http://{}{path}", self.running.http));
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        let response = r.send().await.expect("the server answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn order(&self, participant: u32, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/orders", Some(&self.key(participant)), Some(body)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_trading_through_rest() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    // Participant 4 offers 100 at 900 and 50 at 950; participant 1 buys 120 at 950.
    let (s, sell) = api
        .order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 900, "qty": 100, "client_order_id": "s-1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sell}");
    assert_eq!(sell["order"]["status"], "new");
    let (s, _) = api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 950, "qty": 50})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, buy) = api
        .order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "type": "limit", "tif": "ioc", "price": 950, "qty": 120}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{buy}");
    let order = &buy["order"];
    assert_eq!((order["cum_qty"].as_u64(), order["leaves_qty"].as_u64()), (Some(120), Some(0)));
    assert_eq!(order["status"], "filled");
    // (100 x 900 + 20 x 950) / 120
    assert_eq!(order["avg_px"], "908.333333");
    let fills: Vec<&Value> =
        buy["reports"].as_array().unwrap().iter().filter(|r| r["exec"] == "trade").collect();
    assert_eq!(fills.len(), 2);
    // The seller sees its order partly filled, under its client id.
    let (s, mine) = api.call(Method::GET, "/v1/orders/by-client-id/s-1", Some(&api.key(4)), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((mine["status"].as_str(), mine["cum_qty"].as_u64()), (Some("filled"), Some(100)));
    // The book: 30 left at 950.
    let (_, book) = api.call(Method::GET, "/v1/instruments/CCC-2026-O/book", Some(&api.key(2)), None).await;
    assert_eq!(book["asks"], json!([{"price": 950, "qty": 30}]));
    let (_, trades) =
        api.call(Method::GET, "/v1/instruments/CCC-2026-O/trades", Some(&api.key(2)), None).await;
    assert_eq!(trades.as_array().unwrap().len(), 2);
    // Accounts: the buyer paid 109,000 and has 120 bought, not yet settled.
    let (_, account) = api.call(Method::GET, "/v1/account", Some(&api.key(1)), None).await;
    assert_eq!(account["funds"]["paid"], "109000");
    assert_eq!(account["holdings"][0]["bought"], "120");
    api.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_only_see_their_own_orders() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    let (_, sell) =
        api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 2000, "qty": 10})).await;
    let id = sell["order"]["order_id"].as_u64().unwrap();
    let path = format!("/v1/orders/{id}");
    for (method, body) in
        [(Method::GET, None), (Method::DELETE, None), (Method::PATCH, Some(json!({"price": 1999, "qty": 5})))]
    {
        let (s, p) = api.call(method.clone(), &path, Some(&api.key(3)), body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} by another participant: {p}");
    }
    let (s, list) = api.call(Method::GET, "/v1/orders", Some(&api.key(3)), None).await;
    assert_eq!((s, list), (StatusCode::OK, json!([])));
    // The owner amends, then cancels.
    let (s, amended) =
        api.call(Method::PATCH, &path, Some(&api.key(4)), Some(json!({"price": 1990, "qty": 8}))).await;
    assert_eq!(s, StatusCode::OK, "{amended}");
    assert_eq!(
        (amended["order"]["price"].as_i64(), amended["order"]["leaves_qty"].as_u64()),
        (Some(1990), Some(8))
    );
    let (s, cancelled) = api.call(Method::DELETE, &path, Some(&api.key(4)), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cancelled["order"]["status"], "cancelled");
    // A second cancel: the engine refuses (the order is gone), 422 with its reason code.
    let (s, p) = api.call(Method::DELETE, &path, Some(&api.key(4)), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["reason_code"], 10);
    api.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_document_never_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    let key = api.key(1);
    type Case<'a> = (Method, &'a str, Option<&'a str>, Option<Value>, StatusCode);
    let cases: Vec<Case> = vec![
        (Method::GET, "/v1/orders", None, None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/v1/orders", Some("pk_wrong"), None, StatusCode::UNAUTHORIZED),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "NOPE", "side": "buy", "price": 1, "qty": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O", "side": "up", "price": 1, "qty": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O", "side": "buy", "qty": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O", "side": "buy", "price": 1, "qty": -1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O", "side": "buy", "price": 500, "qty": 1, "colour": "red"})),
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/v1/orders/abc", Some(&key), None, StatusCode::BAD_REQUEST),
        (Method::GET, "/v1/orders/99999", Some(&key), None, StatusCode::NOT_FOUND),
        (Method::GET, "/v1/orders?limit=many", Some(&key), None, StatusCode::BAD_REQUEST),
        (Method::GET, "/v1/instruments/NOPE/book", Some(&key), None, StatusCode::NOT_FOUND),
        (Method::GET, "/v1/nothing-here", Some(&key), None, StatusCode::NOT_FOUND),
        (Method::PUT, "/v1/orders", Some(&key), None, StatusCode::METHOD_NOT_ALLOWED),
        (
            Method::POST,
            "/v1/admin/funds",
            Some(&key),
            Some(json!({"participant": 1, "amount": 5})),
            StatusCode::FORBIDDEN,
        ),
        // The engine's checks: below the floor, not enough funds.
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O", "side": "buy", "price": 50, "qty": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-O", "side": "buy", "price": 10000, "qty": 1000000})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // The auction instrument is closed.
        (
            Method::POST,
            "/v1/orders",
            Some(&key),
            Some(json!({"symbol": "CCC-2026-C", "side": "buy", "price": 500, "qty": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, path, key, body, want) in cases {
        let (status, problem) = api.call(method.clone(), path, key, body.clone()).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {problem}");
        assert_eq!(problem["status"], want.as_u16(), "{method} {path}: {problem}");
        assert!(problem["title"].is_string() && problem["detail"].is_string(), "{problem}");
    }
    // Not JSON at all, and the wrong content type.
    let url = format!("http://{}/v1/orders", api.running.http);
    let r = api
        .client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api.client.post(&url).bearer_auth(&key).body("side=buy").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    api.running.stop().await.unwrap();
}

/// A monthly session run by the operator over REST, watched on the WebSocket feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auction_session_over_rest_and_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    let url = format!("ws://{}/v1/ws?key={}", api.running.http, api.key(3));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let hello: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(hello["participant"], 3);
    let ops = api.ops();
    let phase = |p: &str| json!({"phase": p});
    let (s, r) = api
        .call(Method::POST, "/v1/admin/instruments/CCC-2026-C/phase", Some(&ops), Some(phase("call")))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    for (p, side, price, qty) in [(1, "buy", 1200, 300), (2, "buy", 1100, 200), (3, "sell", 1000, 400)] {
        let (s, r) =
            api.order(p, json!({"symbol": "CCC-2026-C", "side": side, "price": price, "qty": qty})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
    }
    let (s, r) = api
        .call(Method::POST, "/v1/admin/instruments/CCC-2026-C/phase", Some(&ops), Some(phase("call_closed")))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (_, totals) =
        api.call(Method::GET, "/v1/admin/instruments/CCC-2026-C/sell-totals", Some(&ops), None).await;
    assert_eq!(totals["sellers"], json!([{"participant": 3, "registry_account": "IN-CCC-0003", "qty": 400}]));
    let (s, r) = api.call(Method::POST, "/v1/admin/instruments/CCC-2026-C/uncross", Some(&ops), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (_, auction) =
        api.call(Method::GET, "/v1/instruments/CCC-2026-C/auction", Some(&api.key(1)), None).await;
    // Demand 300 up to 1200 and 500 up to 1100; supply 400 from 1000: 400 cross anywhere in
    // [1000, 1100] with the same surplus; the midpoint is 1050.
    assert_eq!(
        auction["last_uncross"],
        json!({"type": "auction", "symbol": "CCC-2026-C", "price": 1050, "volume": 400, "ts_ns": auction["last_uncross"]["ts_ns"]})
    );
    // Operators cannot trade, participants cannot operate.
    let (s, _) =
        api.call(Method::POST, "/v1/admin/instruments/CCC-2026-C/uncross", Some(&api.key(1)), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, p) = api.call(Method::POST, "/v1/admin/instruments/CCC-2026-C/uncross", Some(&ops), None).await;
    assert_eq!((s, p["reason_code"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(14)));
    // The feed: participant 3 saw the phase changes, its own order's reports, the auction.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        seen.push(v);
    }
    let has = |f: &dyn Fn(&Value) -> bool| seen.iter().any(f);
    assert!(has(&|v| v["event"]["type"] == "phase" && v["event"]["phase"] == "call"));
    assert!(has(&|v| v["event"]["type"] == "auction" && v["event"]["volume"] == 400));
    assert!(has(&|v| v["channel"] == "orders" && v["report"]["exec"] == "trade"));
    assert!(
        !has(&|v| v["channel"] == "orders" && v["report"]["order"]["participant"] != 3),
        "saw others' orders"
    );
    ws.close(None).await.ok();
    api.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_orders_books_and_client_ids() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    let keys = (api.key(4), api.key(1));
    api.order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 900, "qty": 100, "client_order_id": "keep-me"})).await;
    api.order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 900, "qty": 40})).await;
    let (_, before) = api.call(Method::GET, "/v1/instruments/CCC-2026-O/book", Some(&keys.1), None).await;
    api.running.stop().await.unwrap();

    let api = Api::start(dir.path()).await;
    assert_eq!(api.key(4), keys.0, "secrets are kept");
    assert!(api.running.started.replayed > 0);
    let (_, after) = api.call(Method::GET, "/v1/instruments/CCC-2026-O/book", Some(&keys.1), None).await;
    assert_eq!(before, after);
    let (s, order) = api.call(Method::GET, "/v1/orders/by-client-id/keep-me", Some(&keys.0), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((order["cum_qty"].as_u64(), order["leaves_qty"].as_u64()), (Some(40), Some(60)));
    // New orders get new ids.
    let (_, next) =
        api.order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 800, "qty": 1})).await;
    assert!(next["order"]["order_id"].as_u64().unwrap() > order["order_id"].as_u64().unwrap());
    let (s, metrics) = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(metrics.as_str().unwrap().contains("cccx_commands_total"));
    api.running.stop().await.unwrap();
}

/// When an instrument opens its next trading day the server forgets its finished orders (the
/// journal keeps them), and a restart, which replays the journal, forgets the same ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trading_day_forgets_finished_orders_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    let ops = api.ops();
    let (s, _) = api
        .order(4, json!({"symbol": "CCC-2026-O", "side": "sell", "price": 900, "qty": 100, "tif": "gtc", "client_order_id": "open"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, buy) = api
        .order(1, json!({"symbol": "CCC-2026-O", "side": "buy", "price": 900, "qty": 40, "client_order_id": "done"}))
        .await;
    assert_eq!((s, &buy["order"]["status"]), (StatusCode::CREATED, &json!("filled")));
    let done_id = buy["order"]["order_id"].as_u64().unwrap();
    let path = "/v1/admin/instruments/CCC-2026-O/phase";
    // Closed for the evening: the day's orders can still be looked at.
    let (s, r) = api.call(Method::POST, path, Some(&ops), Some(json!({"phase": "closed"}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(get(&api, "/v1/orders/by-client-id/done", 1).await.0, StatusCode::OK);
    let (s, r) = api.call(Method::POST, path, Some(&ops), Some(json!({"phase": "continuous"}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    forgotten_but_open_kept(&api, done_id).await;
    api.running.stop().await.unwrap();
    let api = Api::start(dir.path()).await;
    forgotten_but_open_kept(&api, done_id).await;
    api.running.stop().await.unwrap();
}

async fn get(api: &Api, path: &str, participant: u32) -> (StatusCode, Value) {
    api.call(Method::GET, path, Some(&api.key(participant)), None).await
}

async fn forgotten_but_open_kept(api: &Api, done_id: u64) {
    assert_eq!(get(api, "/v1/orders/by-client-id/done", 1).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(api, &format!("/v1/orders/{done_id}"), 1).await.0, StatusCode::NOT_FOUND);
    let (s, listed) = get(api, "/v1/orders", 1).await;
    assert_eq!((s, listed.as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{listed}");
    // The open order and the book are as they were.
    let (s, open) = get(api, "/v1/orders/by-client-id/open", 4).await;
    assert_eq!((s, open["leaves_qty"].as_u64()), (StatusCode::OK, Some(60)), "{open}");
    let (_, book) = get(api, "/v1/instruments/CCC-2026-O/book", 2).await;
    assert_eq!(book["asks"], json!([{"price": 900, "qty": 60}]));
}

/// `/openapi.json` describes the server: every operation in it is a live route (answered by
/// its handler, not the fallback), and the routes the tests use are all in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path()).await;
    let (s, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with('3')), Some(true), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert_eq!(operations.len(), 28, "{operations:?}");
    for must in [
        ("POST", "/v1/orders"),
        ("PATCH", "/v1/orders/{order_id}"),
        ("POST", "/v1/admin/instruments/{symbol}/phase"),
    ] {
        assert!(operations.contains(&(must.0.to_string(), must.1.to_string())), "{must:?} missing");
    }
    assert!(doc["components"]["schemas"]["NewOrderRequest"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    for (method, path) in &operations {
        let concrete = path
            .replace("{symbol}", "CCC-2026-O")
            .replace("{order_id}", "1")
            .replace("{client_order_id}", "x");
        let key = if path.starts_with("/v1/admin") { api.ops() } else { api.key(1) };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = api.call(method.clone(), &concrete, Some(&key), Some(json!({}))).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(body["detail"], "no such route", "{method} {path}");
        assert!(
            status.as_u16() < 500 || status == StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {status} {body}"
        );
    }
    api.running.stop().await.unwrap();
}

/// Regressions from the review of the gateway (each once a confirmed bug).
mod review {
    use super::*;

    /// A seller cannot withdraw its offers once the bid window has closed (it would escape the
    /// registry's holdings check), not even by mass cancel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_mass_cancel_after_the_window_closes() {
        let dir = tempfile::tempdir().unwrap();
        let api = Api::start(dir.path()).await;
        let ops = api.ops();
        let phase = |p: &str| json!({"phase": p});
        let path = "/v1/admin/instruments/CCC-2026-C/phase";
        api.call(Method::POST, path, Some(&ops), Some(phase("call"))).await;
        let (s, _) =
            api.order(3, json!({"symbol": "CCC-2026-C", "side": "sell", "price": 1000, "qty": 100})).await;
        assert_eq!(s, StatusCode::CREATED);
        api.call(Method::POST, path, Some(&ops), Some(phase("call_closed"))).await;
        let (s, p) = api.call(Method::DELETE, "/v1/orders?symbol=CCC-2026-C", Some(&api.key(3)), None).await;
        assert_eq!((s, p["reason_code"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(15)), "{p}");
        let (s, all) = api.call(Method::DELETE, "/v1/orders", Some(&api.key(3)), None).await;
        assert_eq!((s, &all["cancelled"]), (StatusCode::OK, &json!([])));
        let body = json!({"participant": 3, "symbol": "CCC-2026-C"});
        let (s, r) = api.call(Method::POST, "/v1/admin/shortfall", Some(&ops), Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        api.running.stop().await.unwrap();
    }

    /// A client order id names one open order at a time; after a restart it still names the
    /// order it named before, even when it was first used by a rejected order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_order_ids_survive_a_restart_unambiguously() {
        let dir = tempfile::tempdir().unwrap();
        let api = Api::start(dir.path()).await;
        let order = |price: i64, cid: &str| json!({"symbol": "CCC-2026-O", "side": "sell", "price": price, "qty": 5, "client_order_id": cid});
        let mut live = Vec::new();
        for n in 0..20 {
            let cid = format!("c-{n}");
            let (s, _) = api.order(4, order(50, &cid)).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "below the floor");
            let (s, r) = api.order(4, order(2000 + n, &cid)).await;
            assert_eq!(s, StatusCode::CREATED);
            live.push(r["order"]["order_id"].as_u64().unwrap());
        }
        // While it is open the id cannot be reused.
        let (s, p) = api.order(4, order(2100, "c-3")).await;
        assert_eq!(s, StatusCode::CONFLICT, "{p}");
        api.running.stop().await.unwrap();
        // A crash while writing the side log leaves a torn line; a restart repairs it.
        let side_log = dir.path().join("client-ids.jsonl");
        let mut bytes = std::fs::read(&side_log).unwrap();
        bytes.extend_from_slice(b"{\"order_id\":99,\"partic");
        std::fs::write(&side_log, bytes).unwrap();

        let api = Api::start(dir.path()).await;
        for (n, id) in live.iter().enumerate() {
            let (s, o) = api
                .call(Method::GET, &format!("/v1/orders/by-client-id/c-{n}"), Some(&api.key(4)), None)
                .await;
            assert_eq!((s, o["order_id"].as_u64()), (StatusCode::OK, Some(*id)), "c-{n}");
        }
        let (s, _) = api.order(4, order(2500, "after-restart")).await;
        assert_eq!(s, StatusCode::CREATED);
        // Another participant cannot see it by client id.
        let (s, _) =
            api.call(Method::GET, "/v1/orders/by-client-id/after-restart", Some(&api.key(3)), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        api.running.stop().await.unwrap();
        let api = Api::start(dir.path()).await;
        let (s, _) =
            api.call(Method::GET, "/v1/orders/by-client-id/after-restart", Some(&api.key(4)), None).await;
        assert_eq!(s, StatusCode::OK, "the record after the torn line is read back");
        api.running.stop().await.unwrap();
    }

    /// The key of a participant removed from the configuration no longer works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removed_participants_lose_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let api = Api::start(dir.path()).await;
        let old_key = api.key(4);
        api.running.stop().await.unwrap();
        let mut c = config(dir.path());
        c.participants.retain(|p| p.id != 4);
        let running = server::start(c).await.unwrap();
        let api = Api { running, client: Client::new() };
        let (s, _) = api.call(Method::GET, "/v1/orders", Some(&old_key), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        api.running.stop().await.unwrap();
    }
}
