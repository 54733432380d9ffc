//! Property tests: the fast book and the naive reference book, driven by the same random command
//! streams, must emit identical events and hold identical books; and the events must obey the
//! market's invariants.

use std::collections::{HashMap, HashSet};

use cccx_engine::snapshot::state_hash;
use cccx_engine::{
    Aggressor, AuctionAllocation, AuctionPriceRule, Book, Command, CommandBody, Discard, Engine, Event,
    InstrumentId, InstrumentSpec, MassCancelScope, NewOrder, OrderBook, OrderId, OrderType, ParticipantId,
    Phase, Price, Qty, ReferenceBook, RestingOrder, Side, StpMode, TimeInForce,
};
use proptest::prelude::*;

/// An abstract operation; ids are resolved against the orders entered so far.
#[derive(Clone, Debug)]
enum Op {
    New { inst: u8, side: Side, kind: u8, price_off: i64, qty: Qty, participant: u32, post_only: bool },
    Duplicate { pick: usize },
    Cancel { pick: usize, wrong_owner: bool },
    Amend { pick: usize, price_off: i64, qty: Qty },
    MassCancel { scope: u8, participant: u32, inst: u8 },
    ExpireDay { inst: u8 },
    Uncross { inst: u8 },
    SetPhase { inst: u8, phase: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    prop_oneof![
        60 => (0..2u8, side, 0..10u8, -12..12i64, 0..25u64, 0..4u32, prop::bool::weighted(0.1)).prop_map(
            |(inst, side, kind, price_off, qty, participant, post_only)| Op::New {
                inst, side, kind, price_off, qty, participant, post_only
            }
        ),
        2 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
        18 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(pick, wrong_owner)| Op::Cancel { pick, wrong_owner }),
        16 => (any::<usize>(), -6..6i64, 0..25u64).prop_map(|(pick, price_off, qty)| Op::Amend { pick, price_off, qty }),
        2 => (0..3u8, 0..4u32, 0..3u8).prop_map(|(scope, participant, inst)| Op::MassCancel { scope, participant, inst }),
        2 => (0..3u8).prop_map(|inst| Op::ExpireDay { inst }),
        3 => (0..3u8).prop_map(|inst| Op::Uncross { inst }),
        3 => (0..3u8, 0..5u8).prop_map(|(inst, phase)| Op::SetPhase { inst, phase }),
    ]
}

fn spec() -> impl Strategy<Value = InstrumentSpec> {
    let stp = prop_oneof![
        Just(StpMode::None),
        Just(StpMode::CancelResting),
        Just(StpMode::CancelIncoming),
        Just(StpMode::CancelBoth)
    ];
    // Tiny ladder windows push prices into the overflow map and make windows re-centre.
    let window = prop_oneof![Just(1u32), Just(4), Just(16), Just(64), Just(1 << 15)];
    let band = prop_oneof![Just(None), Just(Some((94, 106)))];
    let phase = prop_oneof![3 => Just(Phase::Continuous), 1 => Just(Phase::Call), 1 => Just(Phase::Closed)];
    let rules = (any::<bool>(), 0..3usize);
    (stp, window, 1..3i64, 1..3u64, band, phase, rules).prop_map(
        |(stp, window, tick, lot, band, phase, rules)| InstrumentSpec {
            initial_phase: phase,
            auction_allocation: if rules.0 {
                AuctionAllocation::ProRata
            } else {
                AuctionAllocation::TimePriority
            },
            auction_price_rule: [
                AuctionPriceRule::Midpoint,
                AuctionPriceRule::Lowest,
                AuctionPriceRule::Highest,
            ][rules.1],
            tick_size: tick,
            lot_size: lot,
            price_floor: band.map(|b: (i64, i64)| b.0 * tick),
            price_ceiling: band.map(|b| b.1 * tick),
            max_order_qty: 20,
            resting_orders_max: 40,
            stp,
            ladder_window_ticks: window,
            ..InstrumentSpec::canonical("X")
        },
    )
}

/// What the test knows of an order from the commands and events.
#[derive(Clone, Debug)]
struct Known {
    instrument: InstrumentId,
    participant: ParticipantId,
    side: Side,
    price: Price,
    /// Filled plus open: the original quantity, as amendments re-define it.
    original: Qty,
    traded: Qty,
}

struct Harness {
    fast: Engine<Book>,
    naive: Engine<ReferenceBook>,
    /// The fast engine applying into [`Discard`], as replay does: it must reach the same state.
    quiet: Engine<Book>,
    specs: Vec<InstrumentSpec>,
    known: HashMap<OrderId, Known>,
    entered: Vec<OrderId>,
    dead: HashSet<OrderId>,
    next_id: u64,
    ts: u64,
}

impl Harness {
    fn new(specs: Vec<InstrumentSpec>) -> Self {
        Harness {
            fast: Engine::new(specs.clone()).unwrap(),
            naive: Engine::new(specs.clone()).unwrap(),
            quiet: Engine::new(specs.clone()).unwrap(),
            specs,
            known: HashMap::new(),
            entered: Vec::new(),
            dead: HashSet::new(),
            next_id: 1,
            ts: 0,
        }
    }

    fn pick(&self, pick: usize) -> Option<(OrderId, Known)> {
        if self.entered.is_empty() {
            return None;
        }
        let id = self.entered[pick % self.entered.len()];
        self.known.get(&id).map(|k| (id, k.clone()))
    }

    fn command(&mut self, op: &Op) -> Option<CommandBody> {
        Some(match *op {
            Op::New { inst, side, kind, price_off, qty, participant, post_only } => {
                let tick = self.specs[inst as usize].tick_size;
                let (order_type, tif) = match kind {
                    0..=3 => (OrderType::Limit, TimeInForce::Gtc),
                    4 => (OrderType::Limit, TimeInForce::Day),
                    5 | 6 => (OrderType::Limit, TimeInForce::Ioc),
                    7 => (OrderType::Limit, TimeInForce::Fok),
                    8 => (OrderType::Market, TimeInForce::Ioc),
                    _ => (OrderType::Market, TimeInForce::Fok),
                };
                // Now and then a price off the tick grid.
                let price = (100 + price_off) * tick + i64::from(price_off == 11);
                let id = OrderId(self.next_id);
                self.next_id += 1;
                let order = NewOrder {
                    order_id: id,
                    participant: ParticipantId(participant),
                    instrument: InstrumentId(u32::from(inst)),
                    side,
                    order_type,
                    tif,
                    price,
                    qty,
                    post_only,
                };
                self.known.insert(
                    id,
                    Known {
                        instrument: order.instrument,
                        participant: order.participant,
                        side,
                        price,
                        original: qty,
                        traded: 0,
                    },
                );
                self.entered.push(id);
                CommandBody::New(order)
            }
            Op::Duplicate { pick } => {
                // Reuse the id of an order that may still rest: rejected when it does.
                let (id, k) = self.pick(pick)?;
                self.fast.book(k.instrument)?.order(id)?;
                CommandBody::New(NewOrder::limit(
                    id.0,
                    k.participant.0,
                    k.instrument.0,
                    k.side,
                    TimeInForce::Gtc,
                    k.price,
                    1,
                ))
            }
            Op::Cancel { pick, wrong_owner } => {
                let (order_id, k) = self.pick(pick)?;
                let participant = ParticipantId(k.participant.0 + u32::from(wrong_owner));
                CommandBody::Cancel { instrument: k.instrument, order_id, participant }
            }
            Op::Amend { pick, price_off, qty } => {
                let (order_id, k) = self.pick(pick)?;
                let tick = self.specs[k.instrument.0 as usize].tick_size;
                let price = k.price + price_off * tick;
                CommandBody::Amend {
                    instrument: k.instrument,
                    order_id,
                    participant: k.participant,
                    price,
                    qty,
                }
            }
            Op::MassCancel { scope, participant, inst } => CommandBody::MassCancel(match scope {
                0 => MassCancelScope::Instrument(InstrumentId(u32::from(inst))),
                1 => MassCancelScope::Participant(ParticipantId(participant)),
                _ => MassCancelScope::ParticipantInInstrument(
                    ParticipantId(participant),
                    InstrumentId(u32::from(inst)),
                ),
            }),
            Op::ExpireDay { inst } => CommandBody::ExpireDay { instrument: InstrumentId(u32::from(inst)) },
            Op::Uncross { inst } => CommandBody::Uncross { instrument: InstrumentId(u32::from(inst)) },
            Op::SetPhase { inst, phase } => CommandBody::SetPhase {
                instrument: InstrumentId(u32::from(inst)),
                phase: Phase::from_code(phase).unwrap_or_default(),
            },
        })
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let Some(body) = self.command(op) else { return Ok(()) };
        self.ts += 1;
        let cmd = Command { ts_ns: self.ts, body };
        let fast = self.fast.apply_vec(&cmd);
        let naive = self.naive.apply_vec(&cmd);
        self.quiet.apply_into(&cmd, &mut Discard);
        prop_assert_eq!(&fast, &naive, "events differ after {:?}", cmd);
        prop_assert_eq!(
            state_hash(&self.quiet),
            state_hash(&self.fast),
            "replay state differs after {:?}",
            cmd
        );
        self.fast.check_invariants().map_err(TestCaseError::fail)?;
        self.naive.check_invariants().map_err(TestCaseError::fail)?;
        self.observe(&fast)?;
        self.compare_books()
    }

    /// Checks the events against what the test knows, and learns from them.
    fn observe(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        for event in events {
            match *event {
                Event::Trade(t) => {
                    prop_assert!(t.qty > 0);
                    for (id, side) in [(t.buy_order_id, Side::Buy), (t.sell_order_id, Side::Sell)] {
                        prop_assert!(!self.dead.contains(&id), "order {} traded after it was cancelled", id);
                        let k = self
                            .known
                            .get_mut(&id)
                            .ok_or_else(|| TestCaseError::fail("unknown order traded"))?;
                        prop_assert_eq!(k.side, side);
                        prop_assert_eq!(k.instrument, t.instrument);
                        k.traded += t.qty;
                        prop_assert!(k.traded <= k.original, "order {} overfilled", id);
                    }
                    // A trade takes place at the resting order's price; an auction trade at a
                    // price both orders accept.
                    if t.aggressor == Aggressor::Auction {
                        prop_assert!(self.known[&t.buy_order_id].price >= t.price);
                        prop_assert!(self.known[&t.sell_order_id].price <= t.price);
                    } else {
                        let resting =
                            if t.aggressor == Aggressor::Buy { t.sell_order_id } else { t.buy_order_id };
                        prop_assert_eq!(t.price, self.known[&resting].price);
                    }
                }
                Event::Cancelled { order_id, .. } | Event::Expired { order_id, .. } => {
                    self.dead.insert(order_id);
                }
                Event::Amended { order_id, price, leaves_qty, .. } => {
                    if let Some(k) = self.known.get_mut(&order_id) {
                        k.price = price;
                        k.original = k.traded + leaves_qty;
                    }
                }
                Event::Accepted { .. }
                | Event::Rejected { .. }
                | Event::Uncrossed { .. }
                | Event::PhaseChanged { .. }
                | Event::SellTotal { .. } => {}
                Event::FundsAdjusted { .. }
                | Event::HoldingsAdjusted { .. }
                | Event::Defaulted { .. }
                | Event::Suspended { .. } => prop_assert!(false, "no such command: {:?}", event),
            }
        }
        Ok(())
    }

    /// Both books hold the same orders in the same priority order, and every resting order
    /// satisfies filled + open = original.
    fn compare_books(&self) -> Result<(), TestCaseError> {
        for i in 0..self.specs.len() as u32 {
            let (fb, nb) =
                (self.fast.book(InstrumentId(i)).unwrap(), self.naive.book(InstrumentId(i)).unwrap());
            for side in [Side::Buy, Side::Sell] {
                let (f, n) = (orders(fb, side), orders(nb, side));
                prop_assert_eq!(&f, &n, "books differ on {:?}", side);
                for o in &f {
                    let k = &self.known[&o.order_id];
                    prop_assert_eq!(o.filled_qty, k.traded, "order {} filled", o.order_id);
                    prop_assert_eq!(
                        o.filled_qty + o.leaves_qty,
                        k.original,
                        "order {}: filled + open",
                        o.order_id
                    );
                    prop_assert!(!self.dead.contains(&o.order_id));
                }
            }
            prop_assert_eq!(fb.order_count(), nb.order_count());
        }
        Ok(())
    }
}

fn orders(book: &impl OrderBook, side: Side) -> Vec<RestingOrder> {
    let mut v = Vec::new();
    book.for_each_order(side, &mut |o| v.push(*o));
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fast_book_matches_reference(specs in prop::collection::vec(spec(), 2), ops in prop::collection::vec(op(), 1..400)) {
        let specs: Vec<_> = specs.into_iter().enumerate()
            .map(|(i, s)| InstrumentSpec { symbol: format!("CCC{i}"), ..s }).collect();
        let mut h = Harness::new(specs);
        for op in &ops {
            h.step(op)?;
        }
    }
}
