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
use crate::sink::EventSink;
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
        out: &mut impl EventSink,
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
        out: &mut impl EventSink,
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
    fn fill_front(&mut self, aggressor: &mut RestingOrder, ts_ns: u64, out: &mut impl EventSink) {
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
    fn finish(&mut self, order: RestingOrder, end: MatchEnd, rests: bool, out: &mut impl EventSink) {
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

    fn submit(&mut self, order: &NewOrder, ts_ns: u64, out: &mut impl EventSink) {
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

    fn cancel(&mut self, order_id: OrderId, participant: ParticipantId, out: &mut impl EventSink) {
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
        out: &mut impl EventSink,
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

    fn mass_cancel(&mut self, participant: Option<ParticipantId>, out: &mut impl EventSink) {
        for order in self.remove_all(|o| participant.is_none_or(|p| o.participant == p)) {
            out.push(self.cancelled(order.order_id, order.leaves_qty, CancelReason::MassCancel));
        }
    }

    fn expire_day(&mut self, out: &mut impl EventSink) {
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
mod tests;
