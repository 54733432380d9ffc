//! Domain types: identifiers, prices, quantities, sides and instrument specifications.
//!
//! Prices are integers in the instrument's price unit (for the Indian CCC market, paise or
//! rupees, as the operator configures); a valid price is a positive multiple of the instrument's
//! `tick_size`. Quantities are whole certificates (1 CCC = 1 tCO2e). There are no floats in the
//! engine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A price in the instrument's price unit. Always positive on a valid order.
pub type Price = i64;
/// A quantity of certificates.
pub type Qty = u64;

/// An order identifier, unique within an instrument's book while the order lives.
///
/// The sequencer in front of the engine assigns them; the engine rejects a NEW whose id is still
/// resting in the same book.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct OrderId(pub u64);

/// A trading participant (an obligated entity's or trader's account at the exchange).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct ParticipantId(pub u32);

/// Index of an instrument in the engine's configuration (0, 1, 2 ...).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct InstrumentId(pub u32);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Buy or sell.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    /// A bid.
    Buy,
    /// An offer.
    Sell,
}

impl Side {
    /// The other side.
    #[inline]
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// `BUY` or `SELL`, as the workload files and reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }

    /// Whether an order on this side with limit `limit` trades against a resting order at
    /// `resting` on the other side.
    #[inline]
    pub fn crosses(self, limit: Price, resting: Price) -> bool {
        match self {
            Side::Buy => resting <= limit,
            Side::Sell => resting >= limit,
        }
    }
}

/// How long an order stays in the book.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc,
    /// Good for the trading day: removed by [`crate::CommandBody::ExpireDay`].
    Day,
    /// Immediate or cancel: match what crosses now, cancel the rest.
    Ioc,
    /// Fill or kill: fill the whole quantity now or reject the order without a trade.
    Fok,
}

impl TimeInForce {
    /// Whether the unfilled remainder of an order with this time in force rests in the book.
    #[inline]
    pub fn rests(self) -> bool {
        matches!(self, TimeInForce::Gtc | TimeInForce::Day)
    }
}

/// Limit or market.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderType {
    /// Trades at the limit price or better.
    Limit,
    /// Trades at any price; only with IOC or FOK, never rests.
    Market,
}

/// An instrument's trading phase: the session state machine of a call auction, or continuous
/// trading. Phases change only by sequenced commands (an operator's or a scheduler's
/// `SetPhase`, and the uncross), never by a clock inside the engine.
///
/// ```text
/// Closed --> Call --> CallClosed --> (UNCROSS) --> Uncrossed --> Closed | Call | Continuous
///   |          \___________________/ (UNCROSS)                    Continuous --> Closed
///   +--> Continuous
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Continuous trading: an order matches on entry.
    #[default]
    Continuous,
    /// Call phase (the bid window is open): orders, cancels and amendments are accepted and
    /// only rest (the book may be crossed) until an uncross crosses the curves once.
    Call,
    /// Outside trading hours: no orders, cancels or amendments.
    Closed,
    /// The bid window has closed (the registry's holdings check runs now): no orders, cancels
    /// or amendments until the uncross.
    CallClosed,
    /// The uncross ran and its results are published: no orders, cancels or amendments until
    /// the next phase.
    Uncrossed,
}

impl Phase {
    /// Whether participants may enter, cancel or amend orders.
    #[inline]
    pub fn accepts_orders(self) -> bool {
        matches!(self, Phase::Continuous | Phase::Call)
    }

    /// Whether orders match on entry.
    #[inline]
    pub fn matches(self) -> bool {
        self == Phase::Continuous
    }

    /// Whether an operator's `SetPhase` may move an instrument from `self` to `next` (the
    /// uncross itself moves Call or CallClosed to Uncrossed).
    pub fn can_move_to(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Closed, Call)
                | (Closed, Continuous)
                | (Call, CallClosed)
                | (Uncrossed, Closed)
                | (Uncrossed, Call)
                | (Uncrossed, Continuous)
                | (Continuous, Closed)
        )
    }

    /// A stable one-byte code (journal records, the state hash).
    pub fn code(self) -> u8 {
        match self {
            Phase::Continuous => 0,
            Phase::Call => 1,
            Phase::Closed => 2,
            Phase::CallClosed => 3,
            Phase::Uncrossed => 4,
        }
    }

    /// The phase of a code, if any.
    pub fn from_code(code: u8) -> Option<Phase> {
        [Phase::Continuous, Phase::Call, Phase::Closed, Phase::CallClosed, Phase::Uncrossed]
            .into_iter()
            .find(|p| p.code() == code)
    }
}

/// How an uncross shares the quantity left at the marginal price level of a side.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum AuctionAllocation {
    /// Pro rata to open quantity, rounded down, leftover units to the largest remainders
    /// (ties to the earlier order): the certificate markets' rule.
    #[default]
    ProRata,
    /// Time priority: the earlier orders of the level are filled first.
    TimePriority,
}

/// Which price of the candidate interval [lo, hi] (best volume, then least surplus) an uncross
/// takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum AuctionPriceRule {
    /// floor((lo + hi) / 2), on the tick grid.
    #[default]
    Midpoint,
    /// lo: the buyers' best price.
    Lowest,
    /// hi: the sellers' best price.
    Highest,
}

/// What the engine does when an incoming order would trade with a resting order of the same
/// participant (self-trade prevention), configured per instrument.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StpMode {
    /// Self-trades are allowed.
    #[default]
    None,
    /// The resting order is cancelled and matching continues.
    CancelResting,
    /// The rest of the incoming order is cancelled and matching stops.
    CancelIncoming,
    /// Both the resting order and the rest of the incoming order are cancelled.
    CancelBoth,
}

/// The trading rules of one instrument: a CCC vintage in a market segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentSpec {
    /// The instrument's name, e.g. `CCC-2026-COMPLIANCE`.
    pub symbol: String,
    /// A limit price must be a positive multiple of this (in price units).
    pub tick_size: Price,
    /// A quantity must be a positive multiple of this (in certificates).
    pub lot_size: Qty,
    /// Lowest price an order may carry (the regulator's floor), if any.
    pub price_floor: Option<Price>,
    /// Highest price an order may carry (the forbearance price), if any.
    pub price_ceiling: Option<Price>,
    /// Largest quantity one order may carry.
    pub max_order_qty: Qty,
    /// Self-trade prevention mode.
    pub stp: StpMode,
    /// Most orders the book holds at once. The book reserves room for them when it is created
    /// (no allocation while trading); a remainder that would rest in a full book is cancelled
    /// ([`crate::CancelReason::BookFull`]).
    pub resting_orders_max: u32,
    /// The phase the book starts in (until trading phases are scheduled by commands).
    pub initial_phase: Phase,
    /// How an uncross shares the marginal price level.
    pub auction_allocation: AuctionAllocation,
    /// Which price of the best candidate interval an uncross takes.
    pub auction_price_rule: AuctionPriceRule,
    /// Width, in ticks, of the dense price ladder each side of the book keeps. Prices outside
    /// the window are still correct, only slower (see `book::ladder`).
    pub ladder_window_ticks: u32,
}

/// Largest quantity any order may carry (about 5.5e11 certificates). With at most
/// [`RESTING_ORDERS_MAX`] orders in a book, every level, side and clearing volume stays below
/// 2^63, so no sum of quantities can overflow.
pub const ORDER_QTY_MAX: Qty = 1 << 39;

/// Default most resting orders per book.
pub const RESTING_ORDERS_DEFAULT: u32 = 1 << 18;
/// Largest allowed `resting_orders_max`.
pub const RESTING_ORDERS_MAX: u32 = 1 << 24;
/// Default width of a book side's dense price ladder, in ticks.
pub const LADDER_WINDOW_TICKS_DEFAULT: u32 = 1 << 15;
/// Largest width of a dense price ladder, in ticks.
pub const LADDER_WINDOW_TICKS_MAX: u32 = 1 << 24;

impl InstrumentSpec {
    /// An instrument with tick 1, lot 1, no band, no self-trade prevention and the largest
    /// quantity limit ([`ORDER_QTY_MAX`]): the canonical semantics of the standard workloads.
    pub fn canonical(symbol: impl Into<String>) -> Self {
        InstrumentSpec {
            symbol: symbol.into(),
            tick_size: 1,
            lot_size: 1,
            price_floor: None,
            price_ceiling: None,
            max_order_qty: ORDER_QTY_MAX,
            stp: StpMode::None,
            resting_orders_max: RESTING_ORDERS_DEFAULT,
            initial_phase: Phase::Continuous,
            auction_allocation: AuctionAllocation::ProRata,
            auction_price_rule: AuctionPriceRule::Midpoint,
            ladder_window_ticks: LADDER_WINDOW_TICKS_DEFAULT,
        }
    }

    /// Checks that the specification itself is usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.symbol.is_empty() {
            return Err("instrument symbol is empty".into());
        }
        if self.tick_size <= 0 {
            return Err(format!("{}: tick_size must be positive", self.symbol));
        }
        if self.lot_size == 0 {
            return Err(format!("{}: lot_size must be positive", self.symbol));
        }
        if self.max_order_qty < self.lot_size {
            return Err(format!("{}: max_order_qty is below lot_size", self.symbol));
        }
        if self.max_order_qty > ORDER_QTY_MAX {
            return Err(format!("{}: max_order_qty must be at most {ORDER_QTY_MAX}", self.symbol));
        }
        if let (Some(lo), Some(hi)) = (self.price_floor, self.price_ceiling) {
            if lo > hi {
                return Err(format!("{}: price_floor is above price_ceiling", self.symbol));
            }
        }
        if self.resting_orders_max == 0 || self.resting_orders_max > RESTING_ORDERS_MAX {
            return Err(format!("{}: resting_orders_max must be in 1..={RESTING_ORDERS_MAX}", self.symbol));
        }
        if self.ladder_window_ticks == 0 || self.ladder_window_ticks > LADDER_WINDOW_TICKS_MAX {
            return Err(format!(
                "{}: ladder_window_ticks must be in 1..={LADDER_WINDOW_TICKS_MAX}",
                self.symbol
            ));
        }
        Ok(())
    }
}
