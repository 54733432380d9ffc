//! A whole certificate-market session, step by step: closed, the bid window, the window closed,
//! the uncross, results published, then continuous trading and closed again. Each step is a
//! command and the exact events it must give, for both books.

use cccx_engine::{
    Aggressor, Book, Command, CommandBody, Engine, Event, InstrumentId, InstrumentSpec, NewOrder, OrderBook,
    OrderId, ParticipantId, Phase, ReferenceBook, RejectReason, RequestKind, Side, TimeInForce, Trade,
};

const CCC: InstrumentId = InstrumentId(0);

fn limit(id: u64, participant: u32, side: Side, price: i64, qty: u64) -> CommandBody {
    CommandBody::New(NewOrder::limit(id, participant, 0, side, TimeInForce::Day, price, qty))
}

fn set(phase: Phase) -> CommandBody {
    CommandBody::SetPhase { instrument: CCC, phase }
}

fn rejected(request: RequestKind, id: u64, reason: RejectReason) -> Vec<Event> {
    vec![Event::Rejected { request, order_id: OrderId(id), instrument: CCC, reason }]
}

fn accepted(id: u64) -> Vec<Event> {
    vec![Event::Accepted { order_id: OrderId(id), instrument: CCC }]
}

fn changed(phase: Phase) -> Vec<Event> {
    vec![Event::PhaseChanged { instrument: CCC, phase }]
}

#[allow(clippy::too_many_arguments)]
fn trade(
    aggressor: Aggressor,
    price: i64,
    qty: u64,
    buy: (u64, u32, u64),
    sell: (u64, u32, u64),
    ts: u64,
) -> Event {
    Event::Trade(Trade {
        instrument: CCC,
        price,
        qty,
        buy_order_id: OrderId(buy.0),
        sell_order_id: OrderId(sell.0),
        buyer: ParticipantId(buy.1),
        seller: ParticipantId(sell.1),
        aggressor,
        buy_leaves_qty: buy.2,
        sell_leaves_qty: sell.2,
        ts_ns: ts,
    })
}

fn steps() -> Vec<(CommandBody, Vec<Event>)> {
    use RejectReason::*;
    use RequestKind as R;
    vec![
        // Closed: nothing is accepted.
        (limit(1, 1, Side::Buy, 105, 100), rejected(R::New, 1, OutsideTradingWindow)),
        (set(Phase::CallClosed), rejected(R::SetPhase, 0, InvalidPhaseTransition)),
        // The bid window opens: orders rest, even crossing ones; only resting limits.
        (set(Phase::Call), changed(Phase::Call)),
        (limit(1, 1, Side::Buy, 105, 100), accepted(1)),
        (limit(2, 2, Side::Sell, 100, 60), accepted(2)),
        (limit(3, 3, Side::Sell, 104, 50), accepted(3)),
        (
            CommandBody::New(NewOrder {
                tif: TimeInForce::Ioc,
                ..NewOrder::limit(4, 4, 0, Side::Buy, TimeInForce::Gtc, 110, 5)
            }),
            rejected(R::New, 4, NotAllowedInPhase),
        ),
        (
            CommandBody::Amend {
                instrument: CCC,
                order_id: OrderId(2),
                participant: ParticipantId(2),
                price: 100,
                qty: 40,
            },
            vec![Event::Amended {
                order_id: OrderId(2),
                instrument: CCC,
                price: 100,
                leaves_qty: 40,
                priority_kept: true,
            }],
        ),
        (set(Phase::Uncrossed), rejected(R::SetPhase, 0, InvalidPhaseTransition)),
        // The window closes (the registry checks holdings now): no more changes.
        (set(Phase::CallClosed), changed(Phase::CallClosed)),
        (limit(5, 5, Side::Sell, 90, 10), rejected(R::New, 5, OutsideTradingWindow)),
        (
            CommandBody::Cancel { instrument: CCC, order_id: OrderId(3), participant: ParticipantId(3) },
            rejected(R::Cancel, 3, OutsideTradingWindow),
        ),
        // The uncross: demand 100 at 105; supply 40 up to 103, 90 from 104. Volume 90 with a
        // surplus of 10 at 104 and 105: the midpoint, floor(104.5) = 104.
        (
            CommandBody::Uncross { instrument: CCC },
            vec![
                Event::Uncrossed { instrument: CCC, price: Some(104), volume: 90 },
                trade(Aggressor::Auction, 104, 40, (1, 1, 60), (2, 2, 0), 13),
                trade(Aggressor::Auction, 104, 50, (1, 1, 10), (3, 3, 0), 13),
                Event::PhaseChanged { instrument: CCC, phase: Phase::Uncrossed },
            ],
        ),
        (limit(6, 6, Side::Sell, 105, 10), rejected(R::New, 6, OutsideTradingWindow)),
        (CommandBody::Uncross { instrument: CCC }, rejected(R::Uncross, 0, NotAllowedInPhase)),
        // Continuous trading after the auction: the remaining bid trades on entry.
        (set(Phase::Continuous), changed(Phase::Continuous)),
        (
            limit(6, 6, Side::Sell, 105, 10),
            vec![
                Event::Accepted { order_id: OrderId(6), instrument: CCC },
                trade(Aggressor::Sell, 105, 10, (1, 1, 0), (6, 6, 0), 17),
            ],
        ),
        (set(Phase::Closed), changed(Phase::Closed)),
    ]
}

fn run<B: OrderBook>() {
    let spec =
        InstrumentSpec { initial_phase: Phase::Closed, ..InstrumentSpec::canonical("CCC-2026-COMPLIANCE") };
    let mut engine = Engine::<B>::new(vec![spec]).unwrap();
    for (i, (body, expected)) in steps().into_iter().enumerate() {
        if matches!(body, CommandBody::Uncross { .. }) && i == 12 {
            // What the operator plots before the uncross: demand at or above, supply at or below.
            let curves: Vec<_> =
                engine.auction_curves(CCC).unwrap().iter().map(|p| (p.price, p.demand, p.supply)).collect();
            assert_eq!(curves, vec![(100, 100, 40), (104, 100, 90), (105, 100, 90)]);
        }
        let cmd = Command { ts_ns: i as u64 + 1, body };
        assert_eq!(engine.apply_vec(&cmd), expected, "step {} ({cmd:?})", i + 1);
        engine.check_invariants().unwrap();
    }
    let totals = engine.totals(CCC).unwrap();
    assert_eq!((totals.trades, totals.volume, totals.last_price), (3, 100, Some(105)));
    assert_eq!(engine.book(CCC).unwrap().order_count(), 0);
}

#[test]
fn a_monthly_session_fast_book() {
    run::<Book>();
}

#[test]
fn a_monthly_session_reference_book() {
    run::<ReferenceBook>();
}
