//! The two sides of a reconciliation: what the exchange believes settled ([`ExchangeView`]) and
//! what the registry holds and recorded ([`RegistryView`]), both at one agreed time.

use std::collections::BTreeSet;

use cccx_engine::types::{InstrumentId, Qty};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::registry::Registry;
use crate::settle::{Obligation, ObligationState, Settlement, SettlementError};
use crate::types::{AccountId, HeldBlock, SerialBlock, StatementLine, Timestamp};

/// One obligation as reconciliation sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeEntry {
    /// The exchange's trade id.
    pub trade_id: String,
    /// The registry transfer that settles it (`<trade>:p`).
    pub transfer_id: String,
    /// The transferring account (the seller).
    pub from: AccountId,
    /// The acquiring account (the buyer).
    pub to: AccountId,
    /// The instrument.
    pub instrument: InstrumentId,
    /// Certificates.
    pub qty: Qty,
    /// Where the obligation stands.
    pub state: ObligationState,
    /// The serial blocks the registry moved for it (empty unless confirmed, or not recorded).
    pub blocks: Vec<SerialBlock>,
    /// When it last changed: for a confirmed obligation, when it was confirmed.
    pub updated_at: Timestamp,
}

impl ExchangeEntry {
    /// The entry of a stored obligation.
    pub fn from_obligation(o: Obligation) -> ExchangeEntry {
        let transfer_id = format!("{}:p", o.trade.trade_id);
        ExchangeEntry {
            transfer_id,
            trade_id: o.trade.trade_id,
            from: o.trade.seller,
            to: o.trade.buyer,
            instrument: o.trade.instrument,
            qty: o.trade.qty,
            state: o.state,
            blocks: o.blocks,
            updated_at: o.updated_at,
        }
    }

    /// Whether the exchange holds the transfer as completed in `[from, as_of]`.
    pub fn confirmed_in(&self, from: Timestamp, as_of: Timestamp) -> bool {
        self.state == ObligationState::Confirmed && from <= self.updated_at && self.updated_at <= as_of
    }
}

/// The exchange's side: every obligation, as of the agreed time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeView {
    /// The agreed time.
    pub as_of: Timestamp,
    /// The obligations, in the order they were recorded.
    pub entries: Vec<ExchangeEntry>,
}

impl ExchangeView {
    /// A view made of entries (tests, benches, other sources).
    pub fn new(as_of: Timestamp, entries: Vec<ExchangeEntry>) -> ExchangeView {
        ExchangeView { as_of, entries }
    }

    /// The view of a settlement database: every obligation, read once.
    pub fn from_settlement(
        settlement: &Settlement,
        as_of: Timestamp,
    ) -> Result<ExchangeView, SettlementError> {
        let entries = settlement.obligations()?.into_iter().map(ExchangeEntry::from_obligation).collect();
        Ok(ExchangeView { as_of, entries })
    }

    /// The registry accounts the obligations name (the scope of the registry view).
    pub fn accounts(&self) -> BTreeSet<AccountId> {
        self.entries.iter().flat_map(|e| [e.from.clone(), e.to.clone()]).collect()
    }

    /// The instruments the obligations name.
    pub fn instruments(&self) -> BTreeSet<InstrumentId> {
        self.entries.iter().map(|e| e.instrument).collect()
    }
}

/// An account's blocks of one instrument at one time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The account.
    pub account: AccountId,
    /// The instrument.
    pub instrument: InstrumentId,
    /// Its blocks, with the pending transfer that reserves each, if any.
    pub blocks: Vec<HeldBlock>,
}

impl Position {
    /// Units held (reserved ones included).
    pub fn total(&self) -> u128 {
        self.blocks.iter().map(|b| u128::from(b.block.quantity())).sum()
    }
}

/// One line of an account's statement: the transfer trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailLine {
    /// The account whose statement it is.
    pub account: AccountId,
    /// The line.
    pub line: StatementLine,
}

/// The registry's side for the accounts in scope: holdings when the window opens and at the
/// agreed time, and the statement lines in between.
///
/// The window is `[from, as_of]`, both ends included: `opening` is the holdings after every
/// change dated before `from`, `closing` after every change dated at or before `as_of`, and
/// `trail` the statement lines dated in the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// The start of the window (the session start).
    pub from: Timestamp,
    /// The agreed time.
    pub as_of: Timestamp,
    /// Holdings just before `from`.
    pub opening: Vec<Position>,
    /// Holdings at `as_of`.
    pub closing: Vec<Position>,
    /// Statement lines in the window, per account, in ledger order.
    pub trail: Vec<TrailLine>,
}

/// An answer about one account: an account the registry does not know holds nothing and has
/// no statement (`None`).
fn known<T>(answer: Result<T, RegistryError>) -> Result<Option<T>, RegistryError> {
    match answer {
        Ok(x) => Ok(Some(x)),
        Err(RegistryError::UnknownAccount(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl RegistryView {
    /// A view made of plain values (tests, benches).
    pub fn new(
        from: Timestamp,
        as_of: Timestamp,
        opening: Vec<Position>,
        closing: Vec<Position>,
        trail: Vec<TrailLine>,
    ) -> RegistryView {
        RegistryView { from, as_of, opening, closing, trail }
    }

    /// Asks a registry for the holdings of every account and instrument in scope at the
    /// window's two ends and for the accounts' statements in the window. An account the
    /// registry does not know holds nothing and has no statement (the obligations that name
    /// it show up as breaks).
    pub fn load(
        registry: &dyn Registry,
        accounts: &BTreeSet<AccountId>,
        instruments: &BTreeSet<InstrumentId>,
        from: Timestamp,
        as_of: Timestamp,
    ) -> Result<RegistryView, RegistryError> {
        let before_from = Timestamp(from.0.saturating_sub(1));
        let after_as_of = Timestamp(as_of.0.saturating_add(1));
        let mut view = RegistryView::new(from, as_of, Vec::new(), Vec::new(), Vec::new());
        let accounts: Vec<AccountId> = accounts.iter().cloned().collect();
        for &instrument in instruments {
            for (at, out) in [(before_from, &mut view.opening), (as_of, &mut view.closing)] {
                for (account, h) in
                    accounts.iter().zip(registry.holdings_of(&accounts, instrument, Some(at))?)
                {
                    if let Some(h) = known(h)? {
                        out.push(Position { account: account.clone(), instrument, blocks: h.blocks });
                    }
                }
            }
        }
        // Positions by account, then instrument, as the per-account queries gave them.
        view.opening.sort_by(|a, b| (&a.account, a.instrument).cmp(&(&b.account, b.instrument)));
        view.closing.sort_by(|a, b| (&a.account, a.instrument).cmp(&(&b.account, b.instrument)));
        for (account, s) in accounts.iter().zip(registry.statements_of(&accounts, from, after_as_of)?) {
            if let Some(s) = known(s)? {
                view.trail.extend(
                    s.lines
                        .into_iter()
                        .filter(|l| instruments.contains(&l.block.instrument))
                        .map(|line| TrailLine { account: account.clone(), line }),
                );
            }
        }
        Ok(view)
    }
}
