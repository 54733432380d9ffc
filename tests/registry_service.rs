//! `cccx registry serve` as its own process: the HTTP client works against it with faults
//! switched on, and after a SIGTERM and a restart on the same database the ledger is intact and
//! a retried request still gets its first answer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use cccx_engine::types::InstrumentId;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RequestId, Timestamp,
    TransferStatus, Vintage,
};

const CCC: InstrumentId = InstrumentId(3);

/// The registry process and its base URL; killed if the test fails before stopping it.
struct Service {
    child: Child,
    url: String,
    /// Kept open, so the process can still write to its standard error.
    _stderr: BufReader<ChildStderr>,
}

impl Service {
    fn start(db: &Path, faults: &[&str]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cccx"))
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(faults)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cccx registry serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut stderr = BufReader::new(stderr);
        let mut line = String::new();
        stderr.read_line(&mut line).expect("first line");
        let url = line.trim().strip_prefix("registry listening on ").expect("listening line").to_string();
        Service { child, url, _stderr: stderr }
    }

    /// SIGTERM, then the exit status must be success.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(killed.success());
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

fn id(s: &str) -> RequestId {
    RequestId::new(s).expect("id")
}

fn acct(s: &str) -> AccountId {
    AccountId::new(s).expect("account")
}

#[test]
fn the_registry_process_survives_faults_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("registry.db");
    let faults = [
        "--fault-seed",
        "3",
        "--fault-error-pct",
        "20",
        "--fault-drop-pct",
        "20",
        "--fault-duplicate-pct",
        "20",
        "--fault-jitter-ms",
        "2",
    ];
    let service = Service::start(&db, &faults);
    let config =
        HttpRegistryConfig { attempts_max: 40, backoff_ms: 1, backoff_max_ms: 20, ..Default::default() };
    let mut r = HttpRegistry::new(&service.url, config).expect("client");
    for (n, a) in ["A", "B"].into_iter().enumerate() {
        r.open_account(&OpenAccount { id: id(&format!("open-{a}")), account: acct(a) }, Timestamp(n as i64))
            .expect("open");
    }
    let issue = IssueUnits {
        id: id("i1"),
        account: acct("A"),
        instrument: CCC,
        vintage: Vintage(2023),
        quantity: 100,
    };
    r.issue(&issue, Timestamp(2)).expect("issue");
    let mut posted = Vec::new();
    for n in 0..20 {
        let tid = id(&format!("T{n}"));
        let propose = ProposeTransfer {
            id: tid.clone(),
            from: acct("A"),
            to: acct("B"),
            instrument: CCC,
            quantity: 3,
            vintage: None,
        };
        r.propose(&propose, Timestamp(10 + 2 * n)).expect("propose");
        let post = PostTransfer { id: id(&format!("P{n}")), transfer: tid };
        posted.push((post.clone(), r.post(&post, Timestamp(11 + 2 * n)).expect("post")));
    }
    assert!(r.retries() > 0, "no fault reached the client");
    assert_eq!(r.holdings(&acct("B"), CCC, None).expect("holdings").total.held, 60);
    service.stop();

    let service = Service::start(&db, &[]);
    let mut r = HttpRegistry::new(&service.url, HttpRegistryConfig::default()).expect("client");
    assert_eq!(r.holdings(&acct("A"), CCC, None).expect("holdings").total.held, 40);
    assert_eq!(r.holdings(&acct("B"), CCC, None).expect("holdings").total.held, 60);
    // A retry after the restart gets the first answer and moves nothing.
    let (post, first) = &posted[7];
    assert_eq!(&r.post(post, Timestamp(1_000)).expect("retry"), first);
    assert_eq!(first.status, TransferStatus::Completed);
    assert_eq!(r.holdings(&acct("B"), CCC, None).expect("holdings").total.held, 60);
    service.stop();
}
