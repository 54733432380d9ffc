//! Transfers per second through [`HttpRegistry`] against the registry service on loopback: each
//! transfer is a proposal and its post. Sent one at a time, that is two HTTP requests and two
//! database transactions; sent in batches (`POST /v1/batch`), one request and one transaction
//! carry a whole batch of proposals, another the posts.
//!
//! One client sends with its own clock; then several clients at once, dated by the service's
//! clock. The service runs in this process (its own runtime and ledger thread), on a database
//! file, no faults.
//!
//! `cargo bench -p cccx-settlement --bench registry_http [-- TRANSFERS]`

use std::time::Instant;

use cccx_engine::types::InstrumentId;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig, TimeSource};
use cccx_settlement::faults::Faults;
use cccx_settlement::service::RegistryServer;
use cccx_settlement::sqlite::Durability;
use cccx_settlement::{
    AccountId, BatchOp, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RegistryError,
    RequestId, SqliteRegistry, Timestamp, Vintage,
};

fn id(s: String) -> Result<RequestId, RegistryError> {
    RequestId::new(s)
}

/// Operations per batch in the batched runs (settlement's chunk).
const BATCH: u64 = 1024;

/// One client's share: open two accounts, issue, then `transfers` proposals and posts, one by
/// one (`batch` = 1) or `batch` at a time.
fn client(
    url: &str,
    c: usize,
    transfers: u64,
    time_source: TimeSource,
    batch: u64,
) -> Result<(), RegistryError> {
    let config = HttpRegistryConfig { time_source, ..HttpRegistryConfig::default() };
    let mut r = HttpRegistry::new(url, config)?;
    let (a, b) = (AccountId::new(format!("A{c}"))?, AccountId::new(format!("B{c}"))?);
    r.open_account(&OpenAccount { id: id(format!("oa{c}"))?, account: a.clone() }, Timestamp(0))?;
    r.open_account(&OpenAccount { id: id(format!("ob{c}"))?, account: b.clone() }, Timestamp(0))?;
    let issue = IssueUnits {
        id: id(format!("i{c}"))?,
        account: a.clone(),
        instrument: InstrumentId(0),
        vintage: Vintage(2024),
        quantity: transfers * 10,
    };
    r.issue(&issue, Timestamp(0))?;
    if batch > 1 {
        return batches(&mut r, c, (a, b), transfers, batch);
    }
    for n in 0..transfers {
        let at = Timestamp(1 + n as i64);
        let t = id(format!("t{c}-{n}"))?;
        let propose = ProposeTransfer {
            id: t.clone(),
            from: a.clone(),
            to: b.clone(),
            instrument: InstrumentId(0),
            quantity: 10,
            vintage: None,
        };
        r.propose(&propose, at)?;
        r.post(&PostTransfer { id: id(format!("p{c}-{n}"))?, transfer: t }, at)?;
    }
    Ok(())
}

/// `transfers` proposals and posts, `batch` proposals in one request, then their posts in one.
fn batches(
    r: &mut HttpRegistry,
    c: usize,
    (a, b): (AccountId, AccountId),
    transfers: u64,
    batch: u64,
) -> Result<(), RegistryError> {
    let mut n = 0;
    while n < transfers {
        let at = Timestamp(1 + n as i64);
        let (mut proposals, mut posts) = (Vec::new(), Vec::new());
        for k in n..transfers.min(n + batch) {
            let t = id(format!("t{c}-{k}"))?;
            proposals.push(BatchOp::Propose(ProposeTransfer {
                id: t.clone(),
                from: a.clone(),
                to: b.clone(),
                instrument: InstrumentId(0),
                quantity: 10,
                vintage: None,
            }));
            posts.push(BatchOp::Post(PostTransfer { id: id(format!("p{c}-{k}"))?, transfer: t }));
        }
        for ops in [proposals, posts] {
            for answer in r.apply_batch(&ops, at)? {
                answer?;
            }
        }
        n += batch;
    }
    Ok(())
}

fn run(
    durability: Durability,
    clients: usize,
    transfers: u64,
    batch: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let registry = SqliteRegistry::open_with(dir.path().join("bench.db"), durability)?;
    let server = RegistryServer::start(registry, "127.0.0.1:0".parse()?, Faults::default())?;
    let url = server.url();
    let time_source = if clients == 1 { TimeSource::Caller } else { TimeSource::Service };
    let each = transfers / clients as u64;
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || client(&url, c, each, time_source, batch))
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "client thread panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    server.stop()?.check_invariants()?;
    Ok((each * clients as u64) as f64 / secs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` runs this without --bench: a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let default = if smoke { 200 } else { 20_000 };
    let transfers: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    for (name, durability) in
        [("synchronous=NORMAL", Durability::Normal), ("synchronous=FULL", Durability::Full)]
    {
        for (clients, batch) in [(1, 1), (4, 1), (16, 1), (1, BATCH), (4, BATCH)] {
            let rate = run(durability, clients, transfers, batch)?;
            let how = if batch == 1 { "one by one".to_string() } else { format!("in batches of {batch}") };
            println!(
                "registry service over HTTP, WAL file {name}, {clients} client(s), {how}: {transfers} \
                 transfers (propose+post), {rate:.0} transfers/s"
            );
        }
    }
    Ok(())
}
