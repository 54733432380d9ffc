//! One instrument's order book: the [`OrderBook`] interface and the fast implementation.
//!
//! The engine ([`crate::Engine`]) runs the checks that need only the instrument's rules and then
//! hands a command to the book, which owns matching, self-trade prevention, post-only and
//! fill-or-kill. Two books implement the interface: [`Book`] (arena of orders, intrusive FIFO per
//! price level, dense price ladder) and [`crate::reference::ReferenceBook`] (a `BTreeMap` of
//! `VecDeque`s), and the same tests drive both.

mod fast;
mod index;
pub mod ladder;
mod slab;

pub use fast::Book;

use crate::message::{Event, NewOrder};
use crate::types::{InstrumentId, InstrumentSpec, OrderId, ParticipantId, Price, Qty, Side, TimeInForce};

/// A read-only view of an order resting in a book.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RestingOrder {
    /// The order.
    pub order_id: OrderId,
    /// Owner.
    pub participant: ParticipantId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Open quantity.
    pub leaves_qty: Qty,
    /// Quantity filled so far (over the order's whole life, amendments included).
    pub filled_qty: Qty,
    /// GTC or DAY.
    pub tif: TimeInForce,
    /// Whether the order was entered post-only.
    pub post_only: bool,
}

/// The matching interface of one instrument's book.
///
/// The caller has already checked the command against the instrument's rules (type and time in
/// force, quantity, lot, tick, band); the book does the rest and appends the events the command
/// causes to `out`, in the order given in [`crate::message`].
pub trait OrderBook {
    /// An empty book for `instrument` under `spec`.
    fn new(instrument: InstrumentId, spec: &InstrumentSpec) -> Self
    where
        Self: Sized;

    /// Enters a checked new order.
    fn submit(&mut self, order: &NewOrder, ts_ns: u64, out: &mut Vec<Event>);

    /// Cancels a resting order on its owner's request.
    fn cancel(&mut self, order_id: OrderId, participant: ParticipantId, out: &mut Vec<Event>);

    /// Sets a resting order's price and open quantity (both already checked).
    fn amend(
        &mut self,
        order_id: OrderId,
        participant: ParticipantId,
        price: Price,
        qty: Qty,
        ts_ns: u64,
        out: &mut Vec<Event>,
    );

    /// Cancels every resting order, or every resting order of one participant, in priority
    /// order (bids, then asks), emitting `Cancelled(MassCancel)` for each.
    fn mass_cancel(&mut self, participant: Option<ParticipantId>, out: &mut Vec<Event>);

    /// Removes every resting DAY order in priority order (bids, then asks), emitting `Expired`.
    fn expire_day(&mut self, out: &mut Vec<Event>);

    /// Best price on a side, if the side is not empty.
    fn best_price(&self, side: Side) -> Option<Price>;

    /// Calls `f` for every resting order of a side in priority order (best price first, then
    /// time).
    fn for_each_order(&self, side: Side, f: &mut dyn FnMut(&RestingOrder));

    /// The resting order with this id, if any.
    fn order(&self, order_id: OrderId) -> Option<RestingOrder>;

    /// Number of resting orders.
    fn order_count(&self) -> usize;

    /// Checks the book's internal invariants, among them that the book is not crossed (best
    /// bid below best ask); `Err` names the first one broken.
    fn check_invariants(&self) -> Result<(), String>;
}
