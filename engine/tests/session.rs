//! A whole certificate-market session, step by step: closed, the bid window, the window closed,
//! the uncross, results published, then continuous trading and closed again. Each step is a
//! command and the exact events it must give, for both books.

use cccx_engine::{
    Aggressor, Book, Command, CommandBody, Engine, Event, InstrumentId, InstrumentSpec, MassCancelScope,
    NewOrder, OrderBook, OrderId, ParticipantId, Phase, ReferenceBook, RejectReason, RequestKind, Side,
    TimeInForce, Trade,
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
        // The window closes: the export for the registry's holdings check, per seller.
        (
            set(Phase::CallClosed),
            vec![
                Event::PhaseChanged { instrument: CCC, phase: Phase::CallClosed },
                Event::SellTotal { instrument: CCC, participant: ParticipantId(2), qty: 40 },
                Event::SellTotal { instrument: CCC, participant: ParticipantId(3), qty: 50 },
            ],
        ),
        (limit(5, 5, Side::Sell, 90, 10), rejected(R::New, 5, OutsideTradingWindow)),
        (
            CommandBody::Cancel { instrument: CCC, order_id: OrderId(3), participant: ParticipantId(3) },
            rejected(R::Cancel, 3, OutsideTradingWindow),
        ),
        // Nor by mass cancel: a seller cannot withdraw its offers from the holdings check.
        (
            CommandBody::MassCancel(MassCancelScope::ParticipantInInstrument(ParticipantId(3), CCC)),
            rejected(R::MassCancel, 0, OutsideTradingWindow),
        ),
        (CommandBody::MassCancel(MassCancelScope::Participant(ParticipantId(3))), vec![]),
        // The uncross: demand 100 at 105; supply 40 up to 103, 90 from 104. Volume 90 with a
        // surplus of 10 at 104 and 105: the midpoint, floor(104.5) = 104.
        (
            CommandBody::Uncross { instrument: CCC },
            vec![
                Event::Uncrossed { instrument: CCC, price: Some(104), volume: 90 },
                trade(Aggressor::Auction, 104, 40, (1, 1, 60), (2, 2, 0), 15),
                trade(Aggressor::Auction, 104, 50, (1, 1, 10), (3, 3, 0), 15),
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
                trade(Aggressor::Sell, 105, 10, (1, 1, 0), (6, 6, 0), 19),
            ],
        ),
        (set(Phase::Closed), changed(Phase::Closed)),
    ]
}

fn run<B: OrderBook>() {
    let spec =
        InstrumentSpec { initial_phase: Phase::Closed, ..InstrumentSpec::canonical("CCC-2026-COMPLIANCE") };
    let mut engine = Engine::<B>::new(vec![spec]).unwrap();
    let mut trades = Vec::new();
    for (i, (body, expected)) in steps().into_iter().enumerate() {
        if matches!(body, CommandBody::Uncross { .. }) && i == 14 {
            // What the operator plots before the uncross: demand at or above, supply at or below.
            let curves: Vec<_> =
                engine.auction_curves(CCC).unwrap().iter().map(|p| (p.price, p.demand, p.supply)).collect();
            assert_eq!(curves, vec![(100, 100, 40), (104, 100, 90), (105, 100, 90)]);
        }
        let cmd = Command { ts_ns: i as u64 + 1, body };
        let events = engine.apply_vec(&cmd);
        assert_eq!(events, expected, "step {} ({cmd:?})", i + 1);
        if matches!(cmd.body, CommandBody::Uncross { .. }) {
            trades
                .extend(events.iter().filter_map(|e| if let Event::Trade(t) = e { Some(*t) } else { None }));
        }
        engine.check_invariants().unwrap();
    }
    let totals = engine.totals(CCC).unwrap();
    let results = cccx_engine::auction::participant_results(&trades);
    let r = |p, bought, sold, bv, sv| cccx_engine::auction::ParticipantResult {
        participant: ParticipantId(p),
        bought,
        sold,
        bought_value: bv,
        sold_value: sv,
    };
    assert_eq!(results, vec![r(1, 90, 0, 9360, 0), r(2, 0, 40, 0, 4160), r(3, 0, 50, 0, 5200)]);
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

/// Regressions from the review of the auction (each once a confirmed bug).
mod review {
    use super::*;
    use cccx_engine::{EngineImage, ORDER_QTY_MAX};

    fn call_engine<B: OrderBook>() -> Engine<B> {
        let spec = InstrumentSpec { initial_phase: Phase::Call, ..InstrumentSpec::canonical("CCC0") };
        Engine::<B>::new(vec![spec]).unwrap()
    }

    fn apply_all<B: OrderBook>(engine: &mut Engine<B>, bodies: Vec<CommandBody>) -> Vec<Event> {
        let mut events = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            events.extend(engine.apply_vec(&Command { ts_ns: i as u64 + 1, body }));
            engine.check_invariants().unwrap();
        }
        events
    }

    fn both(bodies: Vec<CommandBody>) -> Vec<Event> {
        let fast = apply_all(&mut call_engine::<Book>(), bodies.clone());
        let naive = apply_all(&mut call_engine::<ReferenceBook>(), bodies);
        assert_eq!(fast, naive);
        fast
    }

    #[test]
    fn largest_quantities_uncross_without_overflow() {
        let mut bodies = vec![limit(1, 1, Side::Buy, 100, 10)];
        for id in 2..20 {
            bodies.push(limit(id, 1, Side::Buy, 99, ORDER_QTY_MAX));
            bodies.push(limit(100 + id, 2, Side::Sell, 90, ORDER_QTY_MAX));
        }
        bodies.push(limit(999, 3, Side::Sell, 95, ORDER_QTY_MAX + 1));
        bodies.push(CommandBody::Uncross { instrument: CCC });
        let events = both(bodies);
        assert!(events.contains(&Event::Rejected {
            request: RequestKind::New,
            order_id: OrderId(999),
            instrument: CCC,
            reason: RejectReason::QuantityAboveMax
        }));
        let uncrossed = events.iter().find_map(|e| match e {
            Event::Uncrossed { volume, .. } => Some(*volume),
            _ => None,
        });
        assert_eq!(uncrossed, Some(18 * ORDER_QTY_MAX));
        let traded: u64 =
            events.iter().filter_map(|e| if let Event::Trade(t) = e { Some(t.qty) } else { None }).sum();
        assert_eq!(traded, 18 * ORDER_QTY_MAX);
    }

    #[test]
    fn the_midpoint_of_the_largest_prices_does_not_overflow() {
        let events = both(vec![
            limit(1, 1, Side::Buy, i64::MAX, 1),
            limit(2, 2, Side::Sell, i64::MAX - 1, 1),
            CommandBody::Uncross { instrument: CCC },
        ]);
        assert!(events.contains(&Event::Uncrossed { instrument: CCC, price: Some(i64::MAX - 1), volume: 1 }));
        assert_eq!(events.iter().filter(|e| matches!(e, Event::Trade(_))).count(), 1);
    }

    #[test]
    fn a_crossed_image_restores_only_in_the_call() {
        let mut engine = call_engine::<Book>();
        apply_all(&mut engine, vec![limit(1, 1, Side::Buy, 105, 5), limit(2, 2, Side::Sell, 100, 5)]);
        let image = engine.image();
        assert!(Engine::<Book>::from_image(image.clone()).is_ok());
        for phase in [Phase::Closed, Phase::Uncrossed, Phase::Continuous] {
            let mut crossed: EngineImage = image.clone();
            crossed.instruments[0].phase = phase;
            assert!(Engine::<Book>::from_image(crossed.clone()).is_err(), "{phase:?}");
            assert!(Engine::<ReferenceBook>::from_image(crossed).is_err(), "{phase:?}");
        }
    }
}
