//! The registry service's HTTP API, spoken raw: the OpenAPI document matches the routes, errors
//! are problem documents with stable codes and 4xx statuses, malformed input never gets a 500,
//! and a request without a time is stamped by the service's clock.

use cccx_settlement::faults::Faults;
use cccx_settlement::service::RegistryServer;
use cccx_settlement::SqliteRegistry;
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

struct Api {
    server: RegistryServer,
    http: Client,
}

impl Api {
    fn start() -> Api {
        let listen = "127.0.0.1:0".parse().expect("address");
        let registry = SqliteRegistry::open_in_memory().expect("open");
        let server = RegistryServer::start(registry, listen, Faults::default()).expect("start");
        // A fresh connection per request: some answers (413, say) close the connection, and a pooled
        // connection reused just then fails with an incomplete message.
        let http = Client::builder().pool_max_idle_per_host(0).build().expect("client");
        Api { server, http }
    }

    /// Sends a request; `body` is sent as raw text with the given content type.
    fn raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> (u16, String, Value) {
        let url = format!("{}{path}", self.server.url());
        let response = self
            .http
            .request(method, url)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .expect("send");
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().expect("body");
        (status, kind, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, _, value) = self.raw(method, path, "application/json", &text);
        (status, value)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body))
    }
}

/// Checks a problem document's shape and returns its code.
fn problem(status: u16, kind: &str, doc: &Value) -> String {
    assert!(kind.starts_with("application/problem+json"), "{status} {kind} {doc}");
    assert_eq!(doc["status"].as_u64(), Some(u64::from(status)), "{doc}");
    assert!(doc["type"].as_str().is_some_and(|t| t.starts_with("https://")), "{doc}");
    assert!(doc["title"].is_string() && doc["detail"].is_string(), "{doc}");
    doc["code"].as_str().expect("code").to_string()
}

fn setup(api: &Api) {
    for (n, a) in ["A", "B"].iter().enumerate() {
        let (s, _) = api.post("/v1/accounts", json!({"id": format!("open-{a}"), "account": a, "at": n}));
        assert_eq!(s, 201);
    }
    let issue =
        json!({"id": "i1", "account": "A", "instrument": 1, "vintage": 2022, "quantity": 10, "at": 5});
    assert_eq!(api.post("/v1/issuances", issue).0, 201);
}

/// `/openapi.json` describes the server: every operation in it is a live route (answered by
/// its handler, not the fallback), and every answer schema it names is defined.
#[test]
fn the_openapi_document_matches_the_routes() {
    let api = Api::start();
    let (s, doc) = api.call(Method::GET, "/openapi.json", None);
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "{doc}");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations.sort();
    let expected = [
        ("GET", "/health"),
        ("GET", "/v1/accounts/{account}/holdings"),
        ("GET", "/v1/accounts/{account}/statement"),
        ("GET", "/v1/transfers/{transfer}"),
        ("POST", "/v1/accounts"),
        ("POST", "/v1/batch"),
        ("POST", "/v1/expiries"),
        ("POST", "/v1/holdings-check"),
        ("POST", "/v1/issuances"),
        ("POST", "/v1/transfers"),
        ("POST", "/v1/transfers/{transfer}/post"),
        ("POST", "/v1/transfers/{transfer}/void"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(operations, expected);
    for schema in [
        "Transfer",
        "Holdings",
        "Statement",
        "ProblemDoc",
        "ProposeBody",
        "CheckAnswer",
        "BatchBody",
        "BatchAnswer",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    for (method, path) in &operations {
        let concrete = path.replace("{account}", "A").replace("{transfer}", "T1");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (status, body) = api.call(method.clone(), &concrete, Some(json!({})));
        assert_ne!(status, 405, "{method} {path}");
        assert_ne!(body["code"], "no_route", "{method} {path}");
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
    assert_eq!(api.call(Method::GET, "/v1/nothing", None).1["code"], "no_route");
    assert_eq!(api.call(Method::DELETE, "/v1/accounts", None).0, 405);
    api.server.stop().expect("stop");
}

#[test]
fn malformed_requests_get_400_problem_documents() {
    let api = Api::start();
    setup(&api);
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("/v1/accounts", "application/json", "{not json", 400, "malformed"),
        ("/v1/accounts", "application/json", "[]", 400, "malformed"),
        ("/v1/accounts", "application/json", r#"{"id": "x"}"#, 400, "malformed"),
        ("/v1/accounts", "application/json", r#"{"id": "x", "account": "C", "extra": 1}"#, 400, "malformed"),
        ("/v1/accounts", "application/json", r#"{"id": "a b", "account": "C"}"#, 400, "invalid_id"),
        ("/v1/accounts", "application/json", r#"{"id": "x", "account": ""}"#, 400, "invalid_id"),
        (
            "/v1/accounts",
            "application/json",
            r#"{"id": "x", "account": "C", "at": "soon"}"#,
            400,
            "invalid_timestamp",
        ),
        ("/v1/accounts", "application/json", r#"{"id": "x", "account": "C", "at": 1.5}"#, 400, "malformed"),
        ("/v1/accounts", "text/plain", r#"{"id": "x", "account": "C"}"#, 415, "unsupported_media_type"),
        (
            "/v1/issuances",
            "application/json",
            r#"{"id": "i", "account": "A", "instrument": -1, "vintage": 2022, "quantity": 1}"#,
            400,
            "malformed",
        ),
        (
            "/v1/issuances",
            "application/json",
            r#"{"id": "i", "account": "A", "instrument": 1, "vintage": 99999, "quantity": 1}"#,
            400,
            "malformed",
        ),
        (
            "/v1/transfers",
            "application/json",
            r#"{"id": "T", "from": "A", "to": "B", "instrument": 1, "quantity": 18446744073709551616}"#,
            400,
            "malformed",
        ),
        (
            "/v1/holdings-check",
            "application/json",
            r#"{"instrument": 1, "sells": {"": 1}}"#,
            400,
            "invalid_id",
        ),
        ("/v1/expiries", "application/json", r#"{"id": "e", "timeout_ns": -1}"#, 400, "malformed"),
    ];
    for (path, content_type, body, status, code) in cases {
        let (s, kind, doc) = api.raw(Method::POST, path, content_type, body);
        assert_eq!((s, problem(s, &kind, &doc)), (*status, code.to_string()), "{path} {body}: {doc}");
    }
    for path in [
        "/v1/accounts/A/holdings",
        "/v1/accounts/A/holdings?instrument=x",
        "/v1/accounts/A/holdings?instrument=1&as_of=yesterday",
        "/v1/accounts/A/statement?from=0",
        "/v1/accounts/A/holdings?instrument=1&colour=red",
    ] {
        let (s, kind, doc) = api.raw(Method::GET, path, "application/json", "");
        assert_eq!(s, 400, "{path}: {doc}");
        problem(s, &kind, &doc);
    }
    let huge = format!(r#"{{"id": "x", "account": "{}"}}"#, "A".repeat(2 << 20));
    let (s, kind, doc) = api.raw(Method::POST, "/v1/accounts", "application/json", &huge);
    assert_eq!((s, problem(s, &kind, &doc)), (413, "payload_too_large".to_string()));
    // None of it reached the ledger.
    let (s, h) = api.call(Method::GET, "/v1/accounts/C/holdings?instrument=1", None);
    assert_eq!((s, h["code"].as_str()), (404, Some("unknown_account")));
    api.server.stop().expect("stop");
}

#[test]
fn registry_errors_keep_their_codes_and_fields() {
    let api = Api::start();
    setup(&api);
    let propose = |id: &str, qty: u64, at: i64| {
        api.post(
            "/v1/transfers",
            json!({"id": id, "from": "A", "to": "B", "instrument": 1, "quantity": qty, "at": at}),
        )
    };
    let (s, doc) = propose("T1", 11, 10);
    assert_eq!((s, doc["code"].as_str()), (422, Some("insufficient_units")), "{doc}");
    assert_eq!((doc["requested"].as_u64(), doc["available"].as_u64()), (Some(11), Some(10)));
    assert_eq!(propose("T1", 11, 10), (s, doc), "a retry gets the stored refusal");
    assert_eq!(propose("T1", 3, 11).1["code"], "duplicate_id_other_fields");
    let (s, t) = propose("T2", 3, 12);
    assert_eq!((s, t["status"].as_str(), t["blocks"][0]["end"].as_u64()), (201, Some("Accepted"), Some(3)));
    assert_eq!(propose("T3", 1, 11).1["code"], "time_went_backwards");
    let (s, doc) = api.post("/v1/transfers/T9/post", json!({"id": "P9", "at": 13}));
    assert_eq!(
        (s, doc["code"].as_str(), doc["transfer"].as_str()),
        (404, Some("unknown_transfer"), Some("T9"))
    );
    assert_eq!(api.post("/v1/transfers/T2/void", json!({"id": "V2", "at": 13})).0, 200);
    let (s, doc) = api.post("/v1/transfers/T2/post", json!({"id": "P2", "at": 14}));
    assert_eq!(
        (s, doc["code"].as_str(), doc["transfer_status"].as_str()),
        (409, Some("transfer_not_pending"), Some("Terminated"))
    );
    let (s, doc) = api.post("/v1/accounts", json!({"id": "again", "account": "A", "at": 15}));
    assert_eq!((s, doc["code"].as_str()), (409, Some("account_exists")));
    let (s, doc) = api.call(Method::GET, "/v1/transfers/nope", None);
    assert_eq!((s, doc["code"].as_str()), (404, Some("unknown_transfer")));
    // Ids with URL-special characters travel in paths, percent-encoded.
    assert_eq!(api.post("/v1/accounts", json!({"id": "o/x", "account": "A/1?%", "at": 16})).0, 201);
    let (s, h) = api.call(Method::GET, "/v1/accounts/A%2F1%3F%25/holdings?instrument=1", None);
    assert_eq!((s, h["account"].as_str()), (200, Some("A/1?%")), "{h}");
    api.server.stop().expect("stop");
}

#[test]
fn without_a_time_the_service_stamps_the_request_with_its_clock() {
    let api = Api::start();
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let (s, a) = api.post("/v1/accounts", json!({"id": "o1", "account": "A"}));
    assert_eq!(s, 201);
    let opened = u128::try_from(a["opened_at"].as_i64().expect("opened_at")).expect("after 1970");
    assert!(opened >= before && opened < before + 60_000_000_000, "{opened} vs {before}");
    let (s, b) = api.post("/v1/accounts", json!({"id": "o2", "account": "B", "at": "2100-01-01T00:00:00Z"}));
    assert_eq!((s, b["opened_at"].as_i64()), (201, Some(4_102_444_800_000_000_000)));
    // The ledger's clock is now in 2100: a request stamped by the service is refused.
    let (s, doc) = api.post("/v1/accounts", json!({"id": "o3", "account": "C"}));
    assert_eq!((s, doc["code"].as_str()), (409, Some("time_went_backwards")));
    // An expiry remembers its answer under its id, as a retry needs.
    let expire = json!({"id": "e1", "timeout_ns": 0, "at": "2100-01-01T00:00:01Z"});
    let first = api.post("/v1/expiries", expire.clone());
    assert_eq!(first.0, 200);
    assert_eq!(api.post("/v1/expiries", expire), first);
    let other = json!({"id": "e1", "timeout_ns": 5, "at": "2100-01-01T00:00:01Z"});
    assert_eq!(api.post("/v1/expiries", other).1["code"], "duplicate_id_other_fields");
    let (s, h) = api.call(Method::GET, "/health", None);
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    api.server.stop().expect("stop");
}
