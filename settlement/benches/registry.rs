//! Transfers per second of the embedded registry on a database file: each transfer is a
//! proposal (reserving 10 units, splitting a block) and its post, two database transactions.
//!
//! `cargo bench -p cccx-settlement --bench registry [-- TRANSFERS]`

use std::time::Instant;

use cccx_engine::types::InstrumentId;
use cccx_settlement::sqlite::Durability;
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RegistryError, RequestId,
    SqliteRegistry, Timestamp, Vintage,
};

fn id(s: String) -> Result<RequestId, RegistryError> {
    RequestId::new(s)
}

fn run(durability: Durability, transfers: u64) -> Result<f64, RegistryError> {
    let dir = tempfile::tempdir().map_err(|e| RegistryError::Storage(e.to_string()))?;
    let mut r = SqliteRegistry::open_with(dir.path().join("bench.db"), durability)?;
    let (a, b) = (AccountId::new("A")?, AccountId::new("B")?);
    r.open_account(&OpenAccount { id: id("oa".into())?, account: a.clone() }, Timestamp(0))?;
    r.open_account(&OpenAccount { id: id("ob".into())?, account: b.clone() }, Timestamp(0))?;
    let issue = IssueUnits {
        id: id("i".into())?,
        account: a.clone(),
        instrument: InstrumentId(0),
        vintage: Vintage(2024),
        quantity: transfers * 10,
    };
    r.issue(&issue, Timestamp(0))?;
    let start = Instant::now();
    for n in 0..transfers {
        let at = Timestamp(1 + n as i64);
        let t = id(format!("t{n}"))?;
        let propose = ProposeTransfer {
            id: t.clone(),
            from: a.clone(),
            to: b.clone(),
            instrument: InstrumentId(0),
            quantity: 10,
            vintage: None,
        };
        r.propose(&propose, at)?;
        r.post(&PostTransfer { id: id(format!("p{n}"))?, transfer: t }, at)?;
    }
    let secs = start.elapsed().as_secs_f64();
    r.check_invariants().map_err(RegistryError::Storage)?;
    Ok(transfers as f64 / secs)
}

fn main() -> Result<(), RegistryError> {
    let transfers: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000);
    for (name, durability) in
        [("synchronous=FULL", Durability::Full), ("synchronous=NORMAL", Durability::Normal)]
    {
        let rate = run(durability, transfers)?;
        println!("embedded registry, WAL file, {name}: {transfers} transfers (propose+post), {rate:.0} transfers/s");
    }
    Ok(())
}
