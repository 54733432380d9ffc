//! The fast book: orders in an arena with an intrusive FIFO per price level, levels in a dense
//! ladder per side, an open-addressing id index. Nothing allocates on the hot path once the
//! arena, index and event buffer have grown to their high-water marks.

use super::index::OrderIndex;
use super::ladder::{Ladder, Level, NIL};
use super::slab::{OrderNode, Slab};
use super::{check_restorable, OrderBook, RestingOrder};
use crate::message::{CancelReason, Event, NewOrder, RejectReason, RequestKind, Trade};
use crate::sink::EventSink;
use crate::types::{
    InstrumentId, InstrumentSpec, OrderId, OrderType, ParticipantId, Phase, Price, Qty, Side, StpMode,
    TimeInForce, LADDER_WINDOW_TICKS_MAX,
};

/// An aggressor in matching: a new order or an amended one that lost priority.
struct Incoming {
    id: OrderId,
    participant: ParticipantId,
    side: Side,
    /// The limit as a key of the opposite ladder (`i64::MAX` for a market order): a level
    /// crosses when its key is not above it.
    limit_key: i64,
    leaves: Qty,
}

/// One instrument's fast order book.
pub struct Book {
    instrument: InstrumentId,
    tick: Price,
    stp: StpMode,
    bids: Ladder,
    asks: Ladder,
    orders: Slab,
    index: OrderIndex,
    next_priority: u64,
    /// Largest order id ever entered: a NEW above it cannot be a duplicate, which spares the
    /// index a lookup for the sequencer's increasing ids.
    max_order_id: OrderId,
    /// Continuous (orders match on entry) or call (orders only rest).
    phase: Phase,
}

/// The ladder key of a price on a side: smaller is better on both sides.
#[inline]
fn key_of(side: Side, price: Price, tick: Price) -> i64 {
    let ticks = if tick == 1 { price } else { price / tick };
    match side {
        Side::Buy => -ticks,
        Side::Sell => ticks,
    }
}

#[inline]
fn price_of(side: Side, key: i64, tick: Price) -> Price {
    let ticks = match side {
        Side::Buy => -key,
        Side::Sell => key,
    };
    ticks * tick
}

/// Takes order `i` out of its level's list and totals (the level may become empty).
#[inline]
fn unlink(level: &mut Level, orders: &mut Slab, i: u32) {
    let (prev, next, leaves) = (orders[i].prev, orders[i].next, orders[i].leaves);
    if prev != NIL {
        orders[prev].next = next;
    } else {
        level.head = next;
    }
    if next != NIL {
        orders[next].prev = prev;
    } else {
        level.tail = prev;
    }
    level.count -= 1;
    level.qty -= leaves;
}

impl Book {
    #[inline]
    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The key, in the ladder opposite to `side`, of a limit price (`None` = market).
    #[inline]
    fn limit_key(&self, side: Side, limit: Option<Price>) -> i64 {
        limit.map_or(i64::MAX, |p| key_of(side.opposite(), p, self.tick))
    }

    #[inline]
    fn would_cross(&self, side: Side, limit: Option<Price>) -> bool {
        let limit_key = self.limit_key(side, limit);
        self.ladder(side.opposite()).best().is_some_and(|k| k <= limit_key)
    }

    /// Whether an order could fill `qty` now, under the self-trade prevention mode.
    fn fok_fillable(&self, side: Side, participant: ParticipantId, limit: Option<Price>, qty: Qty) -> bool {
        let limit_key = self.limit_key(side, limit);
        let opp = self.ladder(side.opposite());
        let mut avail: Qty = 0;
        let mut key = opp.best();
        while let Some(k) = key.filter(|k| *k <= limit_key) {
            let Some(level) = opp.get(k) else { break };
            if self.stp == StpMode::None {
                avail = avail.saturating_add(level.qty);
            } else {
                let mut i = level.head;
                while i != NIL {
                    let o = &self.orders[i];
                    if o.participant == participant {
                        if self.stp != StpMode::CancelResting {
                            return avail >= qty;
                        }
                    } else {
                        avail = avail.saturating_add(o.leaves);
                    }
                    i = o.next;
                }
            }
            if avail >= qty {
                return true;
            }
            key = opp.next_after(k);
        }
        false
    }

    /// Matches an aggressor against the opposite side. Returns `true` when self-trade
    /// prevention cancelled the aggressor (its `leaves` is then what was cancelled).
    // Inlined into `submit` and `amend` (the compiler left it out of line once the book became
    // generic over the sink, 2-3% slower), and `cancel` kept out of line for the same reason.
    #[inline(always)]
    fn match_incoming(&mut self, inc: &mut Incoming, ts_ns: u64, out: &mut impl EventSink) -> bool {
        let Book { instrument, tick, stp, bids, asks, orders, index, .. } = self;
        let (opp, opp_side) = match inc.side {
            Side::Buy => (asks, Side::Sell),
            Side::Sell => (bids, Side::Buy),
        };
        while inc.leaves > 0 {
            let Some(key) = opp.best().filter(|k| *k <= inc.limit_key) else { break };
            let price = price_of(opp_side, key, *tick);
            let Some(level) = opp.get_mut(key) else { break };
            let mut stopped = false;
            while inc.leaves > 0 && level.head != NIL {
                let ri = level.head;
                let resting = &mut orders[ri];
                if *stp != StpMode::None && resting.participant == inc.participant {
                    if matches!(*stp, StpMode::CancelResting | StpMode::CancelBoth) {
                        out.push(Event::Cancelled {
                            order_id: resting.id,
                            instrument: *instrument,
                            leaves_qty: resting.leaves,
                            reason: CancelReason::SelfTrade,
                        });
                        index.remove(resting.id, ri);
                        unlink(level, orders, ri);
                        orders.remove(ri);
                    }
                    if matches!(*stp, StpMode::CancelIncoming | StpMode::CancelBoth) {
                        out.push(Event::Cancelled {
                            order_id: inc.id,
                            instrument: *instrument,
                            leaves_qty: inc.leaves,
                            reason: CancelReason::SelfTrade,
                        });
                        stopped = true;
                        break;
                    }
                    continue;
                }
                let qty = inc.leaves.min(resting.leaves);
                resting.leaves -= qty;
                resting.filled += qty;
                inc.leaves -= qty;
                level.qty -= qty;
                let (buy, sell) = match inc.side {
                    Side::Buy => (
                        (inc.id, inc.participant, inc.leaves),
                        (resting.id, resting.participant, resting.leaves),
                    ),
                    Side::Sell => (
                        (resting.id, resting.participant, resting.leaves),
                        (inc.id, inc.participant, inc.leaves),
                    ),
                };
                out.push(Event::Trade(Trade {
                    instrument: *instrument,
                    price,
                    qty,
                    buy_order_id: buy.0,
                    sell_order_id: sell.0,
                    buyer: buy.1,
                    seller: sell.1,
                    aggressor: inc.side.into(),
                    buy_leaves_qty: buy.2,
                    sell_leaves_qty: sell.2,
                    ts_ns,
                }));
                if resting.leaves == 0 {
                    index.remove(resting.id, ri);
                    unlink(level, orders, ri);
                    orders.remove(ri);
                }
            }
            if level.count == 0 {
                opp.remove(key);
            }
            if stopped {
                return true;
            }
        }
        false
    }

    /// Links arena node `i` at the back of its price level with a fresh time priority.
    #[inline]
    fn link_back(&mut self, i: u32) {
        let (side, price, leaves) = (self.orders[i].side, self.orders[i].price, self.orders[i].leaves);
        let key = key_of(side, price, self.tick);
        let priority = self.next_priority;
        self.next_priority += 1;
        let Book { bids, asks, orders, .. } = self;
        let level = match side {
            Side::Buy => bids.get_or_insert(key),
            Side::Sell => asks.get_or_insert(key),
        };
        let tail = level.tail;
        if tail != NIL {
            orders[tail].next = i;
        } else {
            level.head = i;
        }
        level.tail = i;
        level.count += 1;
        level.qty += leaves;
        let node = &mut orders[i];
        node.prev = tail;
        node.next = NIL;
        node.priority = priority;
    }

    /// Takes resting order `i` out of its level (dropping the level when empty); the node stays
    /// in the arena and the index.
    #[inline]
    fn detach(&mut self, i: u32) {
        let (side, price) = (self.orders[i].side, self.orders[i].price);
        let key = key_of(side, price, self.tick);
        let Book { bids, asks, orders, .. } = self;
        let ladder = match side {
            Side::Buy => bids,
            Side::Sell => asks,
        };
        if let Some(level) = ladder.get_mut(key) {
            unlink(level, orders, i);
            if level.count == 0 {
                ladder.remove(key);
            }
        }
    }

    /// Removes resting order `i` from the book entirely.
    #[inline]
    fn remove_resting(&mut self, i: u32) {
        self.detach(i);
        self.index.remove(self.orders[i].id, i);
        self.orders.remove(i);
    }

    /// Removes every order of `side` that `pick` selects, in priority order, pushing the event
    /// `make` builds for each.
    fn remove_where(
        &mut self,
        side: Side,
        pick: impl Fn(&OrderNode) -> bool,
        make: impl Fn(&OrderNode) -> Event,
        out: &mut impl EventSink,
    ) {
        let mut key = self.ladder(side).best();
        while let Some(k) = key {
            key = self.ladder(side).next_after(k);
            let mut i = self.ladder(side).get(k).map_or(NIL, |l| l.head);
            while i != NIL {
                let next = self.orders[i].next;
                if pick(&self.orders[i]) {
                    out.push(make(&self.orders[i]));
                    self.remove_resting(i);
                }
                i = next;
            }
        }
    }

    fn view(&self, i: u32) -> RestingOrder {
        let o = &self.orders[i];
        RestingOrder {
            order_id: o.id,
            participant: o.participant,
            side: o.side,
            price: o.price,
            leaves_qty: o.leaves,
            filled_qty: o.filled,
            tif: o.tif,
            post_only: o.post_only,
        }
    }

    fn reject(&self, request: RequestKind, order_id: OrderId, reason: RejectReason) -> Event {
        Event::Rejected { request, order_id, instrument: self.instrument, reason }
    }

    /// Checks one side: links, totals, prices, FIFO priority; returns the number of orders.
    fn check_side(&self, side: Side) -> Result<usize, String> {
        let ladder = self.ladder(side);
        ladder.check_invariants().map_err(|e| format!("{side:?} ladder: {e}"))?;
        let mut total = 0;
        let mut err = None;
        ladder.for_each_key(|k| {
            if err.is_none() {
                match self.check_level(side, k) {
                    Ok(n) => total += n,
                    Err(e) => err = Some(e),
                }
            }
        });
        err.map_or(Ok(total), Err)
    }

    fn check_level(&self, side: Side, key: i64) -> Result<usize, String> {
        let price = price_of(side, key, self.tick);
        let level = self.ladder(side).get(key).ok_or(format!("level {price} missing"))?;
        let (mut i, mut prev, mut n, mut qty, mut last_priority) = (level.head, NIL, 0u32, 0, None);
        while i != NIL {
            let o = &self.orders[i];
            if o.side != side || o.price != price {
                return Err(format!("order {} ({:?} {}) in level {side:?} {price}", o.id, o.side, o.price));
            }
            if o.prev != prev {
                return Err(format!("order {}: broken back link", o.id));
            }
            if o.leaves == 0 {
                return Err(format!("order {} rests with nothing open", o.id));
            }
            if last_priority.is_some_and(|p| p >= o.priority) {
                return Err(format!("level {side:?} {price}: order {} breaks FIFO", o.id));
            }
            if self.index.get(o.id, &self.orders) != Some(i) {
                return Err(format!("order {} not indexed", o.id));
            }
            last_priority = Some(o.priority);
            (prev, i, n, qty) = (i, o.next, n + 1, qty + o.leaves);
        }
        if prev != level.tail || n != level.count || qty != level.qty || n == 0 {
            return Err(format!("level {side:?} {price}: totals or tail disagree with its orders"));
        }
        Ok(n as usize)
    }
}

impl OrderBook for Book {
    fn new(instrument: InstrumentId, spec: &InstrumentSpec) -> Self {
        let tick = spec.tick_size;
        // A price band that fits gets a fixed window covering exactly the band.
        let band = match (spec.price_floor, spec.price_ceiling) {
            (Some(lo), Some(hi)) => hi
                .checked_sub(lo)
                .map(|d| d / tick)
                .filter(|w| *w < i64::from(LADDER_WINDOW_TICKS_MAX))
                .map(|w| (lo, w as u32 + 1)),
            _ => None,
        };
        let (bids, asks) = match band {
            Some((lo, width)) => {
                let hi = lo + (width as i64 - 1) * tick;
                (
                    Ladder::new(width, Some(key_of(Side::Buy, hi, tick))),
                    Ladder::new(width, Some(key_of(Side::Sell, lo, tick))),
                )
            }
            None => {
                (Ladder::new(spec.ladder_window_ticks, None), Ladder::new(spec.ladder_window_ticks, None))
            }
        };
        let resting_max = spec.resting_orders_max as usize;
        Book {
            instrument,
            tick,
            stp: spec.stp,
            bids,
            asks,
            orders: Slab::with_capacity(resting_max),
            index: OrderIndex::with_max(resting_max),
            next_priority: 0,
            max_order_id: OrderId(0),
            phase: spec.initial_phase,
        }
    }

    #[inline]
    fn submit(&mut self, o: &NewOrder, ts_ns: u64, out: &mut impl EventSink) {
        if o.order_id > self.max_order_id {
            self.max_order_id = o.order_id;
        } else if self.index.get(o.order_id, &self.orders).is_some() {
            out.push(self.reject(RequestKind::New, o.order_id, RejectReason::DuplicateOrderId));
            return;
        }
        let limit = (o.order_type == OrderType::Limit).then_some(o.price);
        let call = !self.phase.matches();
        if o.post_only && !call && self.would_cross(o.side, limit) {
            out.push(self.reject(RequestKind::New, o.order_id, RejectReason::PostOnlyWouldCross));
            return;
        }
        if o.tif == TimeInForce::Fok && !self.fok_fillable(o.side, o.participant, limit, o.qty) {
            out.push(self.reject(RequestKind::New, o.order_id, RejectReason::FokNotFillable));
            return;
        }
        out.push(Event::Accepted { order_id: o.order_id, instrument: self.instrument });
        let limit_key = self.limit_key(o.side, limit);
        let mut inc =
            Incoming { id: o.order_id, participant: o.participant, side: o.side, limit_key, leaves: o.qty };
        // In the call phase nothing matches: the order only rests.
        if !call && (self.match_incoming(&mut inc, ts_ns, out) || inc.leaves == 0) {
            return;
        }
        let rests = limit.is_some() && o.tif.rests();
        if rests && !self.index.is_full() {
            let i = self.orders.insert(OrderNode {
                id: o.order_id,
                leaves: inc.leaves,
                filled: o.qty - inc.leaves,
                price: o.price,
                priority: 0,
                prev: NIL,
                next: NIL,
                participant: o.participant,
                side: o.side,
                tif: o.tif,
                post_only: o.post_only,
            });
            self.index.insert(o.order_id, i);
            self.link_back(i);
        } else {
            out.push(Event::Cancelled {
                order_id: o.order_id,
                instrument: self.instrument,
                leaves_qty: inc.leaves,
                reason: if rests { CancelReason::BookFull } else { CancelReason::ImmediateOrCancel },
            });
        }
    }

    // Out of line: see `match_incoming`.
    #[inline(never)]
    fn cancel(&mut self, order_id: OrderId, participant: ParticipantId, out: &mut impl EventSink) {
        let Some(i) = self.index.get(order_id, &self.orders) else {
            out.push(self.reject(RequestKind::Cancel, order_id, RejectReason::UnknownOrder));
            return;
        };
        if self.orders[i].participant != participant {
            out.push(self.reject(RequestKind::Cancel, order_id, RejectReason::NotOwner));
            return;
        }
        out.push(Event::Cancelled {
            order_id,
            instrument: self.instrument,
            leaves_qty: self.orders[i].leaves,
            reason: CancelReason::Requested,
        });
        self.remove_resting(i);
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
        let Some(i) = self.index.get(order_id, &self.orders) else {
            out.push(self.reject(RequestKind::Amend, order_id, RejectReason::UnknownOrder));
            return;
        };
        let node = self.orders[i];
        if node.participant != participant {
            out.push(self.reject(RequestKind::Amend, order_id, RejectReason::NotOwner));
            return;
        }
        let instrument = self.instrument;
        if price == node.price && qty <= node.leaves {
            let key = key_of(node.side, price, self.tick);
            if let Some(level) = self.ladder_mut(node.side).get_mut(key) {
                level.qty -= node.leaves - qty;
            }
            self.orders[i].leaves = qty;
            out.push(Event::Amended { order_id, instrument, price, leaves_qty: qty, priority_kept: true });
            return;
        }
        let call = !self.phase.matches();
        if node.post_only && !call && self.would_cross(node.side, Some(price)) {
            out.push(self.reject(RequestKind::Amend, order_id, RejectReason::PostOnlyWouldCross));
            return;
        }
        self.detach(i);
        out.push(Event::Amended { order_id, instrument, price, leaves_qty: qty, priority_kept: false });
        let limit_key = self.limit_key(node.side, Some(price));
        let mut inc = Incoming { id: order_id, participant, side: node.side, limit_key, leaves: qty };
        let stopped = !call && self.match_incoming(&mut inc, ts_ns, out);
        let o = &mut self.orders[i];
        o.filled += qty - inc.leaves;
        if stopped || inc.leaves == 0 {
            self.index.remove(order_id, i);
            self.orders.remove(i);
        } else {
            o.price = price;
            o.leaves = inc.leaves;
            self.link_back(i);
        }
    }

    fn mass_cancel(&mut self, participant: Option<ParticipantId>, out: &mut impl EventSink) {
        let instrument = self.instrument;
        let pick = |o: &OrderNode| participant.is_none_or(|p| p == o.participant);
        let make = |o: &OrderNode| Event::Cancelled {
            order_id: o.id,
            instrument,
            leaves_qty: o.leaves,
            reason: CancelReason::MassCancel,
        };
        self.remove_where(Side::Buy, pick, make, out);
        self.remove_where(Side::Sell, pick, make, out);
    }

    fn expire_day(&mut self, out: &mut impl EventSink) {
        let instrument = self.instrument;
        let pick = |o: &OrderNode| o.tif == TimeInForce::Day;
        let make = |o: &OrderNode| Event::Expired { order_id: o.id, instrument, leaves_qty: o.leaves };
        self.remove_where(Side::Buy, pick, make, out);
        self.remove_where(Side::Sell, pick, make, out);
    }

    #[inline]
    fn best_price(&self, side: Side) -> Option<Price> {
        self.ladder(side).best().map(|k| price_of(side, k, self.tick))
    }

    fn for_each_level(&self, side: Side, f: &mut dyn FnMut(Price, Qty)) {
        let ladder = self.ladder(side);
        ladder.for_each_key(|k| {
            if let Some(level) = ladder.get(k) {
                f(price_of(side, k, self.tick), level.qty);
            }
        });
    }

    fn for_each_order_while(&self, side: Side, f: &mut dyn FnMut(&RestingOrder) -> bool) {
        let mut key = self.ladder(side).best();
        while let Some(k) = key {
            let mut i = self.ladder(side).get(k).map_or(NIL, |l| l.head);
            while i != NIL {
                if !f(&self.view(i)) {
                    return;
                }
                i = self.orders[i].next;
            }
            key = self.ladder(side).next_after(k);
        }
    }

    fn order(&self, order_id: OrderId) -> Option<RestingOrder> {
        self.index.get(order_id, &self.orders).map(|i| self.view(i))
    }

    fn order_count(&self) -> usize {
        self.index.len()
    }

    fn restore(&mut self, order: &RestingOrder) -> Result<(), String> {
        check_restorable(self, order, self.index.is_full())?;
        let id = order.order_id;
        if order.price % self.tick != 0 {
            return Err(format!(
                "order {id}: price {} is not a multiple of the tick {}",
                order.price, self.tick
            ));
        }
        let key = key_of(order.side, order.price, self.tick);
        let level_qty = self.ladder(order.side).get(key).map_or(0, |l| l.qty);
        if level_qty.checked_add(order.leaves_qty).is_none() {
            return Err(format!("order {id}: the open quantity at {} overflows", order.price));
        }
        let i = self.orders.insert(OrderNode {
            id,
            leaves: order.leaves_qty,
            filled: order.filled_qty,
            price: order.price,
            priority: 0,
            prev: NIL,
            next: NIL,
            participant: order.participant,
            side: order.side,
            tif: order.tif,
            post_only: order.post_only,
        });
        self.index.insert(id, i);
        self.link_back(i);
        // Ids above the largest entered skip the duplicate lookup in `submit`.
        self.max_order_id = self.max_order_id.max(id);
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), String> {
        self.index.check_invariants(&self.orders)?;
        let n = self.check_side(Side::Buy)? + self.check_side(Side::Sell)?;
        if n != self.index.len() || n != self.orders.len() {
            return Err(format!(
                "{n} orders in levels, {} indexed, {} in arena",
                self.index.len(),
                self.orders.len()
            ));
        }
        if let (Some(bid), Some(ask)) = (self.best_price(Side::Buy), self.best_price(Side::Sell)) {
            if bid >= ask && self.phase.matches() {
                return Err(format!("book crossed: bid {bid} >= ask {ask}"));
            }
        }
        Ok(())
    }

    fn fill_in_priority(&mut self, side: Side, fills: &[Qty]) {
        let (mut n, mut key) = (0, self.ladder(side).best());
        while let Some(k) = key.filter(|_| n < fills.len()) {
            key = self.ladder(side).next_after(k);
            let mut i = self.ladder(side).get(k).map_or(NIL, |l| l.head);
            while i != NIL && n < fills.len() {
                let (next, leaves) = (self.orders[i].next, self.orders[i].leaves);
                debug_assert!(fills[n] <= leaves, "a fill above the open quantity");
                let qty = fills[n].min(leaves);
                n += 1;
                if qty > 0 {
                    if let Some(level) = self.ladder_mut(side).get_mut(k) {
                        level.qty -= qty;
                    }
                    let o = &mut self.orders[i];
                    o.leaves -= qty;
                    o.filled += qty;
                    if o.leaves == 0 {
                        self.remove_resting(i);
                    }
                }
                i = next;
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
