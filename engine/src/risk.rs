//! Pre-trade risk: participants' accounts and locks, and their standing (defaults and
//! suspensions).
//!
//! # Accounts
//!
//! With [`RiskConfig::checks`] on, every participant has a funds account and, per instrument, a
//! certificate holding. Both change only through sequenced commands, so replay reproduces them:
//! `FUNDS` (a deposit, or a withdrawal when negative), `HOLDINGS` (certificates credited or
//! debited as the registry reports them), and the events of trading.
//!
//! | what happens | funds of the buyer | holdings of the seller |
//! |---|---|---|
//! | a buy order enters | locks `limit x qty` | |
//! | a sell order enters | | locks `qty` |
//! | a fill at price `p` | unlocks `limit x q`, pays `p x q`, `(limit - p) x q` is available again | unlocks `q`, delivers `q` |
//! | a cancel, expiry, self-trade prevention or book-full cancel | unlocks `limit x leaves` | unlocks `leaves` |
//! | an amendment | the lock becomes `new price x new leaves` | the lock becomes `new leaves` |
//!
//! A market buy (IOC or FOK) locks at the instrument's price ceiling (the forbearance price):
//! every fill is at or below it, and what it did not use is unlocked when the remainder is
//! cancelled at the end of the command. With no ceiling configured a market buy cannot be
//! priced, and is rejected ([`RejectReason::MarketBuyNeedsCeiling`]).
//!
//! What a participant receives from a trade (the buyer's certificates, the seller's money) is
//! recorded (`bought`, `received`) but is not available until settlement credits it with a
//! `HOLDINGS` or `FUNDS` command: the registry moves certificates on trade day, the seller is
//! paid T+1. Those commands carry the net change the registry or the ledger reports, and
//! settle the open amounts first: a `HOLDINGS` debit first settles certificates sold
//! (`delivered`) and takes only the rest from what is available; a credit settles certificates
//! bought (`bought`) and a `FUNDS` deposit sale proceeds (`received`), and both add their whole
//! amount to what is available.
//!
//! The invariants, checked by [`Risk::check`] (the property tests run it after every command):
//! for every participant, `available + locked + paid = deposited` for funds and
//! `available + locked + delivered = held` for each holding, nothing is negative, and the locks
//! equal what the resting orders in the books lock.
//!
//! With checks off (the canonical workload mode of `cccx bench`) no accounts are kept, nothing is
//! checked and `FUNDS`/`HOLDINGS` are rejected ([`RejectReason::RiskChecksOff`]).
//!
//! # Standing
//!
//! The registry's holdings check (see [`crate::message::CommandBody::Shortfall`]) counts a
//! default against a seller found short. [`RiskConfig::defaults_to_suspend`] defaults within one
//! calendar quarter (Indian Standard Time) suspend the participant for
//! [`RiskConfig::suspension_ns`]: its resting orders are cancelled and its new orders and
//! amendments are rejected ([`RejectReason::ParticipantSuspended`]) until the suspension ends.
//! Standing is kept whether or not risk checks are on.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use crate::book::RestingOrder;
use crate::message::{Event, NewOrder, RejectReason};
use crate::types::{InstrumentId, InstrumentSpec, OrderId, OrderType, ParticipantId, Price, Qty, Side};

/// Amounts of money in the instruments' price unit, and certificate counts in accounts: wide
/// enough that `price x quantity` summed over every order cannot overflow.
pub type Amount = i128;

/// Nanoseconds in a day.
const DAY_NS: u64 = 86_400_000_000_000;
/// Indian Standard Time, UTC+05:30, in seconds.
const IST_OFFSET_SECONDS: i32 = 5 * 3600 + 30 * 60;

/// The risk settings of an engine (stored with its instruments in the journal directory).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskConfig {
    /// Keep accounts and check every order against them.
    pub checks: bool,
    /// Defaults within one calendar quarter that suspend a participant (0: never suspend).
    pub defaults_to_suspend: u32,
    /// How long a suspension lasts, in nanoseconds.
    pub suspension_ns: u64,
}

impl RiskConfig {
    /// No accounts and no checks (the canonical workload semantics); three defaults in a quarter
    /// still suspend for 182 days.
    pub const OFF: RiskConfig =
        RiskConfig { checks: false, defaults_to_suspend: 3, suspension_ns: 182 * DAY_NS };

    /// Accounts kept and every order checked; three defaults in a quarter suspend for 182 days
    /// (the REC rule: six months).
    pub const ON: RiskConfig = RiskConfig { checks: true, ..RiskConfig::OFF };
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig::OFF
    }
}

/// A participant's money at the exchange.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funds {
    /// Deposits minus withdrawals (settled sale proceeds arrive as deposits).
    pub deposited: Amount,
    /// What new buy orders may lock.
    pub available: Amount,
    /// Locked by resting (or, within a command, incoming) buy orders.
    pub locked: Amount,
    /// Paid for certificates bought.
    pub paid: Amount,
    /// The value of certificates sold: receivable, paid out on settlement.
    pub received: Amount,
}

/// A participant's certificates of one instrument.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// Certificates in the participant's registry account, as the registry reported them.
    pub held: Amount,
    /// What new sell orders may lock.
    pub available: Amount,
    /// Locked by resting (or, within a command, incoming) sell orders.
    pub locked: Amount,
    /// Sold: owed to buyers, leaving the registry account on settlement.
    pub delivered: Amount,
    /// Bought: receivable, credited on settlement.
    pub bought: Amount,
}

/// A participant's record of defaults in the registry's holdings check.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Every default so far.
    pub defaults_total: u32,
    /// The calendar quarter (IST) of the last default, as `year * 4 + quarter - 1`.
    pub quarter: u32,
    /// Defaults in that quarter.
    pub defaults_in_quarter: u32,
    /// Suspended while a command's time is before this (nanoseconds since the epoch; 0: never
    /// suspended).
    pub suspended_until: u64,
}

/// One participant's accounts and standing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Money.
    pub funds: Funds,
    /// Certificates per instrument.
    pub holdings: BTreeMap<InstrumentId, Holding>,
    /// Defaults and suspension.
    pub standing: Standing,
}

/// The risk part of an engine's state as plain values (part of a snapshot). The locks are not
/// stored: they follow from the resting orders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskImage {
    /// The settings.
    pub config: RiskConfig,
    /// Every participant with an account or a default, in id order.
    pub accounts: Vec<(ParticipantId, Account)>,
}

/// What one order locks.
#[derive(Copy, Clone, Debug)]
struct Lock {
    participant: ParticipantId,
    side: Side,
    /// The price the funds are locked at (the limit; the ceiling for a market buy).
    price: Price,
    leaves: Qty,
}

impl Lock {
    fn amount(&self, qty: Qty) -> Amount {
        match self.side {
            Side::Buy => Amount::from(self.price) * Amount::from(qty),
            Side::Sell => Amount::from(qty),
        }
    }
}

/// Accounts, locks and standing: the engine's pre-trade risk.
#[derive(Debug, Default)]
pub struct Risk {
    config: RiskConfig,
    /// Accounts by participant (a deterministic hasher; iterated in participant order only
    /// through [`Risk::accounts`]).
    accounts: FxHashMap<ParticipantId, Account>,
    /// The lock of every live order, by instrument and order id (a deterministic hasher; only
    /// looked up, never iterated into an output).
    locks: FxHashMap<(InstrumentId, OrderId), Lock>,
    /// Participants suspended at some time, with the end of their suspension: looked up on
    /// every order only when not empty.
    suspended: BTreeMap<ParticipantId, u64>,
}

impl Risk {
    /// Empty accounts under `config`.
    pub fn new(config: RiskConfig) -> Self {
        Risk { config, ..Risk::default() }
    }

    /// The settings.
    pub fn config(&self) -> RiskConfig {
        self.config
    }

    /// Whether accounts are kept and orders checked.
    #[inline]
    pub fn checks(&self) -> bool {
        self.config.checks
    }

    /// A participant's accounts and standing, if it has any.
    pub fn account(&self, participant: ParticipantId) -> Option<&Account> {
        self.accounts.get(&participant)
    }

    /// Every account, in participant order (allocates, to sort).
    pub fn accounts(&self) -> Vec<(&ParticipantId, &Account)> {
        let mut all: Vec<_> = self.accounts.iter().collect();
        all.sort_unstable_by_key(|(p, _)| **p);
        all
    }

    /// Whether `participant` is suspended at time `ts_ns`.
    #[inline]
    pub fn is_suspended(&self, participant: ParticipantId, ts_ns: u64) -> bool {
        !self.suspended.is_empty() && self.suspended.get(&participant).is_some_and(|&until| ts_ns < until)
    }

    /// The checks of a NEW against the participant's standing and accounts.
    #[inline]
    pub fn check_new(&self, spec: &InstrumentSpec, order: &NewOrder, ts_ns: u64) -> Result<(), RejectReason> {
        if self.is_suspended(order.participant, ts_ns) {
            return Err(RejectReason::ParticipantSuspended);
        }
        if !self.checks() {
            return Ok(());
        }
        let lock = Lock {
            participant: order.participant,
            side: order.side,
            price: lock_price(spec, order)?,
            leaves: order.qty,
        };
        self.check_available(order.instrument, &lock, lock.amount(order.qty))
    }

    /// The checks of an AMEND of `order_id` to `price` and `qty`. An order the risk does not
    /// know, or that belongs to someone else, passes: the book rejects it.
    pub fn check_amend(
        &self,
        instrument: InstrumentId,
        order_id: OrderId,
        participant: ParticipantId,
        price: Price,
        qty: Qty,
        ts_ns: u64,
    ) -> Result<(), RejectReason> {
        if self.is_suspended(participant, ts_ns) {
            return Err(RejectReason::ParticipantSuspended);
        }
        let Some(old) = self.locks.get(&(instrument, order_id)).filter(|l| l.participant == participant)
        else {
            return Ok(());
        };
        let new = Lock { price, leaves: qty, ..*old };
        let more = new.amount(qty) - old.amount(old.leaves);
        if more <= 0 {
            return Ok(());
        }
        self.check_available(instrument, old, more)
    }

    fn check_available(
        &self,
        instrument: InstrumentId,
        lock: &Lock,
        amount: Amount,
    ) -> Result<(), RejectReason> {
        let account = self.accounts.get(&lock.participant);
        match lock.side {
            Side::Buy => {
                let available = account.map_or(0, |a| a.funds.available);
                if amount > available {
                    return Err(RejectReason::InsufficientFunds);
                }
            }
            Side::Sell => {
                let available = account.and_then(|a| a.holdings.get(&instrument)).map_or(0, |h| h.available);
                if amount > available {
                    return Err(RejectReason::InsufficientHoldings);
                }
            }
        }
        Ok(())
    }

    /// A deposit (`amount > 0`) or withdrawal (`amount < 0`) of funds. A deposit pays the
    /// participant's sale proceeds (`received`) first.
    pub fn adjust_funds(&mut self, participant: ParticipantId, amount: i64) -> Result<(), RejectReason> {
        if !self.checks() {
            return Err(RejectReason::RiskChecksOff);
        }
        let amount = Amount::from(amount);
        let available = self.accounts.get(&participant).map_or(0, |a| a.funds.available);
        if available + amount < 0 {
            return Err(RejectReason::InsufficientFunds);
        }
        let funds = &mut self.accounts.entry(participant).or_default().funds;
        funds.received -= amount.clamp(0, funds.received);
        funds.deposited += amount;
        funds.available += amount;
        Ok(())
    }

    /// Certificates credited (`qty > 0`) to or debited (`qty < 0`) from a registry account, as
    /// the registry reports the net change: a debit settles certificates already sold
    /// (`delivered`) first and takes only the rest from what is available; a credit settles
    /// certificates bought (`bought`) first.
    pub fn adjust_holdings(
        &mut self,
        participant: ParticipantId,
        instrument: InstrumentId,
        qty: i64,
    ) -> Result<(), RejectReason> {
        if !self.checks() {
            return Err(RejectReason::RiskChecksOff);
        }
        let qty = Amount::from(qty);
        let current = self.accounts.get(&participant).and_then(|a| a.holdings.get(&instrument));
        let (available, delivered) = current.map_or((0, 0), |h| (h.available, h.delivered));
        let settled = (-qty).clamp(0, delivered);
        if available + qty + settled < 0 {
            return Err(RejectReason::InsufficientHoldings);
        }
        let holding = self.holding(participant, instrument);
        holding.bought -= qty.clamp(0, holding.bought);
        holding.delivered -= settled;
        holding.held += qty;
        holding.available += qty + settled;
        Ok(())
    }

    /// Counts a default against `participant` at time `ts_ns`; returns the defaults in the
    /// quarter, and the end of a suspension when this default suspends the participant.
    pub fn record_default(&mut self, participant: ParticipantId, ts_ns: u64) -> (u32, Option<u64>) {
        let quarter = quarter_of(ts_ns);
        let standing = &mut self.accounts.entry(participant).or_default().standing;
        if standing.defaults_in_quarter == 0 || standing.quarter != quarter {
            standing.quarter = quarter;
            standing.defaults_in_quarter = 0;
        }
        standing.defaults_in_quarter += 1;
        standing.defaults_total += 1;
        let count = standing.defaults_in_quarter;
        let limit = self.config.defaults_to_suspend;
        if limit == 0 || count < limit {
            return (count, None);
        }
        let until = ts_ns.saturating_add(self.config.suspension_ns);
        standing.suspended_until = standing.suspended_until.max(until);
        self.suspended.insert(participant, standing.suspended_until);
        (count, Some(standing.suspended_until))
    }

    /// Updates locks and accounts from one event of a command, as it happens (`order` is the
    /// NEW of the command, if it is one). Only with checks on.
    ///
    /// The engine calls it for every event whatever the caller does with the events, so that a
    /// replay that discards them keeps the same accounts. Within a command, the checks that read
    /// the accounts all run before its first event, and what the events change commutes with the
    /// default a shortfall counts between them, so updating as each event happens gives the
    /// accounts that updating after the whole command did.
    pub fn on_event(&mut self, specs: &[InstrumentSpec], order: Option<&NewOrder>, event: &Event) {
        match *event {
            Event::Accepted { order_id, instrument } => {
                let Some(o) = order.filter(|o| o.order_id == order_id && o.instrument == instrument) else {
                    return;
                };
                let spec = specs.get(instrument.0 as usize);
                let price = spec.and_then(|s| lock_price(s, o).ok()).unwrap_or(o.price);
                let lock = Lock { participant: o.participant, side: o.side, price, leaves: o.qty };
                self.lock(instrument, lock.amount(o.qty), &lock);
                self.locks.insert((instrument, order_id), lock);
            }
            Event::Trade(t) => {
                let value = Amount::from(t.price) * Amount::from(t.qty);
                if let Some(lock) = self.take(t.instrument, t.buy_order_id, t.qty) {
                    let funds = &mut self.accounts.entry(lock.participant).or_default().funds;
                    let released = lock.amount(t.qty);
                    funds.locked -= released;
                    funds.available += released - value;
                    funds.paid += value;
                    let holding = self.holding(t.buyer, t.instrument);
                    holding.bought += Amount::from(t.qty);
                }
                if let Some(lock) = self.take(t.instrument, t.sell_order_id, t.qty) {
                    let holding = self.holding(lock.participant, t.instrument);
                    holding.locked -= Amount::from(t.qty);
                    holding.delivered += Amount::from(t.qty);
                    self.accounts.entry(t.seller).or_default().funds.received += value;
                }
            }
            Event::Cancelled { order_id, instrument, leaves_qty, .. }
            | Event::Expired { order_id, instrument, leaves_qty } => {
                if let Some(lock) = self.locks.remove(&(instrument, order_id)) {
                    debug_assert_eq!(lock.leaves, leaves_qty, "order {order_id} left with other leaves");
                    self.unlock(instrument, lock.amount(lock.leaves), &lock);
                }
            }
            Event::Amended { order_id, instrument, price, leaves_qty, .. } => {
                if let Some(old) = self.locks.get(&(instrument, order_id)).copied() {
                    self.unlock(instrument, old.amount(old.leaves), &old);
                    let new = Lock { price, leaves: leaves_qty, ..old };
                    self.lock(instrument, new.amount(leaves_qty), &new);
                    self.locks.insert((instrument, order_id), new);
                }
            }
            _ => {}
        }
    }

    /// Reduces an order's lock by a fill of `qty`; returns the lock as it was.
    fn take(&mut self, instrument: InstrumentId, order_id: OrderId, qty: Qty) -> Option<Lock> {
        let key = (instrument, order_id);
        let lock = self.locks.get_mut(&key)?;
        let before = *lock;
        lock.leaves = lock.leaves.saturating_sub(qty);
        if lock.leaves == 0 {
            self.locks.remove(&key);
        }
        Some(before)
    }

    fn holding(&mut self, participant: ParticipantId, instrument: InstrumentId) -> &mut Holding {
        self.accounts.entry(participant).or_default().holdings.entry(instrument).or_default()
    }

    fn lock(&mut self, instrument: InstrumentId, amount: Amount, lock: &Lock) {
        self.move_lock(instrument, amount, lock);
    }

    fn unlock(&mut self, instrument: InstrumentId, amount: Amount, lock: &Lock) {
        self.move_lock(instrument, -amount, lock);
    }

    /// Moves `amount` from available to locked (or back, when negative).
    fn move_lock(&mut self, instrument: InstrumentId, amount: Amount, lock: &Lock) {
        match lock.side {
            Side::Buy => {
                let funds = &mut self.accounts.entry(lock.participant).or_default().funds;
                funds.available -= amount;
                funds.locked += amount;
            }
            Side::Sell => {
                let holding = self.holding(lock.participant, instrument);
                holding.available -= amount;
                holding.locked += amount;
            }
        }
    }

    /// The state as plain values.
    pub fn image(&self) -> RiskImage {
        RiskImage {
            config: self.config,
            accounts: self.accounts().into_iter().map(|(p, a)| (*p, a.clone())).collect(),
        }
    }

    /// Rebuilds the risk from an image and the resting orders of every book (which give the
    /// locks); [`Risk::check`] then says whether they agree.
    pub fn from_image(image: &RiskImage, resting: &[(InstrumentId, RestingOrder)]) -> Result<Self, String> {
        let mut risk = Risk::new(image.config);
        let mut previous = None;
        for (participant, account) in &image.accounts {
            if previous.is_some_and(|p| p >= *participant) {
                return Err(format!("participant {participant} is out of order"));
            }
            previous = Some(*participant);
            if account.standing.suspended_until != 0 {
                risk.suspended.insert(*participant, account.standing.suspended_until);
            }
            risk.accounts.insert(*participant, account.clone());
        }
        if risk.checks() {
            for (instrument, o) in resting {
                let lock =
                    Lock { participant: o.participant, side: o.side, price: o.price, leaves: o.leaves_qty };
                risk.locks.insert((*instrument, o.order_id), lock);
            }
        }
        Ok(risk)
    }

    /// Checks the accounts' invariants against the books' resting orders (see the [module
    /// documentation](self)). O(accounts + orders); for tests and recovery, not per command in
    /// production.
    pub fn check(&self, resting: &[(InstrumentId, RestingOrder)]) -> Result<(), String> {
        let mut funds_locked: BTreeMap<ParticipantId, Amount> = BTreeMap::new();
        let mut holdings_locked: BTreeMap<(ParticipantId, InstrumentId), Amount> = BTreeMap::new();
        if self.checks() {
            if self.locks.len() != resting.len() {
                return Err(format!("{} locks for {} resting orders", self.locks.len(), resting.len()));
            }
            let add = |total: &mut Amount, amount: Amount| -> Result<(), String> {
                *total = total.checked_add(amount).ok_or("locked amounts overflow")?;
                Ok(())
            };
            for (instrument, o) in resting {
                let lock = self
                    .locks
                    .get(&(*instrument, o.order_id))
                    .ok_or_else(|| format!("resting order {} has no lock", o.order_id))?;
                if (lock.participant, lock.side, lock.price, lock.leaves)
                    != (o.participant, o.side, o.price, o.leaves_qty)
                {
                    return Err(format!("order {}: lock {lock:?} disagrees with the book", o.order_id));
                }
                let total = match o.side {
                    Side::Buy => funds_locked.entry(o.participant).or_default(),
                    Side::Sell => holdings_locked.entry((o.participant, *instrument)).or_default(),
                };
                add(total, lock.amount(o.leaves_qty))?;
            }
        } else if !self.locks.is_empty() {
            return Err("locks kept with risk checks off".into());
        }
        for (p, account) in self.accounts() {
            let f = &account.funds;
            if f.available < 0 || f.locked < 0 || f.paid < 0 || f.received < 0 {
                return Err(format!("participant {p}: negative funds {f:?}"));
            }
            let sum = f.available.checked_add(f.locked).and_then(|s| s.checked_add(f.paid));
            if sum != Some(f.deposited) {
                return Err(format!("participant {p}: available + locked + paid != deposited in {f:?}"));
            }
            if f.locked != funds_locked.get(p).copied().unwrap_or(0) {
                return Err(format!(
                    "participant {p}: funds locked {} but orders lock more or less",
                    f.locked
                ));
            }
            for (i, h) in &account.holdings {
                if h.available < 0 || h.locked < 0 || h.delivered < 0 || h.bought < 0 {
                    return Err(format!("participant {p}: negative holding of instrument {} {h:?}", i.0));
                }
                let sum = h.available.checked_add(h.locked).and_then(|s| s.checked_add(h.delivered));
                if sum != Some(h.held) {
                    return Err(format!("participant {p}: available + locked + delivered != held in {h:?}"));
                }
                if h.locked != holdings_locked.get(&(*p, *i)).copied().unwrap_or(0) {
                    return Err(format!(
                        "participant {p}: holding of instrument {} locked {}",
                        i.0, h.locked
                    ));
                }
            }
        }
        let orphan = |p: &ParticipantId| !self.accounts.contains_key(p);
        if funds_locked.keys().any(orphan) || holdings_locked.keys().any(|(p, _)| orphan(p)) {
            return Err("orders lock funds or holdings of a participant without an account".into());
        }
        Ok(())
    }
}

/// The price a NEW locks funds at: its limit, or for a market buy the instrument's ceiling.
fn lock_price(spec: &InstrumentSpec, order: &NewOrder) -> Result<Price, RejectReason> {
    match (order.order_type, order.side) {
        (OrderType::Market, Side::Buy) => spec.price_ceiling.ok_or(RejectReason::MarketBuyNeedsCeiling),
        _ => Ok(order.price),
    }
}

/// The calendar quarter (IST) of a time, as `year * 4 + quarter - 1`.
pub fn quarter_of(ts_ns: u64) -> u32 {
    let offset = time::UtcOffset::from_whole_seconds(IST_OFFSET_SECONDS).unwrap_or(time::UtcOffset::UTC);
    let seconds = i64::try_from(ts_ns / 1_000_000_000).unwrap_or(i64::MAX);
    let date = time::OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset)
        .date();
    let year = u32::try_from(date.year()).unwrap_or(0);
    year * 4 + (u32::from(u8::from(date.month())) - 1) / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nanoseconds of a time of day in UTC.
    fn ns(year: i32, month: u8, day: u8, hour: u8, minute: u8) -> u64 {
        let date = time::Date::from_calendar_date(year, time::Month::try_from(month).unwrap(), day).unwrap();
        let t = date.with_hms(hour, minute, 0).unwrap().assume_utc();
        u64::try_from(t.unix_timestamp_nanos()).unwrap()
    }

    #[test]
    fn quarters_turn_at_ist_midnight() {
        assert_eq!(quarter_of(ns(2025, 12, 31, 18, 30)), 2026 * 4);
        assert_eq!(quarter_of(ns(2025, 12, 31, 18, 29)), 2025 * 4 + 3);
        // 20:00 UTC on 31 March is already 1 April in India.
        assert_eq!(quarter_of(ns(2026, 3, 31, 20, 0)), 2026 * 4 + 1);
        assert_eq!(quarter_of(ns(2026, 3, 31, 18, 0)), 2026 * 4);
    }

    #[test]
    fn three_defaults_in_a_quarter_suspend() {
        let mut risk = Risk::new(RiskConfig::OFF);
        let p = ParticipantId(7);
        assert_eq!(risk.record_default(p, ns(2026, 1, 28, 8, 0)), (1, None));
        assert_eq!(risk.record_default(p, ns(2026, 2, 25, 8, 0)), (2, None));
        // The next quarter starts over.
        assert_eq!(risk.record_default(p, ns(2026, 4, 29, 8, 0)), (1, None));
        assert_eq!(risk.record_default(p, ns(2026, 5, 27, 8, 0)), (2, None));
        let t = ns(2026, 6, 24, 8, 0);
        let until = t + 182 * DAY_NS;
        assert_eq!(risk.record_default(p, t), (3, Some(until)));
        assert!(risk.is_suspended(p, t));
        assert!(risk.is_suspended(p, until - 1));
        assert!(!risk.is_suspended(p, until));
        assert!(!risk.is_suspended(ParticipantId(8), t));
        assert_eq!(risk.account(p).unwrap().standing.defaults_total, 5);
    }

    #[test]
    fn settlement_settles_open_amounts_first() {
        let mut risk = Risk::new(RiskConfig::ON);
        let (p, i) = (ParticipantId(1), InstrumentId(0));
        risk.adjust_holdings(p, i, 10).unwrap();
        let h = risk.holding(p, i);
        (h.available, h.delivered) = (4, 6);
        // Debit 8: settles the 6 delivered and takes 2 of the 4 available.
        risk.adjust_holdings(p, i, -8).unwrap();
        let h = risk.account(p).unwrap().holdings[&i];
        assert_eq!((h.held, h.available, h.delivered), (2, 2, 0));
        risk.holding(p, i).bought = 5;
        risk.adjust_holdings(p, i, 7).unwrap();
        let h = risk.account(p).unwrap().holdings[&i];
        assert_eq!((h.held, h.available, h.bought), (9, 9, 0));
        risk.accounts.entry(p).or_default().funds.received = 100;
        risk.adjust_funds(p, 60).unwrap();
        let f = risk.account(p).unwrap().funds;
        assert_eq!((f.deposited, f.available, f.received), (60, 60, 40));
        risk.check(&[]).unwrap();
    }

    #[test]
    fn funds_and_holdings_need_checks_on_and_never_go_negative() {
        let mut off = Risk::new(RiskConfig::OFF);
        assert_eq!(off.adjust_funds(ParticipantId(1), 10), Err(RejectReason::RiskChecksOff));
        let mut risk = Risk::new(RiskConfig::ON);
        let p = ParticipantId(1);
        risk.adjust_funds(p, 100).unwrap();
        assert_eq!(risk.adjust_funds(p, -101), Err(RejectReason::InsufficientFunds));
        risk.adjust_funds(p, -100).unwrap();
        assert_eq!(risk.adjust_holdings(p, InstrumentId(0), -1), Err(RejectReason::InsufficientHoldings));
        risk.adjust_holdings(p, InstrumentId(0), 5).unwrap();
        let h = risk.account(p).unwrap().holdings[&InstrumentId(0)];
        assert_eq!((h.held, h.available), (5, 5));
        risk.check(&[]).unwrap();
    }
}
