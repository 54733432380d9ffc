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
    Event::Amended { order_id: OrderId(id), instrument: InstrumentId(0), price, leaves_qty, priority_kept }
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
            (amend(5, A, 103, 6), vec![amended(5, 103, 6, false), trade(Buy, 102, 1, (5, A, 5), (3, C, 0))]),
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
        Event::Rejected { .. }
        | Event::Uncrossed { .. }
        | Event::PhaseChanged { .. }
        | Event::FundsAdjusted { .. }
        | Event::HoldingsAdjusted { .. }
        | Event::SellTotal { .. }
        | Event::Defaulted { .. }
        | Event::Suspended { .. } => {}
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
