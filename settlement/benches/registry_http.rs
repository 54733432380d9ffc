//! Transfers per second through [`HttpRegistry`] against the registry service on loopback: each
//! transfer is a proposal and its post. Sent one at a time, that is two HTTP requests and two
//! database transactions; sent in batches (`POST /v1/batch`), one request and one transaction
//! carry a whole batch of proposals, another the posts; or one carries a batch of proposals
//! posted at once (`propose_and_post`, what settlement sends).
//!
//! One client sends with its own clock; then several clients at once, dated by the service's
//! clock. The service runs in this process (its own runtime and ledger thread), on a database
//! file, no faults.
//!
//! `cargo bench -p cccx-settlement --bench registry_http [-- TRANSFERS]`

use std::time::Instant;

use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig, TimeSource};
use cccx_settlement::faults::Faults;
use cccx_settlement::service::RegistryServer;
use cccx_settlement::sqlite::Durability;
use cccx_settlement::{RegistryError, SqliteRegistry};

mod common;
use common::Mode;

/// Operations per batch in the batched runs.
const BATCH: u64 = 1024;

/// One client's share: open two accounts, issue, then `transfers` transfers sent as `mode` says.
fn client(
    url: &str,
    c: usize,
    transfers: u64,
    time_source: TimeSource,
    mode: Mode,
) -> Result<(), RegistryError> {
    let config = HttpRegistryConfig { time_source, ..HttpRegistryConfig::default() };
    let mut r = HttpRegistry::new(url, config)?;
    let tag = c.to_string();
    let (a, b) = common::setup(&mut r, &tag, transfers)?;
    common::send(&mut r, &tag, (&a, &b), transfers, mode)
}

fn run(
    durability: Durability,
    clients: usize,
    transfers: u64,
    mode: Mode,
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
            std::thread::spawn(move || client(&url, c, each, time_source, mode))
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
        let modes = [
            (1, Mode::OneByOne),
            (4, Mode::OneByOne),
            (16, Mode::OneByOne),
            (1, Mode::Batches(BATCH)),
            (4, Mode::Batches(BATCH)),
            (1, Mode::ProposeAndPost(BATCH)),
            (4, Mode::ProposeAndPost(BATCH)),
        ];
        for (clients, mode) in modes {
            let rate = run(durability, clients, transfers, mode)?;
            println!(
                "registry service over HTTP, WAL file {name}, {clients} client(s), {}: {transfers} \
                 transfers, {rate:.0} transfers/s",
                mode.describe()
            );
        }
    }
    Ok(())
}
