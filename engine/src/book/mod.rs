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

use serde::{Deserialize, Serialize};

use crate::message::NewOrder;
use crate::sink::EventSink;
use crate::types::{
    InstrumentId, InstrumentSpec, OrderId, ParticipantId, Phase, Price, Qty, Side, TimeInForce,
};

/// A read-only view of an order resting in a book; also what a snapshot records of it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
/// force, quantity, lot, tick, band); the book does the rest and pushes the events the command
/// causes into the sink `out`, in the order given in [`crate::message`]. The book's state never
/// depends on the sink: a [`crate::sink::Discard`] leaves the book as a `Vec` does.
pub trait OrderBook {
    /// An empty book for `instrument` under `spec`.
    fn new(instrument: InstrumentId, spec: &InstrumentSpec) -> Self
    where
        Self: Sized;

    /// Enters a checked new order.
    fn submit(&mut self, order: &NewOrder, ts_ns: u64, out: &mut impl EventSink);

    /// Cancels a resting order on its owner's request.
    fn cancel(&mut self, order_id: OrderId, participant: ParticipantId, out: &mut impl EventSink);

    /// Sets a resting order's price and open quantity (both already checked).
    fn amend(
        &mut self,
        order_id: OrderId,
        participant: ParticipantId,
        price: Price,
        qty: Qty,
        ts_ns: u64,
        out: &mut impl EventSink,
    );

    /// Cancels every resting order, or every resting order of one participant, in priority
    /// order (bids, then asks), emitting `Cancelled(MassCancel)` for each.
    fn mass_cancel(&mut self, participant: Option<ParticipantId>, out: &mut impl EventSink);

    /// Removes every resting DAY order in priority order (bids, then asks), emitting `Expired`.
    fn expire_day(&mut self, out: &mut impl EventSink);

    /// Best price on a side, if the side is not empty.
    fn best_price(&self, side: Side) -> Option<Price>;

    /// Calls `f` for every resting order of a side in priority order (best price first, then
    /// time).
    fn for_each_order(&self, side: Side, f: &mut dyn FnMut(&RestingOrder)) {
        self.for_each_order_while(side, &mut |o| {
            f(o);
            true
        });
    }

    /// Calls `f(price, total open quantity)` for every price level of a side, best first.
    fn for_each_level(&self, side: Side, f: &mut dyn FnMut(Price, Qty));

    /// Like [`OrderBook::for_each_order`], but stops as soon as `f` returns `false`.
    fn for_each_order_while(&self, side: Side, f: &mut dyn FnMut(&RestingOrder) -> bool);

    /// The resting order with this id, if any.
    fn order(&self, order_id: OrderId) -> Option<RestingOrder>;

    /// Number of resting orders.
    fn order_count(&self) -> usize;

    /// Puts `order` back at the back of its price level, as it was: no matching, no events.
    /// Rebuilds a book from a snapshot, which feeds each side's orders in priority order.
    ///
    /// `Err` (and the book unchanged) when the order would break the book: its id is already
    /// resting, it has nothing open, its time in force does not rest, its price is not a
    /// positive price the book can hold, it crosses the other side, or the book is full. The
    /// instrument's rules (tick, lot, band, maximum quantity) are the engine's to check.
    fn restore(&mut self, order: &RestingOrder) -> Result<(), String>;

    /// Checks the book's internal invariants, among them that a book in continuous trading is
    /// not crossed (best bid below best ask); `Err` names the first one broken.
    fn check_invariants(&self) -> Result<(), String>;

    /// Fills resting orders outside matching, as an uncross allocated them: `fills[i]` of the
    /// `i`-th order of `side` in priority order (as [`OrderBook::for_each_order`] lists them;
    /// orders past the end of `fills` are untouched). An order left with nothing open leaves
    /// the book. The caller computed the fills from this book's open quantities: a fill above
    /// an order's open quantity is a bug (debug builds panic; release builds fill what is open).
    fn fill_in_priority(&mut self, side: Side, fills: &[Qty]);

    /// The book's trading phase.
    fn phase(&self) -> Phase;

    /// Moves the book to another phase (the engine checks the transition). Only continuous
    /// trading matches on entry; in every other phase orders only rest.
    fn set_phase(&mut self, phase: Phase);
}

/// The checks of [`OrderBook::restore`] that every book makes alike; `full` tells whether the
/// book already holds its maximum number of orders.
pub(crate) fn check_restorable<B: OrderBook>(
    book: &B,
    order: &RestingOrder,
    full: bool,
) -> Result<(), String> {
    let id = order.order_id;
    if book.order(id).is_some() {
        return Err(format!("order {id} is already in the book"));
    }
    if order.leaves_qty == 0 {
        return Err(format!("order {id} has nothing open"));
    }
    if !order.tif.rests() {
        return Err(format!("order {id} has time in force {:?}, which does not rest", order.tif));
    }
    if order.price <= 0 {
        return Err(format!("order {id} has price {}, which is not positive", order.price));
    }
    let opposite = order.side.opposite();
    // Only a book in its call (open or closed) can be crossed: it crosses at the uncross.
    let crossing = book.best_price(opposite).filter(|best| order.side.crosses(order.price, *best));
    if let Some(best) = crossing.filter(|_| !matches!(book.phase(), Phase::Call | Phase::CallClosed)) {
        return Err(format!(
            "order {id} ({:?} at {}) crosses the best {opposite:?} at {best}",
            order.side, order.price
        ));
    }
    if full {
        return Err(format!("order {id}: the book is full"));
    }
    Ok(())
}
