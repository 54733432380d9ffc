//! cccx engine: the deterministic matching core of a carbon credit certificate exchange.
//!
//! A state machine: [`Engine::apply`] takes a sequenced [`Command`] and appends the [`Event`]s it
//! causes. No clocks, threads, randomness or I/O in matching: time arrives inside the command,
//! and the same commands always give the same events. The journal, snapshots and recovery sit
//! beside the engine and do the I/O.
//!
//! - [`types`]: identifiers, prices, quantities, instrument specifications.
//! - [`message`]: commands, events, reject reason codes.
//! - [`book`]: the [`OrderBook`] interface and the fast [`Book`].
//! - [`auction`]: the uniform-price uncross of the call auction.
//! - [`calendar`]: session calendars that produce the phase commands.
//! - [the reference module](crate::reference): the naive reference book the tests and `cccx bench --compare-naive` use.
//! - [`journal`]: the memory-mapped write-ahead command journal.
//! - [`recovery`]: an engine rebuilt from the newest snapshot and the journal after it.
//! - [`risk`]: accounts, pre-trade locks, defaults and suspensions.
//! - [`sink`]: where the events of a command go ([`EventSink`]; [`Discard`] for replay).
//! - [`snapshot`]: whole-engine snapshot files and the canonical state hash.

pub mod auction;
pub mod book;
pub mod calendar;
pub mod engine;
pub mod journal;
pub mod message;
pub mod recovery;
pub mod reference;
pub mod risk;
pub mod sink;
pub mod snapshot;
pub mod types;
mod uncross;

pub use book::{Book, OrderBook, RestingOrder};
pub use engine::{ConfigError, Engine, EngineImage, InstrumentImage, TradeTotals};
pub use message::{
    Aggressor, CancelReason, Command, CommandBody, Event, MassCancelScope, NewOrder, RejectReason,
    RequestKind, Trade,
};
pub use reference::ReferenceBook;
pub use risk::{Risk, RiskConfig};
pub use sink::{Discard, EventSink};
pub use types::{
    AuctionAllocation, AuctionPriceRule, InstrumentId, InstrumentSpec, OrderId, OrderType, ParticipantId,
    Phase, Price, Qty, Side, StpMode, TimeInForce, LADDER_WINDOW_TICKS_DEFAULT, LADDER_WINDOW_TICKS_MAX,
    ORDER_QTY_MAX, RESTING_ORDERS_DEFAULT, RESTING_ORDERS_MAX,
};
