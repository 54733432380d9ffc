//! Commands (intents) and events (facts): the engine's whole interface.
//!
//! Both are immutable values. Time arrives inside the command ([`Command::ts_ns`]); the engine
//! never reads a clock.
//!
//! # What each command emits, in order
//!
//! `NEW` (after the engine's checks, see [`RejectReason`]):
//! 1. A check fails: one [`Event::Rejected`]; nothing changes.
//! 2. A post-only order that would cross: `Rejected(PostOnlyWouldCross)`.
//!    A FOK order whose quantity the book cannot fill now: `Rejected(FokNotFillable)`.
//! 3. Otherwise [`Event::Accepted`], then matching: one [`Event::Trade`] per fill in price-time
//!    order, each at the resting order's price, with self-trade prevention cancels
//!    ([`CancelReason::SelfTrade`]) where they happen.
//! 4. The remainder of a GTC or DAY limit order rests (no event), or, when the book already holds
//!    `resting_orders_max` orders, is cancelled: `Cancelled(BookFull)`. The remainder of an IOC,
//!    FOK or market order is cancelled: `Cancelled(ImmediateOrCancel)`. Either only when the
//!    remainder is not zero and self-trade prevention did not already cancel the order.
//!
//! `CANCEL`: `Cancelled(Requested)`, or `Rejected(UnknownOrder | NotOwner)`.
//!
//! `AMEND`: `Rejected(..)`, or [`Event::Amended`]. When the amendment loses time priority (a new
//! price or a larger quantity) the order leaves the book and is matched as an aggressor at its
//! new price, exactly like step 3 above without `Accepted`; its remainder rests at the back of
//! its level.
//!
//! `UNCROSS` (in the call phase or with the bid window closed, else
//! `Rejected(NotAllowedInPhase)`): [`Event::Uncrossed`] with the clearing price and volume, one
//! `Trade` (aggressor `Auction`) per pair of allocated buy and sell orders (see
//! [`crate::auction`]), then `PhaseChanged(Uncrossed)`.
//!
//! `SET PHASE`: `PhaseChanged`, or `Rejected(InvalidPhaseTransition)` (see
//! [`Phase::can_move_to`]). Moving to `CallClosed` (the bid window closes) then emits one
//! [`Event::SellTotal`] per seller, in participant order: the export for the registry's
//! holdings check.
//!
//! `SHORTFALL` (only with the bid window closed, else `Rejected(NotAllowedInPhase)`; for a
//! participant without sell orders there, `Rejected(NoSellOrders)`): `Cancelled(HoldingsShortfall)`
//! for each of the participant's sell orders in the instrument in priority order, then
//! [`Event::Defaulted`]; when that default suspends the participant, [`Event::Suspended`] and
//! `Cancelled(Suspended)` for each of its remaining resting orders, as a mass cancel orders them.
//!
//! `FUNDS` and `HOLDINGS`: `FundsAdjusted` or `HoldingsAdjusted`, or `Rejected(RiskChecksOff |
//! InsufficientFunds | InsufficientHoldings | UnknownInstrument)`.
//!
//! With risk checks on (see [`crate::risk`]), a NEW or AMEND that needs more than the
//! participant has available is `Rejected(InsufficientFunds | InsufficientHoldings)`, after the
//! phase checks and before the book's checks; a market buy in an instrument without a price
//! ceiling is `Rejected(MarketBuyNeedsCeiling)`. A suspended participant's NEW and AMEND are
//! `Rejected(ParticipantSuspended)` whether or not risk checks are on. NEW, CANCEL and AMEND in a phase that does not accept them:
//! `Rejected(OutsideTradingWindow)`.
//!
//! In the call phase, NEW (limit GTC or DAY only; IOC, FOK and market are
//! `Rejected(NotAllowedInPhase)`) and AMEND never match: an order rests, an amendment that
//! loses priority goes to the back of its new level.
//!
//! Mass cancel and day expiry emit one event per order, instruments in id order, bids in priority
//! order then asks in priority order. A participant's mass cancel only reaches instruments whose
//! phase accepts cancels (one instrument outside its window: `Rejected(OutsideTradingWindow)`);
//! the operator's instrument-wide mass cancel works in any phase.

use serde::{Deserialize, Serialize};

use crate::types::{InstrumentId, OrderId, OrderType, ParticipantId, Phase, Price, Qty, Side, TimeInForce};

/// A sequenced command: what a participant or the operator asks for, stamped with a time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Time the sequencer stamped on the command, in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// What is asked for.
    pub body: CommandBody,
}

/// The request inside a [`Command`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// Enter an order.
    New(NewOrder),
    /// Cancel a resting order.
    Cancel {
        /// The order's book.
        instrument: InstrumentId,
        /// The order.
        order_id: OrderId,
        /// Who asks; must own the order.
        participant: ParticipantId,
    },
    /// Set a resting order's price and open quantity.
    Amend {
        /// The order's book.
        instrument: InstrumentId,
        /// The order.
        order_id: OrderId,
        /// Who asks; must own the order.
        participant: ParticipantId,
        /// The new limit price.
        price: Price,
        /// The new open (leaves) quantity.
        qty: Qty,
    },
    /// Cancel many orders at once.
    MassCancel(MassCancelScope),
    /// End of the trading day for an instrument: every resting DAY order expires.
    ExpireDay {
        /// The instrument.
        instrument: InstrumentId,
    },
    /// Cross the curves of an instrument in its call phase once, at a uniform price.
    Uncross {
        /// The instrument.
        instrument: InstrumentId,
    },
    /// Move an instrument to another trading phase (an operator or the session scheduler).
    SetPhase {
        /// The instrument.
        instrument: InstrumentId,
        /// The new phase.
        phase: Phase,
    },
    /// Deposit funds (`amount > 0`) into a participant's account at the exchange, or withdraw
    /// them (`amount < 0`); settlement pays sale proceeds this way too. Needs risk checks on.
    Funds {
        /// The participant.
        participant: ParticipantId,
        /// In the instruments' price unit.
        amount: i64,
    },
    /// Credit (`qty > 0`) or debit (`qty < 0`) certificates of an instrument to a participant's
    /// registry holding, as the registry reports them (settlement credits bought certificates
    /// this way). Needs risk checks on.
    Holdings {
        /// The participant.
        participant: ParticipantId,
        /// The instrument (certificate type).
        instrument: InstrumentId,
        /// Certificates.
        qty: i64,
    },
    /// The registry's holdings check found a seller short (the bid window closed, the engine
    /// exported the sell totals with [`Event::SellTotal`]): remove its sell orders from the
    /// instrument's auction and count a default against it (see [`crate::risk`]).
    Shortfall {
        /// The instrument whose bid window closed.
        instrument: InstrumentId,
        /// The seller found short.
        participant: ParticipantId,
    },
}

/// Which orders a mass cancel removes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MassCancelScope {
    /// Every resting order of the instrument (an operator action).
    Instrument(InstrumentId),
    /// Every resting order of the participant, in every instrument.
    Participant(ParticipantId),
    /// Every resting order of the participant in one instrument.
    ParticipantInInstrument(ParticipantId, InstrumentId),
}

/// A new order as the participant entered it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Unique id of the order within its book.
    pub order_id: OrderId,
    /// Owner.
    pub participant: ParticipantId,
    /// Book.
    pub instrument: InstrumentId,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    pub order_type: OrderType,
    /// Time in force.
    pub tif: TimeInForce,
    /// Limit price; ignored for market orders.
    pub price: Price,
    /// Quantity in certificates.
    pub qty: Qty,
    /// Only add liquidity: rejected when it would trade on entry.
    pub post_only: bool,
}

/// A fact the engine reports. The stream of events is a pure function of the commands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A new order passed every check and entered matching.
    Accepted {
        /// The order.
        order_id: OrderId,
        /// Its book.
        instrument: InstrumentId,
    },
    /// A command was refused; nothing changed.
    Rejected {
        /// What kind of command was refused.
        request: RequestKind,
        /// The order the command named (zero for a mass cancel).
        order_id: OrderId,
        /// The book the command named.
        instrument: InstrumentId,
        /// Why.
        reason: RejectReason,
    },
    /// Two orders traded.
    Trade(Trade),
    /// An order left the book, or its unfilled remainder was dropped, before it was filled.
    Cancelled {
        /// The order.
        order_id: OrderId,
        /// Its book.
        instrument: InstrumentId,
        /// The quantity that was open and is now cancelled.
        leaves_qty: Qty,
        /// Why.
        reason: CancelReason,
    },
    /// An amendment took effect.
    Amended {
        /// The order.
        order_id: OrderId,
        /// Its book.
        instrument: InstrumentId,
        /// The new price.
        price: Price,
        /// The new open quantity (before any matching the amendment causes).
        leaves_qty: Qty,
        /// Whether the order kept its time priority.
        priority_kept: bool,
    },
    /// An uncross ran: its clearing price (MCP) and volume (MCV). Its trades follow. With no
    /// crossing volume, `price` is `None` and `volume` 0.
    Uncrossed {
        /// The instrument.
        instrument: InstrumentId,
        /// The market clearing price.
        price: Option<Price>,
        /// The market clearing volume.
        volume: Qty,
    },
    /// An instrument entered a new trading phase (by `SetPhase`, or by an uncross).
    PhaseChanged {
        /// The instrument.
        instrument: InstrumentId,
        /// The new phase.
        phase: Phase,
    },
    /// A DAY order reached the end of its day.
    Expired {
        /// The order.
        order_id: OrderId,
        /// Its book.
        instrument: InstrumentId,
        /// The quantity that was open.
        leaves_qty: Qty,
    },
    /// A `FUNDS` command took effect.
    FundsAdjusted {
        /// The participant.
        participant: ParticipantId,
        /// Deposited (positive) or withdrawn (negative).
        amount: i64,
    },
    /// A `HOLDINGS` command took effect.
    HoldingsAdjusted {
        /// The participant.
        participant: ParticipantId,
        /// The instrument.
        instrument: InstrumentId,
        /// Credited (positive) or debited (negative).
        qty: i64,
    },
    /// The bid window of an instrument closed: one per seller, in participant order, with the
    /// total quantity of its sell orders, for the registry's holdings check.
    SellTotal {
        /// The instrument.
        instrument: InstrumentId,
        /// The seller.
        participant: ParticipantId,
        /// Certificates offered in all its sell orders.
        qty: Qty,
    },
    /// A seller found short by the registry: its sell orders were removed and a default counted.
    Defaulted {
        /// The instrument.
        instrument: InstrumentId,
        /// The seller.
        participant: ParticipantId,
        /// Its defaults in this calendar quarter, this one included.
        defaults_in_quarter: u32,
    },
    /// A participant was suspended (its resting orders are cancelled next).
    Suspended {
        /// The participant.
        participant: ParticipantId,
        /// The end of the suspension, nanoseconds since the Unix epoch.
        until_ns: u64,
    },
}

/// One fill between a buy and a sell order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// The book.
    pub instrument: InstrumentId,
    /// Trade price: the resting order's price.
    pub price: Price,
    /// Certificates traded.
    pub qty: Qty,
    /// The buy order.
    pub buy_order_id: OrderId,
    /// The sell order.
    pub sell_order_id: OrderId,
    /// The buyer.
    pub buyer: ParticipantId,
    /// The seller.
    pub seller: ParticipantId,
    /// Which side took liquidity, or the auction.
    pub aggressor: Aggressor,
    /// Open quantity of the buy order after this fill.
    pub buy_leaves_qty: Qty,
    /// Open quantity of the sell order after this fill.
    pub sell_leaves_qty: Qty,
    /// Time of the command that caused the trade.
    pub ts_ns: u64,
}

/// What caused a trade: an incoming order on one side, or an uncross.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Aggressor {
    /// A buy order took liquidity.
    Buy,
    /// A sell order took liquidity.
    Sell,
    /// An uncross of the call auction.
    Auction,
}

impl From<Side> for Aggressor {
    fn from(side: Side) -> Self {
        match side {
            Side::Buy => Aggressor::Buy,
            Side::Sell => Aggressor::Sell,
        }
    }
}

impl Aggressor {
    /// `BUY`, `SELL` or `AUCTION`, as the canonical outputs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggressor::Buy => "BUY",
            Aggressor::Sell => "SELL",
            Aggressor::Auction => "AUCTION",
        }
    }
}

/// The kind of command a [`Event::Rejected`] refers to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// A NEW.
    New,
    /// A CANCEL.
    Cancel,
    /// An AMEND.
    Amend,
    /// A mass cancel.
    MassCancel,
    /// A day expiry.
    ExpireDay,
    /// An uncross.
    Uncross,
    /// A phase change.
    SetPhase,
    /// A `FUNDS` command.
    Funds,
    /// A `HOLDINGS` command.
    Holdings,
    /// A `SHORTFALL` command.
    Shortfall,
}

/// Why a command was refused. The codes are stable: never renumbered, new reasons appended at
/// the end, pinned by a test. Codes 1-13 are in the order the checks run; the phase checks
/// (14, 15) run after the instrument's rules (2-8) and before the book's checks (9-13). The
/// gateway maps them onto FIX and HTTP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum RejectReason {
    /// The instrument id names no configured instrument.
    UnknownInstrument = 1,
    /// The order type and time in force do not go together (market GTC/DAY, post-only with
    /// IOC, FOK or market).
    InvalidOrderType = 2,
    /// Quantity is zero.
    ZeroQuantity = 3,
    /// Quantity is above the instrument's maximum order quantity.
    QuantityAboveMax = 4,
    /// Quantity is not a multiple of the lot size.
    QuantityNotLotMultiple = 5,
    /// A limit price is zero or negative.
    NonPositivePrice = 6,
    /// A limit price is not a multiple of the tick size.
    PriceNotTickMultiple = 7,
    /// A limit price is below the floor or above the ceiling of the price band.
    PriceOutsideBand = 8,
    /// A NEW reuses the id of an order that is still in the book.
    DuplicateOrderId = 9,
    /// A CANCEL or AMEND names an order that is not in the book.
    UnknownOrder = 10,
    /// A CANCEL or AMEND comes from a participant that does not own the order.
    NotOwner = 11,
    /// A post-only order (or amendment) would trade on entry.
    PostOnlyWouldCross = 12,
    /// A FOK order cannot be filled in full now.
    FokNotFillable = 13,
    /// The instrument's phase does not allow this: an IOC, FOK or market order in the call
    /// phase, or an uncross outside the call phase.
    NotAllowedInPhase = 14,
    /// Orders, cancels and amendments are not accepted in the instrument's phase (closed, bid
    /// window closed, results published).
    OutsideTradingWindow = 15,
    /// The instrument cannot move from its phase to the one asked for.
    InvalidPhaseTransition = 16,
    /// A sell order (or amendment), or a debit of holdings, needs more certificates than the
    /// participant has available.
    InsufficientHoldings = 17,
    /// A buy order (or amendment), or a withdrawal, needs more funds than the participant has
    /// available.
    InsufficientFunds = 18,
    /// The participant is suspended (repeated defaults in the registry's holdings check).
    ParticipantSuspended = 19,
    /// A market buy with risk checks on, in an instrument without a price ceiling to lock its
    /// funds at.
    MarketBuyNeedsCeiling = 20,
    /// A `SHORTFALL` names a participant with no sell order in the instrument.
    NoSellOrders = 21,
    /// `FUNDS` or `HOLDINGS` while the engine keeps no accounts (risk checks off).
    RiskChecksOff = 22,
}

impl RejectReason {
    /// Every reason, in code order.
    pub const ALL: [RejectReason; 22] = [
        RejectReason::UnknownInstrument,
        RejectReason::InvalidOrderType,
        RejectReason::ZeroQuantity,
        RejectReason::QuantityAboveMax,
        RejectReason::QuantityNotLotMultiple,
        RejectReason::NonPositivePrice,
        RejectReason::PriceNotTickMultiple,
        RejectReason::PriceOutsideBand,
        RejectReason::DuplicateOrderId,
        RejectReason::UnknownOrder,
        RejectReason::NotOwner,
        RejectReason::PostOnlyWouldCross,
        RejectReason::FokNotFillable,
        RejectReason::NotAllowedInPhase,
        RejectReason::OutsideTradingWindow,
        RejectReason::InvalidPhaseTransition,
        RejectReason::InsufficientHoldings,
        RejectReason::InsufficientFunds,
        RejectReason::ParticipantSuspended,
        RejectReason::MarketBuyNeedsCeiling,
        RejectReason::NoSellOrders,
        RejectReason::RiskChecksOff,
    ];

    /// The stable numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// A short, stable, human-readable text.
    pub fn text(self) -> &'static str {
        match self {
            RejectReason::UnknownInstrument => "unknown instrument",
            RejectReason::InvalidOrderType => "order type and time in force do not go together",
            RejectReason::ZeroQuantity => "quantity is zero",
            RejectReason::QuantityAboveMax => "quantity above the maximum order quantity",
            RejectReason::QuantityNotLotMultiple => "quantity is not a multiple of the lot size",
            RejectReason::NonPositivePrice => "price is not positive",
            RejectReason::PriceNotTickMultiple => "price is not a multiple of the tick size",
            RejectReason::PriceOutsideBand => "price outside the price band",
            RejectReason::DuplicateOrderId => "order id already in the book",
            RejectReason::UnknownOrder => "order not in the book",
            RejectReason::NotOwner => "order belongs to another participant",
            RejectReason::PostOnlyWouldCross => "post-only order would trade",
            RejectReason::FokNotFillable => "fill-or-kill order cannot be filled in full",
            RejectReason::NotAllowedInPhase => "not allowed in the instrument's trading phase",
            RejectReason::OutsideTradingWindow => "outside the trading window",
            RejectReason::InvalidPhaseTransition => "invalid trading phase transition",
            RejectReason::InsufficientHoldings => "not enough certificates available",
            RejectReason::InsufficientFunds => "not enough funds available",
            RejectReason::ParticipantSuspended => "participant is suspended",
            RejectReason::MarketBuyNeedsCeiling => "market buy needs a price ceiling to lock funds at",
            RejectReason::NoSellOrders => "participant has no sell orders in the instrument",
            RejectReason::RiskChecksOff => "no accounts are kept: risk checks are off",
        }
    }
}

/// Why an order (or its remainder) was cancelled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum CancelReason {
    /// The owner asked (CANCEL).
    Requested = 1,
    /// The unfilled remainder of an IOC, FOK or market order.
    ImmediateOrCancel = 2,
    /// Self-trade prevention.
    SelfTrade = 3,
    /// A mass cancel.
    MassCancel = 4,
    /// The remainder would have rested in a book that holds its maximum number of orders.
    BookFull = 5,
    /// The registry found the seller short in the holdings check (`SHORTFALL`).
    HoldingsShortfall = 6,
    /// The participant was suspended.
    Suspended = 7,
}

/// What a NEW order looks like once accepted: a convenience for tests and tools.
impl NewOrder {
    /// A limit order.
    #[allow(clippy::too_many_arguments)]
    pub fn limit(
        order_id: u64,
        participant: u32,
        instrument: u32,
        side: Side,
        tif: TimeInForce,
        price: Price,
        qty: Qty,
    ) -> Self {
        NewOrder {
            order_id: OrderId(order_id),
            participant: ParticipantId(participant),
            instrument: InstrumentId(instrument),
            side,
            order_type: OrderType::Limit,
            tif,
            price,
            qty,
            post_only: false,
        }
    }

    /// A market order (IOC).
    pub fn market(order_id: u64, participant: u32, instrument: u32, side: Side, qty: Qty) -> Self {
        NewOrder {
            order_id: OrderId(order_id),
            participant: ParticipantId(participant),
            instrument: InstrumentId(instrument),
            side,
            order_type: OrderType::Market,
            tif: TimeInForce::Ioc,
            price: 0,
            qty,
            post_only: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reject codes are part of the interface (FIX and HTTP answers carry them): they never
    /// change. Add new reasons at the end.
    #[test]
    fn reject_codes_are_pinned() {
        let codes: Vec<(u16, &str)> = RejectReason::ALL.iter().map(|r| (r.code(), r.text())).collect();
        assert_eq!(
            codes,
            vec![
                (1, "unknown instrument"),
                (2, "order type and time in force do not go together"),
                (3, "quantity is zero"),
                (4, "quantity above the maximum order quantity"),
                (5, "quantity is not a multiple of the lot size"),
                (6, "price is not positive"),
                (7, "price is not a multiple of the tick size"),
                (8, "price outside the price band"),
                (9, "order id already in the book"),
                (10, "order not in the book"),
                (11, "order belongs to another participant"),
                (12, "post-only order would trade"),
                (13, "fill-or-kill order cannot be filled in full"),
                (14, "not allowed in the instrument's trading phase"),
                (15, "outside the trading window"),
                (16, "invalid trading phase transition"),
                (17, "not enough certificates available"),
                (18, "not enough funds available"),
                (19, "participant is suspended"),
                (20, "market buy needs a price ceiling to lock funds at"),
                (21, "participant has no sell orders in the instrument"),
                (22, "no accounts are kept: risk checks are off"),
            ]
        );
        let cancels: Vec<u8> = [
            CancelReason::Requested,
            CancelReason::ImmediateOrCancel,
            CancelReason::SelfTrade,
            CancelReason::MassCancel,
            CancelReason::BookFull,
            CancelReason::HoldingsShortfall,
            CancelReason::Suspended,
        ]
        .iter()
        .map(|r| *r as u8)
        .collect();
        assert_eq!(cancels, vec![1, 2, 3, 4, 5, 6, 7]);
    }
}
