//! The naive reference order book: the oracle the fast [`Book`](crate::book::Book) is tested
//! against, and the baseline of `cccx bench --compare-naive`.
//!
//! Deliberately plain, so that it is obviously correct: each side is a `BTreeMap` from price to
//! the orders at that price in time order (a `VecDeque`), and a `HashMap` tells an order's side
//! and price. Finding an order inside its level is a linear search. The semantics, and the order
//! of the events, are those of [`crate::message`].

use std::collections::btree_map::OccupiedEntry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::book::{check_restorable, OrderBook, RestingOrder};
use crate::message::{CancelReason, Event, NewOrder, RejectReason, RequestKind, Trade};
use crate::types::{
    InstrumentId, InstrumentSpec, OrderId, OrderType, ParticipantId, Phase, Price, Qty, Side, StpMode,
    TimeInForce,
};

/// The orders at one price, oldest first.
type Level = VecDeque<RestingOrder>;

/// One side of the book: price to level.
type Levels = BTreeMap<Price, Level>;

/// The naive reference implementation of [`OrderBook`].
///
/// Invariants (see [`OrderBook::check_invariants`]): every order of the levels is in the index
/// at its side and price, and every indexed order is in exactly one level; no level is empty; no
/// resting order has zero leaves; the best bid is below the best ask.
#[derive(Clone, Debug)]
pub struct ReferenceBook {
    /// The instrument whose orders this book holds (reported in events).
    instrument: InstrumentId,
    /// The instrument's self-trade prevention mode.
    stp: StpMode,
    /// Buy orders; the best price is the highest key.
    bids: Levels,
    /// Sell orders; the best price is the lowest key.
    asks: Levels,
    /// Where each resting order is.
    index: HashMap<OrderId, (Side, Price)>,
    /// The most orders the book may hold.
    resting_orders_max: usize,
    /// Continuous (orders match on entry) or call (orders only rest).
    phase: Phase,
}

/// How matching an aggressor ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum MatchEnd {
    /// Filled, or nothing more crosses: any remainder rests or is cancelled by the caller.
    Open,
    /// Self-trade prevention cancelled the aggressor's remainder: it neither rests nor is
    /// cancelled again.
    SelfTradeCancelled,
}

/// Whether an aggressor on `side` with `limit` (`None`: market) trades at `resting`.
fn crosses(side: Side, limit: Option<Price>, resting: Price) -> bool {
    limit.is_none_or(|limit| side.crosses(limit, resting))
}

/// The levels of a side, best price first.
fn in_priority(levels: &Levels, side: Side) -> Box<dyn Iterator<Item = (&Price, &Level)> + '_> {
    match side {
        Side::Buy => Box::new(levels.iter().rev()),
        Side::Sell => Box::new(levels.iter()),
    }
}

/// The levels of a side, best price first, mutably.
fn in_priority_mut(levels: &mut Levels, side: Side) -> Box<dyn Iterator<Item = &mut Level> + '_> {
    match side {
        Side::Buy => Box::new(levels.values_mut().rev()),
        Side::Sell => Box::new(levels.values_mut()),
    }
}

/// The trade between an aggressor and a resting order, both with their leaves after the fill.
fn trade(
    instrument: InstrumentId,
    aggressor: &RestingOrder,
    resting: &RestingOrder,
    qty: Qty,
    ts_ns: u64,
) -> Trade {
    let (buy, sell) = match aggressor.side {
        Side::Buy => (aggressor, resting),
        Side::Sell => (resting, aggressor),
    };
    Trade {
        instrument,
        price: resting.price,
        qty,
        buy_order_id: buy.order_id,
        sell_order_id: sell.order_id,
        buyer: buy.participant,
        seller: sell.participant,
        aggressor: aggressor.side.into(),
        buy_leaves_qty: buy.leaves_qty,
        sell_leaves_qty: sell.leaves_qty,
        ts_ns,
    }
}

impl ReferenceBook {
    fn levels(&self, side: Side) -> &Levels {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn levels_mut(&mut self, side: Side) -> &mut Levels {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The best level of a side, as an entry that can be removed.
    fn best_level_mut(&mut self, side: Side) -> Option<OccupiedEntry<'_, Price, Level>> {
        match side {
            Side::Buy => self.bids.last_entry(),
            Side::Sell => self.asks.first_entry(),
        }
    }

    /// The oldest order at the best price of a side.
    fn front(&self, side: Side) -> Option<RestingOrder> {
        let level = match side {
            Side::Buy => self.bids.last_key_value(),
            Side::Sell => self.asks.first_key_value(),
        };
        level.and_then(|(_, level)| level.front()).copied()
    }

    /// The resting order `order_id`, if any.
    fn get(&self, order_id: OrderId) -> Option<&RestingOrder> {
        let &(side, price) = self.index.get(&order_id)?;
        let level = self.levels(side).get(&price).expect("an indexed order's level exists");
        let order = level.iter().find(|o| o.order_id == order_id).expect("an indexed order is in its level");
        Some(order)
    }

    /// The resting order `order_id`, mutably, if any.
    fn get_mut(&mut self, order_id: OrderId) -> Option<&mut RestingOrder> {
        let &(side, price) = self.index.get(&order_id)?;
        let level = self.levels_mut(side).get_mut(&price).expect("an indexed order's level exists");
        let order =
            level.iter_mut().find(|o| o.order_id == order_id).expect("an indexed order is in its level");
        Some(order)
    }

    /// The resting order `order_id` if `participant` owns it, else why not.
    fn owned(&self, order_id: OrderId, participant: ParticipantId) -> Result<RestingOrder, RejectReason> {
        let order = self.get(order_id).ok_or(RejectReason::UnknownOrder)?;
        if order.participant != participant {
            return Err(RejectReason::NotOwner);
        }
        Ok(*order)
    }

    /// Puts an order at the back of its price level.
    fn rest(&mut self, order: RestingOrder) {
        self.index.insert(order.order_id, (order.side, order.price));
        self.levels_mut(order.side).entry(order.price).or_default().push_back(order);
    }

    /// Takes an order out of the book (index and level, dropping an emptied level); `None` when
    /// it is not resting.
    fn remove(&mut self, order_id: OrderId) -> Option<RestingOrder> {
        let (side, price) = self.index.remove(&order_id)?;
        let levels = self.levels_mut(side);
        let level = levels.get_mut(&price).expect("an indexed order's level exists");
        let position =
            level.iter().position(|o| o.order_id == order_id).expect("an indexed order is in its level");
        let order = level.remove(position);
        if level.is_empty() {
            levels.remove(&price);
        }
        order
    }

    /// Takes out every order `selected` picks, bids then asks, each side in priority order, and
    /// returns them in that order.
    fn remove_all(&mut self, selected: impl Fn(&RestingOrder) -> bool) -> Vec<RestingOrder> {
        let mut removed = Vec::new();
        for side in [Side::Buy, Side::Sell] {
            let levels = self.levels_mut(side);
            for level in in_priority_mut(levels, side) {
                level.retain(|order| {
                    let take = selected(order);
                    if take {
                        removed.push(*order);
                    }
                    !take
                });
            }
            levels.retain(|_, level| !level.is_empty());
        }
        for order in &removed {
            self.index.remove(&order.order_id);
        }
        removed
    }

    /// Whether an order on `side` with `limit` would trade with the opposite best price now.
    fn would_cross(&self, side: Side, limit: Option<Price>) -> bool {
        self.best_price(side.opposite()).is_some_and(|best| crosses(side, limit, best))
    }

    /// Whether the opposite side can fill a FOK order in full now, given self-trade prevention.
    fn fok_fillable(&self, order: &NewOrder, limit: Option<Price>) -> bool {
        let mut available: Qty = 0;
        for (&price, level) in in_priority(self.levels(order.side.opposite()), order.side.opposite()) {
            if !crosses(order.side, limit, price) {
                break;
            }
            for resting in level {
                if self.stp != StpMode::None && resting.participant == order.participant {
                    if self.stp == StpMode::CancelResting {
                        continue; // it would be cancelled, not traded
                    }
                    return false; // matching would stop here, before the order is filled
                }
                available = available.saturating_add(resting.leaves_qty);
                if available >= order.qty {
                    return true;
                }
            }
        }
        false
    }

    /// The checks of a NEW that need the book, in reason-code order.
    fn check_entry(&self, order: &NewOrder, limit: Option<Price>) -> Result<(), RejectReason> {
        if self.index.contains_key(&order.order_id) {
            return Err(RejectReason::DuplicateOrderId);
        }
        if order.post_only && self.phase.matches() && self.would_cross(order.side, limit) {
            return Err(RejectReason::PostOnlyWouldCross);
        }
        if order.tif == TimeInForce::Fok && !self.fok_fillable(order, limit) {
            return Err(RejectReason::FokNotFillable);
        }
        Ok(())
    }

    /// Matches `aggressor` (which is not in the book) against the opposite side while the
    /// opposite best price crosses `limit`, applying self-trade prevention.
    fn match_aggressor(
        &mut self,
        aggressor: &mut RestingOrder,
        limit: Option<Price>,
        ts_ns: u64,
        out: &mut Vec<Event>,
    ) -> MatchEnd {
        let opposite = aggressor.side.opposite();
        while aggressor.leaves_qty > 0 {
            let Some(resting) = self.front(opposite) else { break };
            if !crosses(aggressor.side, limit, resting.price) {
                break;
            }
            if self.stp != StpMode::None && resting.participant == aggressor.participant {
                if self.prevent_self_trade(aggressor, &resting, out) == MatchEnd::SelfTradeCancelled {
                    return MatchEnd::SelfTradeCancelled;
                }
                continue;
            }
            self.fill_front(aggressor, ts_ns, out);
        }
        MatchEnd::Open
    }

    /// Applies the self-trade prevention mode to an aggressor that met its own `resting` order
    /// (the oldest at the opposite best price): the resting order first, then the aggressor.
    fn prevent_self_trade(
        &mut self,
        aggressor: &RestingOrder,
        resting: &RestingOrder,
        out: &mut Vec<Event>,
    ) -> MatchEnd {
        if matches!(self.stp, StpMode::CancelResting | StpMode::CancelBoth) {
            self.remove(resting.order_id);
            out.push(self.cancelled(resting.order_id, resting.leaves_qty, CancelReason::SelfTrade));
        }
        if matches!(self.stp, StpMode::CancelIncoming | StpMode::CancelBoth) {
            out.push(self.cancelled(aggressor.order_id, aggressor.leaves_qty, CancelReason::SelfTrade));
            return MatchEnd::SelfTradeCancelled;
        }
        MatchEnd::Open
    }

    /// Trades `aggressor` with the oldest order at the opposite best price, at that order's
    /// price, for as much as both have; removes the resting order when it is filled.
    fn fill_front(&mut self, aggressor: &mut RestingOrder, ts_ns: u64, out: &mut Vec<Event>) {
        let instrument = self.instrument;
        let mut level = self.best_level_mut(aggressor.side.opposite()).expect("the caller saw a best level");
        let resting = level.get_mut().front_mut().expect("no level is empty");
        let qty = aggressor.leaves_qty.min(resting.leaves_qty);
        aggressor.leaves_qty -= qty;
        aggressor.filled_qty += qty;
        resting.leaves_qty -= qty;
        resting.filled_qty += qty;
        out.push(Event::Trade(trade(instrument, aggressor, resting, qty, ts_ns)));
        if resting.leaves_qty > 0 {
            return;
        }
        let filled = level.get_mut().pop_front().map(|o| o.order_id);
        if level.get().is_empty() {
            level.remove();
        }
        if let Some(order_id) = filled {
            self.index.remove(&order_id);
        }
    }

    /// What is left of an aggressor after matching: rests if `rests`, else is cancelled, unless
    /// it is filled or self-trade prevention already cancelled it.
    fn finish(&mut self, order: RestingOrder, end: MatchEnd, rests: bool, out: &mut Vec<Event>) {
        if end == MatchEnd::SelfTradeCancelled || order.leaves_qty == 0 {
            return;
        }
        if rests && self.index.len() < self.resting_orders_max {
            self.rest(order);
        } else {
            let reason = if rests { CancelReason::BookFull } else { CancelReason::ImmediateOrCancel };
            out.push(self.cancelled(order.order_id, order.leaves_qty, reason));
        }
    }

    fn rejected(&self, request: RequestKind, order_id: OrderId, reason: RejectReason) -> Event {
        Event::Rejected { request, order_id, instrument: self.instrument, reason }
    }

    fn cancelled(&self, order_id: OrderId, leaves_qty: Qty, reason: CancelReason) -> Event {
        Event::Cancelled { order_id, instrument: self.instrument, leaves_qty, reason }
    }

    fn amended(&self, order_id: OrderId, price: Price, leaves_qty: Qty, priority_kept: bool) -> Event {
        Event::Amended { order_id, instrument: self.instrument, price, leaves_qty, priority_kept }
    }
}

impl OrderBook for ReferenceBook {
    fn new(instrument: InstrumentId, spec: &InstrumentSpec) -> Self {
        ReferenceBook {
            instrument,
            stp: spec.stp,
            bids: Levels::new(),
            asks: Levels::new(),
            index: HashMap::new(),
            resting_orders_max: spec.resting_orders_max as usize,
            phase: spec.initial_phase,
        }
    }

    fn submit(&mut self, order: &NewOrder, ts_ns: u64, out: &mut Vec<Event>) {
        let limit = match order.order_type {
            OrderType::Limit => Some(order.price),
            OrderType::Market => None,
        };
        if let Err(reason) = self.check_entry(order, limit) {
            out.push(self.rejected(RequestKind::New, order.order_id, reason));
            return;
        }
        out.push(Event::Accepted { order_id: order.order_id, instrument: self.instrument });
        let call = !self.phase.matches();
        let mut incoming = RestingOrder {
            order_id: order.order_id,
            participant: order.participant,
            side: order.side,
            price: order.price,
            leaves_qty: order.qty,
            filled_qty: 0,
            tif: order.tif,
            post_only: order.post_only,
        };
        // In the call phase nothing matches: the order only rests.
        let end = if call { MatchEnd::Open } else { self.match_aggressor(&mut incoming, limit, ts_ns, out) };
        let rests = order.order_type == OrderType::Limit && order.tif.rests();
        self.finish(incoming, end, rests, out);
    }

    fn cancel(&mut self, order_id: OrderId, participant: ParticipantId, out: &mut Vec<Event>) {
        match self.owned(order_id, participant) {
            Err(reason) => out.push(self.rejected(RequestKind::Cancel, order_id, reason)),
            Ok(order) => {
                self.remove(order_id);
                out.push(self.cancelled(order_id, order.leaves_qty, CancelReason::Requested));
            }
        }
    }

    fn amend(
        &mut self,
        order_id: OrderId,
        participant: ParticipantId,
        price: Price,
        qty: Qty,
        ts_ns: u64,
        out: &mut Vec<Event>,
    ) {
        let current = match self.owned(order_id, participant) {
            Ok(order) => order,
            Err(reason) => {
                out.push(self.rejected(RequestKind::Amend, order_id, reason));
                return;
            }
        };
        if price == current.price && qty <= current.leaves_qty {
            if let Some(order) = self.get_mut(order_id) {
                order.leaves_qty = qty;
            }
            out.push(self.amended(order_id, price, qty, true));
            return;
        }
        let call = !self.phase.matches();
        if !call && current.post_only && self.would_cross(current.side, Some(price)) {
            out.push(self.rejected(RequestKind::Amend, order_id, RejectReason::PostOnlyWouldCross));
            return;
        }
        self.remove(order_id);
        out.push(self.amended(order_id, price, qty, false));
        let mut order = RestingOrder { price, leaves_qty: qty, ..current };
        let end =
            if call { MatchEnd::Open } else { self.match_aggressor(&mut order, Some(price), ts_ns, out) };
        self.finish(order, end, true, out);
    }

    fn mass_cancel(&mut self, participant: Option<ParticipantId>, out: &mut Vec<Event>) {
        for order in self.remove_all(|o| participant.is_none_or(|p| o.participant == p)) {
            out.push(self.cancelled(order.order_id, order.leaves_qty, CancelReason::MassCancel));
        }
    }

    fn expire_day(&mut self, out: &mut Vec<Event>) {
        for order in self.remove_all(|o| o.tif == TimeInForce::Day) {
            out.push(Event::Expired {
                order_id: order.order_id,
                instrument: self.instrument,
                leaves_qty: order.leaves_qty,
            });
        }
    }

    fn best_price(&self, side: Side) -> Option<Price> {
        match side {
            Side::Buy => self.bids.last_key_value().map(|(&price, _)| price),
            Side::Sell => self.asks.first_key_value().map(|(&price, _)| price),
        }
    }

    fn for_each_level(&self, side: Side, f: &mut dyn FnMut(Price, Qty)) {
        for (&price, level) in in_priority(self.levels(side), side) {
            f(price, level.iter().map(|o| o.leaves_qty).sum());
        }
    }

    fn for_each_order_while(&self, side: Side, f: &mut dyn FnMut(&RestingOrder) -> bool) {
        for (_, level) in in_priority(self.levels(side), side) {
            for order in level {
                if !f(order) {
                    return;
                }
            }
        }
    }

    fn order(&self, order_id: OrderId) -> Option<RestingOrder> {
        self.get(order_id).copied()
    }

    fn order_count(&self) -> usize {
        self.index.len()
    }

    fn restore(&mut self, order: &RestingOrder) -> Result<(), String> {
        check_restorable(self, order, self.index.len() >= self.resting_orders_max)?;
        self.rest(*order);
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for side in [Side::Buy, Side::Sell] {
            for (&price, level) in self.levels(side) {
                if level.is_empty() {
                    return Err(format!("empty {side:?} level at {price}"));
                }
                for order in level {
                    self.check_order(side, price, order, &mut seen)?;
                }
            }
        }
        if seen.len() != self.index.len() {
            return Err(format!("the index holds {} orders, the levels {}", self.index.len(), seen.len()));
        }
        if let (Some(bid), Some(ask)) = (self.best_price(Side::Buy), self.best_price(Side::Sell)) {
            if bid >= ask && self.phase.matches() {
                return Err(format!("book crossed: bid {bid} >= ask {ask}"));
            }
        }
        Ok(())
    }

    fn fill_in_priority(&mut self, side: Side, fills: &[Qty]) {
        if fills.is_empty() {
            return;
        }
        let mut targets: Vec<(OrderId, Qty)> = Vec::new();
        self.for_each_order_while(side, &mut |o| {
            targets.push((o.order_id, fills[targets.len()]));
            targets.len() < fills.len()
        });
        for (id, qty) in targets {
            let Some(order) = self.get_mut(id) else { continue };
            assert!(qty <= order.leaves_qty, "a fill above the open quantity of order {id}");
            order.leaves_qty -= qty;
            order.filled_qty += qty;
            if order.leaves_qty == 0 {
                self.remove(id);
            }
        }
    }

    fn phase(&self) -> Phase {
        self.phase
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }
}

impl ReferenceBook {
    /// Checks one order found in the `side` level at `price`; `seen` collects the ids so far.
    fn check_order(
        &self,
        side: Side,
        price: Price,
        order: &RestingOrder,
        seen: &mut HashSet<OrderId>,
    ) -> Result<(), String> {
        let id = order.order_id;
        if order.side != side || order.price != price {
            return Err(format!(
                "order {id} says {:?} at {}, but sits in the {side:?} level at {price}",
                order.side, order.price
            ));
        }
        if order.leaves_qty == 0 {
            return Err(format!("order {id} rests with zero leaves"));
        }
        if !order.tif.rests() {
            return Err(format!("order {id} rests with time in force {:?}", order.tif));
        }
        if !seen.insert(id) {
            return Err(format!("order {id} is in the levels twice"));
        }
        if self.index.get(&id) != Some(&(side, price)) {
            return Err(format!(
                "order {id} sits in the {side:?} level at {price}, the index says {:?}",
                self.index.get(&id)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Scenario tables: each step is a command and the exact events it must emit. The engine runs
    //! its own checks in front of the book, and the invariants are checked after every step.

    use super::*;
    use crate::message::{Command, CommandBody, MassCancelScope};
    use crate::Engine;
    use CancelReason::{ImmediateOrCancel, MassCancel, Requested, SelfTrade};
    use RejectReason::{DuplicateOrderId, FokNotFillable, NotOwner, PostOnlyWouldCross, UnknownOrder};
    use Side::{Buy, Sell};

    /// Timestamp of every scenario command.
    const TS: u64 = 1_000;
    /// Participants.
    const A: u32 = 1;
    const B: u32 = 2;
    const C: u32 = 3;

    /// A command and the events it must emit, in order.
    type Step = (CommandBody, Vec<Event>);

    /// A resting order as the final-book tables list it: side, price, order id, leaves.
    type Resting = (Side, Price, u64, Qty);

    fn engine_with(stp: StpMode) -> Engine<ReferenceBook> {
        let spec = InstrumentSpec { stp, ..InstrumentSpec::canonical("CCC0") };
        Engine::<ReferenceBook>::new(vec![spec]).expect("a valid instrument")
    }

    /// Runs the steps on a fresh book, then checks that exactly `book` rests, in priority order.
    fn scenario(stp: StpMode, steps: &[Step], book: &[Resting]) -> Engine<ReferenceBook> {
        let mut engine = engine_with(stp);
        run(&mut engine, steps, book);
        engine
    }

    /// Runs more steps on `engine`, then checks that exactly `book` rests, in priority order.
    fn run(engine: &mut Engine<ReferenceBook>, steps: &[Step], book: &[Resting]) {
        for (i, (body, expected)) in steps.iter().enumerate() {
            let events = engine.apply_vec(&Command { ts_ns: TS, body: *body });
            assert_eq!(&events, expected, "step {} ({body:?})", i + 1);
            engine.check_invariants().unwrap_or_else(|e| panic!("step {}: {e}", i + 1));
        }
        assert_eq!(resting(engine), book, "final book");
    }

    /// The whole book, bids then asks, in priority order.
    fn resting(engine: &Engine<ReferenceBook>) -> Vec<Resting> {
        let book = engine.book(InstrumentId(0)).expect("instrument 0");
        let mut orders = Vec::new();
        for side in [Buy, Sell] {
            book.for_each_order(side, &mut |o| orders.push((o.side, o.price, o.order_id.0, o.leaves_qty)));
        }
        orders
    }

    fn resting_order(engine: &Engine<ReferenceBook>, id: u64) -> Option<RestingOrder> {
        engine.book(InstrumentId(0)).and_then(|book| book.order(OrderId(id)))
    }

    // Commands.

    fn limit(id: u64, who: u32, side: Side, tif: TimeInForce, price: Price, qty: Qty) -> CommandBody {
        CommandBody::New(NewOrder::limit(id, who, 0, side, tif, price, qty))
    }
    fn gtc(id: u64, who: u32, side: Side, price: Price, qty: Qty) -> CommandBody {
        limit(id, who, side, TimeInForce::Gtc, price, qty)
    }
    fn day(id: u64, who: u32, side: Side, price: Price, qty: Qty) -> CommandBody {
        limit(id, who, side, TimeInForce::Day, price, qty)
    }
    fn ioc(id: u64, who: u32, side: Side, price: Price, qty: Qty) -> CommandBody {
        limit(id, who, side, TimeInForce::Ioc, price, qty)
    }
    fn fok(id: u64, who: u32, side: Side, price: Price, qty: Qty) -> CommandBody {
        limit(id, who, side, TimeInForce::Fok, price, qty)
    }
    fn market(id: u64, who: u32, side: Side, qty: Qty) -> CommandBody {
        CommandBody::New(NewOrder::market(id, who, 0, side, qty))
    }
    fn market_fok(id: u64, who: u32, side: Side, qty: Qty) -> CommandBody {
        CommandBody::New(NewOrder { tif: TimeInForce::Fok, ..NewOrder::market(id, who, 0, side, qty) })
    }
    fn post_only(id: u64, who: u32, side: Side, price: Price, qty: Qty) -> CommandBody {
        let order = NewOrder::limit(id, who, 0, side, TimeInForce::Gtc, price, qty);
        CommandBody::New(NewOrder { post_only: true, ..order })
    }
    fn cancel(id: u64, who: u32) -> CommandBody {
        CommandBody::Cancel {
            instrument: InstrumentId(0),
            order_id: OrderId(id),
            participant: ParticipantId(who),
        }
    }
    fn amend(id: u64, who: u32, price: Price, qty: Qty) -> CommandBody {
        let (instrument, order_id, participant) = (InstrumentId(0), OrderId(id), ParticipantId(who));
        CommandBody::Amend { instrument, order_id, participant, price, qty }
    }

    // Events.

    fn accepted(id: u64) -> Event {
        Event::Accepted { order_id: OrderId(id), instrument: InstrumentId(0) }
    }
    fn rejected(request: RequestKind, id: u64, reason: RejectReason) -> Event {
        Event::Rejected { request, order_id: OrderId(id), instrument: InstrumentId(0), reason }
    }
    fn cancelled(id: u64, leaves_qty: Qty, reason: CancelReason) -> Event {
        Event::Cancelled { order_id: OrderId(id), instrument: InstrumentId(0), leaves_qty, reason }
    }
    fn amended(id: u64, price: Price, leaves_qty: Qty, priority_kept: bool) -> Event {
        Event::Amended {
            order_id: OrderId(id),
            instrument: InstrumentId(0),
            price,
            leaves_qty,
            priority_kept,
        }
    }
    fn expired(id: u64, leaves_qty: Qty) -> Event {
        Event::Expired { order_id: OrderId(id), instrument: InstrumentId(0), leaves_qty }
    }
    /// A trade; `buy` and `sell` are (order id, participant, leaves after the fill).
    fn trade(aggressor: Side, price: Price, qty: Qty, buy: (u64, u32, Qty), sell: (u64, u32, Qty)) -> Event {
        let aggressor = aggressor.into();
        Event::Trade(Trade {
            instrument: InstrumentId(0),
            price,
            qty,
            buy_order_id: OrderId(buy.0),
            sell_order_id: OrderId(sell.0),
            buyer: ParticipantId(buy.1),
            seller: ParticipantId(sell.1),
            aggressor,
            buy_leaves_qty: buy.2,
            sell_leaves_qty: sell.2,
            ts_ns: TS,
        })
    }

    // Scenarios.

    #[test]
    fn price_time_priority() {
        // Better price first; within a price, the older order first; on both sides.
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 101, 5), vec![accepted(1)]),
                (gtc(2, A, Sell, 100, 5), vec![accepted(2)]),
                (gtc(3, B, Sell, 100, 5), vec![accepted(3)]),
                (
                    gtc(4, C, Buy, 101, 12),
                    vec![
                        accepted(4),
                        trade(Buy, 100, 5, (4, C, 7), (2, A, 0)),
                        trade(Buy, 100, 5, (4, C, 2), (3, B, 0)),
                        trade(Buy, 101, 2, (4, C, 0), (1, A, 3)),
                    ],
                ),
                (gtc(5, A, Buy, 98, 5), vec![accepted(5)]),
                (gtc(6, A, Buy, 99, 5), vec![accepted(6)]),
                (gtc(7, B, Buy, 99, 5), vec![accepted(7)]),
                (
                    gtc(8, C, Sell, 98, 12),
                    vec![
                        accepted(8),
                        trade(Sell, 99, 5, (6, A, 0), (8, C, 7)),
                        trade(Sell, 99, 5, (7, B, 0), (8, C, 2)),
                        trade(Sell, 98, 2, (5, A, 3), (8, C, 0)),
                    ],
                ),
            ],
            &[(Buy, 98, 5, 3), (Sell, 101, 1, 3)],
        );
    }

    #[test]
    fn book_is_listed_in_priority_order() {
        let engine = scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 99, 1), vec![accepted(1)]),
                (gtc(2, B, Buy, 100, 2), vec![accepted(2)]),
                (day(3, C, Buy, 100, 3), vec![accepted(3)]),
                (gtc(4, A, Sell, 102, 4), vec![accepted(4)]),
                (gtc(5, B, Sell, 101, 5), vec![accepted(5)]),
                (gtc(6, C, Sell, 101, 6), vec![accepted(6)]),
            ],
            &[
                (Buy, 100, 2, 2),
                (Buy, 100, 3, 3),
                (Buy, 99, 1, 1),
                (Sell, 101, 5, 5),
                (Sell, 101, 6, 6),
                (Sell, 102, 4, 4),
            ],
        );
        let book = engine.book(InstrumentId(0)).expect("instrument 0");
        assert_eq!((book.best_price(Buy), book.best_price(Sell)), (Some(100), Some(101)));
        assert_eq!(book.order_count(), 6);
        let expected = RestingOrder {
            order_id: OrderId(3),
            participant: ParticipantId(C),
            side: Buy,
            price: 100,
            leaves_qty: 3,
            filled_qty: 0,
            tif: TimeInForce::Day,
            post_only: false,
        };
        assert_eq!(book.order(OrderId(3)), Some(expected));
        assert_eq!(book.order(OrderId(7)), None);
        let empty = engine_with(StpMode::None);
        let empty = empty.book(InstrumentId(0)).expect("instrument 0");
        assert_eq!((empty.best_price(Buy), empty.best_price(Sell), empty.order_count()), (None, None, 0));
    }

    #[test]
    fn trades_at_the_resting_price() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 105, 5), vec![accepted(1)]),
                (gtc(2, B, Sell, 100, 3), vec![accepted(2), trade(Sell, 105, 3, (1, A, 2), (2, B, 0))]),
                (gtc(3, A, Sell, 110, 5), vec![accepted(3)]),
                (gtc(4, B, Buy, 120, 2), vec![accepted(4), trade(Buy, 110, 2, (4, B, 0), (3, A, 3))]),
            ],
            &[(Buy, 105, 1, 2), (Sell, 110, 3, 3)],
        );
    }

    #[test]
    fn trade_carries_the_time_of_the_command_that_caused_it() {
        let mut engine = engine_with(StpMode::None);
        engine.apply_vec(&Command { ts_ns: 7, body: gtc(1, A, Sell, 100, 5) });
        let events = engine.apply_vec(&Command { ts_ns: 42, body: gtc(2, B, Buy, 100, 5) });
        assert!(matches!(events[..], [Event::Accepted { .. }, Event::Trade(Trade { ts_ns: 42, .. })]));
        engine.apply_vec(&Command { ts_ns: 50, body: gtc(3, A, Sell, 100, 5) });
        engine.apply_vec(&Command { ts_ns: 60, body: gtc(4, B, Buy, 90, 5) });
        let events = engine.apply_vec(&Command { ts_ns: 99, body: amend(4, B, 100, 5) });
        assert!(matches!(events[..], [Event::Amended { .. }, Event::Trade(Trade { ts_ns: 99, .. })]));
    }

    #[test]
    fn partial_fills_track_leaves_and_filled() {
        let mut engine = scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 10), vec![accepted(1)]),
                (gtc(2, B, Buy, 100, 4), vec![accepted(2), trade(Buy, 100, 4, (2, B, 0), (1, A, 6))]),
            ],
            &[(Sell, 100, 1, 6)],
        );
        let one = resting_order(&engine, 1).expect("order 1 rests");
        assert_eq!((one.leaves_qty, one.filled_qty), (6, 4));
        run(
            &mut engine,
            &[(gtc(3, C, Buy, 101, 10), vec![accepted(3), trade(Buy, 100, 6, (3, C, 4), (1, A, 0))])],
            &[(Buy, 101, 3, 4)],
        );
        let three = resting_order(&engine, 3).expect("order 3 rests");
        assert_eq!((three.leaves_qty, three.filled_qty), (4, 6));
    }

    #[test]
    fn ioc_remainder_is_cancelled() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 5), vec![accepted(1)]),
                (gtc(2, A, Sell, 102, 5), vec![accepted(2)]),
                (
                    ioc(3, B, Buy, 101, 8),
                    vec![
                        accepted(3),
                        trade(Buy, 100, 5, (3, B, 3), (1, A, 0)),
                        cancelled(3, 3, ImmediateOrCancel),
                    ],
                ),
                // Nothing crosses: the whole quantity is cancelled.
                (ioc(4, B, Buy, 101, 2), vec![accepted(4), cancelled(4, 2, ImmediateOrCancel)]),
                // Filled in full: nothing left to cancel.
                (ioc(5, B, Buy, 102, 5), vec![accepted(5), trade(Buy, 102, 5, (5, B, 0), (2, A, 0))]),
            ],
            &[],
        );
    }

    #[test]
    fn fok_fills_in_full_or_is_rejected() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 3), vec![accepted(1)]),
                (gtc(2, A, Sell, 101, 3), vec![accepted(2)]),
                (gtc(3, A, Sell, 102, 10), vec![accepted(3)]),
                // Only 6 at prices that cross 101.
                (fok(4, B, Buy, 101, 7), vec![rejected(RequestKind::New, 4, FokNotFillable)]),
                (
                    fok(5, B, Buy, 101, 6),
                    vec![
                        accepted(5),
                        trade(Buy, 100, 3, (5, B, 3), (1, A, 0)),
                        trade(Buy, 101, 3, (5, B, 0), (2, A, 0)),
                    ],
                ),
                // A market FOK counts every price.
                (market_fok(6, B, Buy, 11), vec![rejected(RequestKind::New, 6, FokNotFillable)]),
                (market_fok(7, B, Buy, 10), vec![accepted(7), trade(Buy, 102, 10, (7, B, 0), (3, A, 0))]),
            ],
            &[],
        );
    }

    #[test]
    fn market_orders_take_any_price_and_never_rest() {
        scenario(
            StpMode::None,
            &[
                (market(1, A, Buy, 5), vec![accepted(1), cancelled(1, 5, ImmediateOrCancel)]),
                (gtc(2, B, Sell, 100, 2), vec![accepted(2)]),
                (gtc(3, B, Sell, 1_000_000, 2), vec![accepted(3)]),
                (
                    market(4, A, Buy, 5),
                    vec![
                        accepted(4),
                        trade(Buy, 100, 2, (4, A, 3), (2, B, 0)),
                        trade(Buy, 1_000_000, 2, (4, A, 1), (3, B, 0)),
                        cancelled(4, 1, ImmediateOrCancel),
                    ],
                ),
                (market(5, A, Sell, 3), vec![accepted(5), cancelled(5, 3, ImmediateOrCancel)]),
            ],
            &[],
        );
    }

    #[test]
    fn post_only_is_rejected_when_it_would_cross() {
        let engine = scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 5), vec![accepted(1)]),
                (gtc(2, A, Buy, 98, 5), vec![accepted(2)]),
                (post_only(3, B, Buy, 100, 5), vec![rejected(RequestKind::New, 3, PostOnlyWouldCross)]),
                (post_only(4, B, Buy, 101, 5), vec![rejected(RequestKind::New, 4, PostOnlyWouldCross)]),
                (post_only(5, B, Buy, 99, 5), vec![accepted(5)]),
                (post_only(6, B, Sell, 99, 5), vec![rejected(RequestKind::New, 6, PostOnlyWouldCross)]),
                (post_only(7, B, Sell, 101, 5), vec![accepted(7)]),
            ],
            &[(Buy, 99, 5, 5), (Buy, 98, 2, 5), (Sell, 100, 1, 5), (Sell, 101, 7, 5)],
        );
        assert!(resting_order(&engine, 5).is_some_and(|o| o.post_only));
    }

    #[test]
    fn cancel_unknown_and_not_owner() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 100, 5), vec![accepted(1)]),
                (cancel(9, A), vec![rejected(RequestKind::Cancel, 9, UnknownOrder)]),
                (cancel(1, B), vec![rejected(RequestKind::Cancel, 1, NotOwner)]),
                (cancel(1, A), vec![cancelled(1, 5, Requested)]),
                (cancel(1, A), vec![rejected(RequestKind::Cancel, 1, UnknownOrder)]),
                (gtc(2, A, Sell, 100, 5), vec![accepted(2)]),
                (gtc(3, B, Buy, 100, 2), vec![accepted(3), trade(Buy, 100, 2, (3, B, 0), (2, A, 3))]),
                // The open quantity is cancelled, not the original one.
                (cancel(2, A), vec![cancelled(2, 3, Requested)]),
                // A filled order is no longer in the book.
                (cancel(3, B), vec![rejected(RequestKind::Cancel, 3, UnknownOrder)]),
            ],
            &[],
        );
    }

    #[test]
    fn duplicate_order_id_is_rejected_first_and_only_while_resting() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 100, 5), vec![accepted(1)]),
                (gtc(1, B, Sell, 200, 5), vec![rejected(RequestKind::New, 1, DuplicateOrderId)]),
                (post_only(1, B, Sell, 100, 5), vec![rejected(RequestKind::New, 1, DuplicateOrderId)]),
                (fok(1, B, Sell, 100, 50), vec![rejected(RequestKind::New, 1, DuplicateOrderId)]),
                (gtc(2, B, Sell, 100, 5), vec![accepted(2), trade(Sell, 100, 5, (1, A, 0), (2, B, 0))]),
                (gtc(1, B, Sell, 101, 5), vec![accepted(1)]),
            ],
            &[(Sell, 101, 1, 5)],
        );
    }

    #[test]
    fn amend_same_price_smaller_qty_keeps_priority() {
        let mut engine = scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 10), vec![accepted(1)]),
                (gtc(2, B, Sell, 100, 10), vec![accepted(2)]),
                (gtc(3, C, Buy, 100, 2), vec![accepted(3), trade(Buy, 100, 2, (3, C, 0), (1, A, 8))]),
                (amend(1, A, 100, 4), vec![amended(1, 100, 4, true)]),
                (amend(1, A, 100, 4), vec![amended(1, 100, 4, true)]),
            ],
            &[(Sell, 100, 1, 4), (Sell, 100, 2, 10)],
        );
        let one = resting_order(&engine, 1).expect("order 1 rests");
        assert_eq!((one.leaves_qty, one.filled_qty), (4, 2));
        run(
            &mut engine,
            &[(
                gtc(4, C, Buy, 100, 5),
                vec![
                    accepted(4),
                    trade(Buy, 100, 4, (4, C, 1), (1, A, 0)),
                    trade(Buy, 100, 1, (4, C, 0), (2, B, 9)),
                ],
            )],
            &[(Sell, 100, 2, 9)],
        );
    }

    #[test]
    fn amend_larger_qty_or_new_price_loses_priority() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 10), vec![accepted(1)]),
                (gtc(2, B, Sell, 100, 10), vec![accepted(2)]),
                (amend(1, A, 100, 12), vec![amended(1, 100, 12, false)]),
                (gtc(3, C, Buy, 100, 5), vec![accepted(3), trade(Buy, 100, 5, (3, C, 0), (2, B, 5))]),
                (amend(2, B, 101, 5), vec![amended(2, 101, 5, false)]),
                (amend(2, B, 100, 5), vec![amended(2, 100, 5, false)]),
            ],
            &[(Sell, 100, 1, 12), (Sell, 100, 2, 5)],
        );
    }

    #[test]
    fn amend_to_a_crossing_price_trades_at_resting_prices() {
        let engine = scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 99, 5), vec![accepted(1)]),
                (gtc(2, B, Sell, 101, 3), vec![accepted(2)]),
                (gtc(3, C, Sell, 102, 3), vec![accepted(3)]),
                (gtc(4, B, Sell, 104, 2), vec![accepted(4)]),
                (
                    amend(1, A, 102, 5),
                    vec![
                        amended(1, 102, 5, false),
                        trade(Buy, 101, 3, (1, A, 2), (2, B, 0)),
                        trade(Buy, 102, 2, (1, A, 0), (3, C, 1)),
                    ],
                ),
                (gtc(5, A, Buy, 99, 4), vec![accepted(5)]),
                (gtc(6, B, Sell, 99, 1), vec![accepted(6), trade(Sell, 99, 1, (5, A, 3), (6, B, 0))]),
                // The remainder rests at the new price; filled counts the whole life.
                (
                    amend(5, A, 103, 6),
                    vec![amended(5, 103, 6, false), trade(Buy, 102, 1, (5, A, 5), (3, C, 0))],
                ),
            ],
            &[(Buy, 103, 5, 5), (Sell, 104, 4, 2)],
        );
        let five = resting_order(&engine, 5).expect("order 5 rests");
        assert_eq!((five.leaves_qty, five.filled_qty), (5, 2));
    }

    #[test]
    fn amend_rejects_unknown_not_owner_and_crossing_post_only() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 99, 5), vec![accepted(1)]),
                (post_only(2, A, Sell, 101, 5), vec![accepted(2)]),
                (amend(9, A, 100, 5), vec![rejected(RequestKind::Amend, 9, UnknownOrder)]),
                (amend(1, B, 100, 5), vec![rejected(RequestKind::Amend, 1, NotOwner)]),
                (amend(2, A, 99, 5), vec![rejected(RequestKind::Amend, 2, PostOnlyWouldCross)]),
                (amend(2, A, 100, 7), vec![amended(2, 100, 7, false)]),
            ],
            &[(Buy, 99, 1, 5), (Sell, 100, 2, 7)],
        );
    }

    #[test]
    fn stp_none_allows_self_trades() {
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Sell, 100, 5), vec![accepted(1)]),
                (gtc(2, B, Sell, 100, 5), vec![accepted(2)]),
                (
                    gtc(3, A, Buy, 101, 8),
                    vec![
                        accepted(3),
                        trade(Buy, 100, 5, (3, A, 3), (1, A, 0)),
                        trade(Buy, 100, 3, (3, A, 0), (2, B, 2)),
                    ],
                ),
            ],
            &[(Sell, 100, 2, 2)],
        );
    }

    #[test]
    fn stp_cancel_resting_cancels_own_crossing_orders_and_goes_on() {
        scenario(
            StpMode::CancelResting,
            &[
                (gtc(1, A, Sell, 100, 5), vec![accepted(1)]),
                (gtc(2, B, Sell, 100, 5), vec![accepted(2)]),
                (gtc(3, A, Sell, 101, 5), vec![accepted(3)]),
                (gtc(4, A, Sell, 102, 5), vec![accepted(4)]),
                (
                    gtc(5, A, Buy, 101, 8),
                    vec![
                        accepted(5),
                        cancelled(1, 5, SelfTrade),
                        trade(Buy, 100, 5, (5, A, 3), (2, B, 0)),
                        cancelled(3, 5, SelfTrade),
                    ],
                ),
            ],
            &[(Buy, 101, 5, 3), (Sell, 102, 4, 5)],
        );
    }

    #[test]
    fn stp_cancel_incoming_stops_matching() {
        scenario(
            StpMode::CancelIncoming,
            &[
                (gtc(1, B, Sell, 100, 3), vec![accepted(1)]),
                (gtc(2, A, Sell, 100, 5), vec![accepted(2)]),
                (gtc(3, B, Sell, 100, 5), vec![accepted(3)]),
                (
                    gtc(4, A, Buy, 101, 8),
                    vec![accepted(4), trade(Buy, 100, 3, (4, A, 5), (1, B, 0)), cancelled(4, 5, SelfTrade)],
                ),
                // No ImmediateOrCancel after a self-trade cancel.
                (ioc(5, A, Buy, 100, 2), vec![accepted(5), cancelled(5, 2, SelfTrade)]),
            ],
            &[(Sell, 100, 2, 5), (Sell, 100, 3, 5)],
        );
    }

    #[test]
    fn stp_cancel_both_cancels_resting_then_incoming() {
        scenario(
            StpMode::CancelBoth,
            &[
                (gtc(1, B, Sell, 100, 3), vec![accepted(1)]),
                (gtc(2, A, Sell, 100, 5), vec![accepted(2)]),
                (gtc(3, B, Sell, 100, 5), vec![accepted(3)]),
                (
                    gtc(4, A, Buy, 101, 8),
                    vec![
                        accepted(4),
                        trade(Buy, 100, 3, (4, A, 5), (1, B, 0)),
                        cancelled(2, 5, SelfTrade),
                        cancelled(4, 5, SelfTrade),
                    ],
                ),
            ],
            &[(Sell, 100, 3, 5)],
        );
    }

    #[test]
    fn stp_fok_counts_what_matching_would_trade() {
        // Cancel-resting: own orders are skipped (they would be cancelled, not traded).
        scenario(
            StpMode::CancelResting,
            &[
                (gtc(1, A, Sell, 100, 5), vec![accepted(1)]),
                (gtc(2, B, Sell, 100, 5), vec![accepted(2)]),
                (fok(3, A, Buy, 100, 6), vec![rejected(RequestKind::New, 3, FokNotFillable)]),
                (
                    fok(4, A, Buy, 100, 5),
                    vec![accepted(4), cancelled(1, 5, SelfTrade), trade(Buy, 100, 5, (4, A, 0), (2, B, 0))],
                ),
            ],
            &[],
        );
        // Cancel-incoming and cancel-both: counting stops at the first own order.
        for stp in [StpMode::CancelIncoming, StpMode::CancelBoth] {
            scenario(
                stp,
                &[
                    (gtc(1, B, Sell, 100, 3), vec![accepted(1)]),
                    (gtc(2, A, Sell, 100, 5), vec![accepted(2)]),
                    (gtc(3, B, Sell, 100, 5), vec![accepted(3)]),
                    (fok(4, A, Buy, 100, 4), vec![rejected(RequestKind::New, 4, FokNotFillable)]),
                    (fok(5, A, Buy, 100, 3), vec![accepted(5), trade(Buy, 100, 3, (5, A, 0), (1, B, 0))]),
                ],
                &[(Sell, 100, 2, 5), (Sell, 100, 3, 5)],
            );
        }
    }

    #[test]
    fn stp_applies_to_an_amended_order() {
        scenario(
            StpMode::CancelIncoming,
            &[
                (gtc(1, A, Sell, 101, 5), vec![accepted(1)]),
                (gtc(2, A, Buy, 99, 5), vec![accepted(2)]),
                (amend(2, A, 101, 5), vec![amended(2, 101, 5, false), cancelled(2, 5, SelfTrade)]),
            ],
            &[(Sell, 101, 1, 5)],
        );
        scenario(
            StpMode::CancelResting,
            &[
                (gtc(1, A, Sell, 101, 5), vec![accepted(1)]),
                (gtc(2, A, Buy, 99, 5), vec![accepted(2)]),
                (amend(2, A, 101, 5), vec![amended(2, 101, 5, false), cancelled(1, 5, SelfTrade)]),
            ],
            &[(Buy, 101, 2, 5)],
        );
    }

    #[test]
    fn mass_cancel_bids_then_asks_in_priority_order() {
        let (a, instrument) = (ParticipantId(A), InstrumentId(0));
        scenario(
            StpMode::None,
            &[
                (gtc(1, A, Buy, 99, 1), vec![accepted(1)]),
                (gtc(2, B, Buy, 100, 2), vec![accepted(2)]),
                (gtc(3, A, Buy, 100, 3), vec![accepted(3)]),
                (gtc(4, A, Sell, 102, 4), vec![accepted(4)]),
                (gtc(5, A, Sell, 101, 5), vec![accepted(5)]),
                (gtc(6, B, Sell, 101, 6), vec![accepted(6)]),
                (gtc(7, A, Sell, 101, 7), vec![accepted(7)]),
                (
                    CommandBody::MassCancel(MassCancelScope::ParticipantInInstrument(a, instrument)),
                    vec![
                        cancelled(3, 3, MassCancel),
                        cancelled(1, 1, MassCancel),
                        cancelled(5, 5, MassCancel),
                        cancelled(7, 7, MassCancel),
                        cancelled(4, 4, MassCancel),
                    ],
                ),
                (CommandBody::MassCancel(MassCancelScope::Participant(ParticipantId(C))), vec![]),
                (
                    CommandBody::MassCancel(MassCancelScope::Instrument(instrument)),
                    vec![cancelled(2, 2, MassCancel), cancelled(6, 6, MassCancel)],
                ),
            ],
            &[],
        );
    }

    #[test]
    fn expire_day_removes_day_orders_in_priority_order() {
        let expire = CommandBody::ExpireDay { instrument: InstrumentId(0) };
        scenario(
            StpMode::None,
            &[
                (day(1, A, Buy, 99, 1), vec![accepted(1)]),
                (gtc(2, B, Buy, 100, 2), vec![accepted(2)]),
                (day(3, B, Buy, 100, 3), vec![accepted(3)]),
                (day(4, A, Sell, 102, 4), vec![accepted(4)]),
                (gtc(5, A, Sell, 101, 5), vec![accepted(5)]),
                (day(6, B, Sell, 101, 10), vec![accepted(6)]),
                (gtc(7, C, Buy, 101, 4), vec![accepted(7), trade(Buy, 101, 4, (7, C, 0), (5, A, 1))]),
                (expire, vec![expired(3, 3), expired(1, 1), expired(6, 10), expired(4, 4)]),
                (expire, vec![]),
            ],
            &[(Buy, 100, 2, 2), (Sell, 101, 5, 1)],
        );
    }

    #[test]
    fn check_invariants_reports_a_broken_book() {
        let fresh = || {
            let mut book = ReferenceBook::new(InstrumentId(0), &InstrumentSpec::canonical("CCC0"));
            let mut out = Vec::new();
            book.submit(&NewOrder::limit(1, A, 0, Buy, TimeInForce::Gtc, 100, 5), TS, &mut out);
            book.submit(&NewOrder::limit(2, B, 0, Sell, TimeInForce::Gtc, 101, 5), TS, &mut out);
            assert_eq!(book.check_invariants(), Ok(()));
            book
        };
        let mut book = fresh();
        book.bids.insert(90, VecDeque::new());
        assert!(book.check_invariants().is_err(), "empty level");
        let mut book = fresh();
        book.index.remove(&OrderId(1));
        assert!(book.check_invariants().is_err(), "order missing from the index");
        let mut book = fresh();
        book.index.insert(OrderId(3), (Buy, 100));
        assert!(book.check_invariants().is_err(), "indexed order missing from the levels");
        let mut book = fresh();
        book.bids.values_mut().for_each(|level| level[0].leaves_qty = 0);
        assert!(book.check_invariants().is_err(), "zero leaves");
        let mut book = fresh();
        let ask = book.asks.remove(&101).expect("the ask level");
        book.asks.insert(100, ask.into_iter().map(|o| RestingOrder { price: 100, ..o }).collect());
        book.index.insert(OrderId(2), (Sell, 100));
        assert!(book.check_invariants().is_err(), "crossed book");
    }

    // Random command streams: the invariants hold after every command, and the events alone
    // explain the book (every open quantity the events imply rests, and nothing else does).

    fn arbitrary_command() -> impl proptest::strategy::Strategy<Value = CommandBody> {
        use proptest::prelude::*;
        let side = prop_oneof![Just(Buy), Just(Sell)];
        let tif = prop_oneof![
            Just(TimeInForce::Gtc),
            Just(TimeInForce::Day),
            Just(TimeInForce::Ioc),
            Just(TimeInForce::Fok)
        ];
        (0..10u8, 1..40u64, 1..4u32, side, tif, 95..106i64, 1..12u64).prop_map(
            |(op, id, who, side, tif, price, qty)| match op {
                0..=3 => limit(id, who, side, tif, price, qty),
                4 => post_only(id, who, side, price, qty),
                5 => CommandBody::New(NewOrder { tif, ..NewOrder::market(id, who, 0, side, qty) }),
                6 => cancel(id, who),
                7 | 8 => amend(id, who, price, qty),
                _ if qty == 1 => CommandBody::ExpireDay { instrument: InstrumentId(0) },
                _ => CommandBody::MassCancel(MassCancelScope::ParticipantInInstrument(
                    ParticipantId(who),
                    InstrumentId(0),
                )),
            },
        )
    }

    /// Open quantity per order as implied by the events; checks each event against it.
    fn follow(open: &mut HashMap<OrderId, Qty>, new_qty: Option<Qty>, event: &Event) {
        let mut reduce = |id: OrderId, qty: Qty, leaves: Qty| {
            let before = open.remove(&id).expect("a trade names an open order");
            assert_eq!(before - qty, leaves, "leaves of {id} after a trade");
            if leaves > 0 {
                open.insert(id, leaves);
            }
        };
        match *event {
            Event::Accepted { order_id, .. } => {
                assert!(open.insert(order_id, new_qty.expect("only a NEW is accepted")).is_none());
            }
            Event::Trade(t) => {
                reduce(t.buy_order_id, t.qty, t.buy_leaves_qty);
                reduce(t.sell_order_id, t.qty, t.sell_leaves_qty);
            }
            Event::Cancelled { order_id, leaves_qty, .. } | Event::Expired { order_id, leaves_qty, .. } => {
                assert_eq!(open.remove(&order_id), Some(leaves_qty), "leaves of {order_id} when removed");
            }
            Event::Amended { order_id, leaves_qty, .. } => {
                assert!(open.insert(order_id, leaves_qty).is_some(), "amended {order_id} is open");
            }
            Event::Rejected { .. } | Event::Uncrossed { .. } | Event::PhaseChanged { .. } => {}
        }
    }

    proptest::proptest! {
        #[test]
        fn events_explain_the_book(
            stp in 0..4usize,
            commands in proptest::collection::vec(arbitrary_command(), 1..300),
        ) {
            use StpMode::{CancelBoth, CancelIncoming, CancelResting};
            let mut engine = engine_with([StpMode::None, CancelResting, CancelIncoming, CancelBoth][stp]);
            let mut open = HashMap::new();
            for (i, body) in commands.into_iter().enumerate() {
                let new_qty = match body {
                    CommandBody::New(order) => Some(order.qty),
                    _ => None,
                };
                for event in engine.apply_vec(&Command { ts_ns: i as u64, body }) {
                    follow(&mut open, new_qty, &event);
                }
                engine.check_invariants().map_err(proptest::test_runner::TestCaseError::fail)?;
                let book: HashMap<OrderId, Qty> =
                    resting(&engine).into_iter().map(|(_, _, id, leaves)| (OrderId(id), leaves)).collect();
                proptest::prop_assert_eq!(&book, &open, "after command {}", i + 1);
            }
        }
    }
}
