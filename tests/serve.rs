//! `cccx serve` as a user runs it: a configuration file, SIGTERM for a clean stop, a restart
//! that finds the book as it was. Plain HTTP/1.1 over a TcpStream, on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    http: String,
    lines: std::sync::mpsc::Receiver<String>,
}

fn start(config: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cccx"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cccx serve starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut http = None;
    while http.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(30)).expect("the server prints its addresses");
        if let Some(rest) = line.trim().strip_prefix("HTTP") {
            http = rest.split_whitespace().next().map(|u| u.trim_start_matches("http://").to_string());
        }
    }
    Server { child, http: http.unwrap(), lines }
}

impl Server {
    fn request(&self, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.http,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cccx serve exits 0 on SIGTERM: {status}");
        self.lines.try_iter().collect()
    }
}

fn key(data: &Path, participant: &str) -> String {
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("secrets.json")).unwrap()).unwrap();
    secrets["participants"][participant]["api_key"].as_str().unwrap().to_string()
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_finds_the_book() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("cccx.toml");
    let defaults =
        Command::new(env!("CARGO_BIN_EXE_cccx")).args(["serve", "--print-default-config"]).output().unwrap();
    let text = String::from_utf8(defaults.stdout)
        .unwrap()
        .replace("data_dir = \"data\"", &format!("data_dir = {:?}", data.to_str().unwrap()))
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9878", "127.0.0.1:0");
    std::fs::write(&config, text).unwrap();

    let server = start(&config);
    let seller = key(&data, "4");
    let order = r#"{"symbol":"CCC-2026-O","side":"sell","price":1500,"qty":70}"#;
    let (status, body) = server.request("POST", "/v1/orders", &seller, order);
    assert_eq!(status, 201, "{body}");
    let (_, book) = server.request("GET", "/v1/instruments/CCC-2026-O/book", &seller, "");
    let lines = server.terminate();
    assert!(lines.iter().any(|l| l.contains("stopped cleanly")), "{lines:?}");

    let server = start(&config);
    let (status, again) = server.request("GET", "/v1/instruments/CCC-2026-O/book", &seller, "");
    assert_eq!((status, &again), (200, &book));
    assert!(again.contains("\"qty\":70"), "{again}");
    server.terminate();
}

#[test]
fn a_bad_configuration_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[instrument]]\nsymbol = \"X\"\nmode = \"sideways\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cccx"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("line 3") && err.contains("sideways"), "{err}");
}

/// Killed (SIGKILL) right after trading, the server settles on restart what the journal holds:
/// every trade once, whether or not settlement got to it before the kill.
#[test]
fn after_a_kill_the_journaled_trades_settle_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("cccx.toml");
    let text = cccx_gateway_default_config()
        .replace("data_dir = \"data\"", &format!("data_dir = {:?}", data.to_str().unwrap()))
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9878", "127.0.0.1:0");
    std::fs::write(&config, text).unwrap();

    let mut server = start(&config);
    let (seller, buyer) = (key(&data, "4"), key(&data, "1"));
    let sell = r#"{"symbol":"CCC-2026-O","side":"sell","price":1500,"qty":70}"#;
    assert_eq!(server.request("POST", "/v1/orders", &seller, sell).0, 201);
    for qty in [30, 40] {
        let buy = format!(r#"{{"symbol":"CCC-2026-O","side":"buy","price":1500,"qty":{qty}}}"#);
        assert_eq!(server.request("POST", "/v1/orders", &buyer, &buy).0, 201);
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let server = start(&config);
    let mut confirmed = 0;
    for _ in 0..200 {
        let (status, body) = server.request("GET", "/v1/settlement/summary", &buyer, "");
        assert_eq!(status, 200, "{body}");
        let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
        confirmed = summary["states"]["confirmed"].as_u64().unwrap();
        if confirmed == 2 {
            assert_eq!(summary["total"], 2, "{summary}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(confirmed, 2);
    server.terminate();
    let registry = cccx_settlement::SqliteRegistry::open(data.join("registry.sqlite")).unwrap();
    let held = |a: &str| {
        use cccx_settlement::Registry;
        let account = cccx_settlement::AccountId::new(a).unwrap();
        registry.holdings(&account, cccx_engine::InstrumentId(1), None).unwrap().total.held
    };
    assert_eq!((held("IN-CCC-0001"), held("IN-CCC-0004")), (70, 30_000 - 70));
}

fn cccx_gateway_default_config() -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_cccx")).args(["serve", "--print-default-config"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}
