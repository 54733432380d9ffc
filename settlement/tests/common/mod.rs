//! Helpers the settlement and reconciliation tests share.
// Each test crate uses its own subset.
#![allow(dead_code)]

use cccx_engine::types::InstrumentId;
use cccx_settlement::settle::TradeToSettle;
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, Registry, RequestId, SqliteRegistry, Timestamp, Vintage,
};

/// The one instrument of these tests.
pub const CCC: InstrumentId = InstrumentId(0);

/// An account id.
pub fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

/// An in-memory registry with these accounts (opened at time 1), each issued its quantity of
/// vintage 2024 (at time 2).
pub fn registry_with(holdings: &[(&str, u64)]) -> SqliteRegistry {
    let mut r = SqliteRegistry::open_in_memory().unwrap();
    for (a, _) in holdings {
        let open = OpenAccount { id: RequestId::new(format!("open-{a}")).unwrap(), account: acct(a) };
        r.open_account(&open, Timestamp(1)).unwrap();
    }
    for (n, (a, qty)) in holdings.iter().enumerate().filter(|(_, (_, q))| *q > 0) {
        let issue = IssueUnits {
            id: RequestId::new(format!("issue-{n}")).unwrap(),
            account: acct(a),
            instrument: CCC,
            vintage: Vintage(2024),
            quantity: *qty,
        };
        r.issue(&issue, Timestamp(2)).unwrap();
    }
    r
}

/// A trade of `qty` at `price`, traded at time 10.
pub fn trade(id: &str, seller: &str, buyer: &str, qty: u64, price: i64) -> TradeToSettle {
    TradeToSettle {
        trade_id: id.into(),
        instrument: CCC,
        buyer: acct(buyer),
        seller: acct(seller),
        qty,
        price,
        traded_at: Timestamp(10),
    }
}
