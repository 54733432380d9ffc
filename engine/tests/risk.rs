//! Pre-trade risk and the registry holdings check: a whole session with accounts, step by
//! step; suspension after repeated defaults; and a property test of the accounts against a
//! naive model built only from the commands, the events and the books.

use std::collections::BTreeMap;

use cccx_engine::risk::{Amount, RiskConfig};
use cccx_engine::snapshot::state_hash;
use cccx_engine::{
    Aggressor, Book, CancelReason, Command, CommandBody, Discard, Engine, Event, InstrumentId,
    InstrumentSpec, MassCancelScope, NewOrder, OrderBook, OrderId, OrderType, ParticipantId, Phase, Qty,
    ReferenceBook, RejectReason, RequestKind, Side, TimeInForce, Trade,
};
use proptest::prelude::*;

const CCC: InstrumentId = InstrumentId(0);

fn p(id: u32) -> ParticipantId {
    ParticipantId(id)
}

fn limit(id: u64, participant: u32, side: Side, price: i64, qty: u64) -> CommandBody {
    CommandBody::New(NewOrder::limit(id, participant, 0, side, TimeInForce::Gtc, price, qty))
}

fn funds(participant: u32, amount: i64) -> CommandBody {
    CommandBody::Funds { participant: p(participant), amount }
}

fn holdings(participant: u32, qty: i64) -> CommandBody {
    CommandBody::Holdings { participant: p(participant), instrument: CCC, qty }
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

fn auction_trade(qty: u64, buy: (u64, u32, u64), sell: (u64, u32, u64), ts_ns: u64) -> Event {
    Event::Trade(Trade {
        instrument: CCC,
        price: 1925,
        qty,
        buy_order_id: OrderId(buy.0),
        sell_order_id: OrderId(sell.0),
        buyer: p(buy.1),
        seller: p(sell.1),
        aggressor: Aggressor::Auction,
        buy_leaves_qty: buy.2,
        sell_leaves_qty: sell.2,
        ts_ns,
    })
}

fn ccc_spec() -> InstrumentSpec {
    InstrumentSpec {
        initial_phase: Phase::Closed,
        price_floor: Some(1000),
        price_ceiling: Some(3000),
        ..InstrumentSpec::canonical("CCC-2026-COMPLIANCE")
    }
}

/// A monthly session with accounts: each step is a command and its exact events.
fn session_steps() -> Vec<(CommandBody, Vec<Event>)> {
    use RejectReason::*;
    use RequestKind as R;
    let amended = |price, leaves_qty| {
        vec![Event::Amended {
            order_id: OrderId(3),
            instrument: CCC,
            price,
            leaves_qty,
            priority_kept: false,
        }]
    };
    let amend = |price, qty| CommandBody::Amend {
        instrument: CCC,
        order_id: OrderId(3),
        participant: p(2),
        price,
        qty,
    };
    vec![
        // Deposits and registry holdings.
        (funds(1, 100_000), vec![Event::FundsAdjusted { participant: p(1), amount: 100_000 }]),
        (funds(2, 50_000), vec![Event::FundsAdjusted { participant: p(2), amount: 50_000 }]),
        (holdings(3, 100), vec![Event::HoldingsAdjusted { participant: p(3), instrument: CCC, qty: 100 }]),
        (holdings(4, 30), vec![Event::HoldingsAdjusted { participant: p(4), instrument: CCC, qty: 30 }]),
        (
            funds(2, -50_001),
            vec![Event::Rejected {
                request: R::Funds,
                order_id: OrderId(0),
                instrument: CCC,
                reason: InsufficientFunds,
            }],
        ),
        (set(Phase::Call), vec![Event::PhaseChanged { instrument: CCC, phase: Phase::Call }]),
        // Participant 1 locks 40 x 2000 = 80,000 of its 100,000; 20 x 1500 more does not fit.
        (limit(1, 1, Side::Buy, 2000, 40), accepted(1)),
        (limit(2, 1, Side::Buy, 1500, 20), rejected(R::New, 2, InsufficientFunds)),
        // Participant 2 locks 42,000 of 50,000.
        (limit(3, 2, Side::Buy, 2100, 20), accepted(3)),
        // Sellers lock certificates; 120 is more than participant 3 holds.
        (limit(4, 3, Side::Sell, 1900, 120), rejected(R::New, 4, InsufficientHoldings)),
        (limit(4, 3, Side::Sell, 1900, 60), accepted(4)),
        (limit(5, 4, Side::Sell, 1800, 30), accepted(5)),
        // Someone without an account can neither buy nor sell.
        (limit(6, 9, Side::Sell, 1800, 1), rejected(R::New, 6, InsufficientHoldings)),
        // A market buy is not allowed in the call phase: its phase check comes first.
        (CommandBody::New(NewOrder::market(7, 1, 0, Side::Buy, 1)), rejected(R::New, 7, NotAllowedInPhase)),
        // 25 x 2100 = 52,500 needs 10,500 more than the 42,000 locked: only 8,000 is free.
        (amend(2100, 25), rejected(R::Amend, 3, InsufficientFunds)),
        // 20 x 1950 = 39,000 frees 3,000.
        (amend(1950, 20), amended(1950, 20)),
        // The bid window closes: the export for the registry.
        (
            set(Phase::CallClosed),
            vec![
                Event::PhaseChanged { instrument: CCC, phase: Phase::CallClosed },
                Event::SellTotal { instrument: CCC, participant: p(3), qty: 60 },
                Event::SellTotal { instrument: CCC, participant: p(4), qty: 30 },
            ],
        ),
        // The registry finds participant 4 short: its offer leaves the auction.
        (
            CommandBody::Shortfall { instrument: CCC, participant: p(4) },
            vec![
                Event::Cancelled {
                    order_id: OrderId(5),
                    instrument: CCC,
                    leaves_qty: 30,
                    reason: CancelReason::HoldingsShortfall,
                },
                Event::Defaulted { instrument: CCC, participant: p(4), defaults_in_quarter: 1 },
            ],
        ),
        (
            CommandBody::Shortfall { instrument: CCC, participant: p(1) },
            rejected(R::Shortfall, 0, NoSellOrders),
        ),
        // Demand 40 at 2000 and 20 at 1950 meets supply 60 at 1900: 60 certificates cross
        // anywhere in [1900, 1950] with no surplus; the midpoint is 1925.
        (
            CommandBody::Uncross { instrument: CCC },
            vec![
                Event::Uncrossed { instrument: CCC, price: Some(1925), volume: 60 },
                auction_trade(40, (1, 1, 0), (4, 3, 20), 20),
                auction_trade(20, (3, 2, 0), (4, 3, 0), 20),
                Event::PhaseChanged { instrument: CCC, phase: Phase::Uncrossed },
            ],
        ),
        // Settlement: the registry moves the certificates, the exchange pays the seller.
        (holdings(1, 40), vec![Event::HoldingsAdjusted { participant: p(1), instrument: CCC, qty: 40 }]),
        (holdings(3, -60), vec![Event::HoldingsAdjusted { participant: p(3), instrument: CCC, qty: -60 }]),
        (funds(3, 115_500), vec![Event::FundsAdjusted { participant: p(3), amount: 115_500 }]),
        (funds(1, -23_001), rejected(R::Funds, 0, InsufficientFunds)),
        (funds(1, -23_000), vec![Event::FundsAdjusted { participant: p(1), amount: -23_000 }]),
    ]
}

fn run_session<B: OrderBook>() -> Engine<B> {
    let mut engine = Engine::<B>::with_risk(vec![ccc_spec()], RiskConfig::ON).unwrap();
    for (i, (body, expected)) in session_steps().into_iter().enumerate() {
        let cmd = Command { ts_ns: i as u64 + 1, body };
        let events = engine.apply_vec(&cmd);
        assert_eq!(events, expected, "step {} ({cmd:?})", i + 1);
        engine.check_invariants().unwrap();
    }
    engine
}

/// (deposited, available, locked, paid, received) of a participant's funds.
fn funds_of<B: OrderBook>(engine: &Engine<B>, participant: u32) -> (Amount, Amount, Amount, Amount, Amount) {
    let f = engine.risk().account(p(participant)).map(|a| a.funds).unwrap_or_default();
    (f.deposited, f.available, f.locked, f.paid, f.received)
}

/// (held, available, locked, delivered, bought) of a participant's holding.
fn holding_of<B: OrderBook>(
    engine: &Engine<B>,
    participant: u32,
) -> (Amount, Amount, Amount, Amount, Amount) {
    let h =
        engine.risk().account(p(participant)).and_then(|a| a.holdings.get(&CCC).copied()).unwrap_or_default();
    (h.held, h.available, h.locked, h.delivered, h.bought)
}

fn check_session_accounts<B: OrderBook>(engine: &Engine<B>) {
    // Participant 1 paid 40 x 1925 = 77,000, withdrew the 23,000 left, and holds its 40.
    assert_eq!(funds_of(engine, 1), (77_000, 0, 0, 77_000, 0));
    assert_eq!(holding_of(engine, 1), (40, 40, 0, 0, 0));
    // Participant 2's 20 are bought but not credited yet.
    assert_eq!(funds_of(engine, 2), (50_000, 11_500, 0, 38_500, 0));
    assert_eq!(holding_of(engine, 2), (0, 0, 0, 0, 20));
    // Participant 3 was paid its 60 x 1925 and its registry account lost the 60 it sold.
    assert_eq!(funds_of(engine, 3), (115_500, 115_500, 0, 0, 0));
    assert_eq!(holding_of(engine, 3), (40, 40, 0, 0, 0));
    assert_eq!(holding_of(engine, 4), (30, 30, 0, 0, 0));
    let standing = engine.risk().account(p(4)).unwrap().standing;
    assert_eq!((standing.defaults_total, standing.defaults_in_quarter, standing.suspended_until), (1, 1, 0));
    assert!(engine.risk().account(p(9)).is_none_or(|a| a.funds == Default::default()));
}

#[test]
fn a_monthly_session_with_accounts_fast_book() {
    let engine = run_session::<Book>();
    check_session_accounts(&engine);
}

#[test]
fn a_monthly_session_with_accounts_reference_book() {
    let engine = run_session::<ReferenceBook>();
    check_session_accounts(&engine);
    // A snapshot image rebuilds the same accounts and hash.
    let rebuilt = Engine::<Book>::from_image(engine.image()).unwrap();
    assert_eq!(state_hash(&rebuilt), state_hash(&engine));
    check_session_accounts(&rebuilt);
}

/// Nanoseconds at noon UTC of a day.
fn noon(year: i32, month: u8, day: u8) -> u64 {
    let date = time::Date::from_calendar_date(year, time::Month::try_from(month).unwrap(), day).unwrap();
    u64::try_from(date.with_hms(12, 0, 0).unwrap().assume_utc().unix_timestamp_nanos()).unwrap()
}

/// Three defaults in a quarter suspend: resting orders go, new orders and amendments are
/// refused until the suspension ends; cancels stay allowed.
#[test]
fn three_defaults_in_a_quarter_suspend_the_participant() {
    let other = InstrumentId(1);
    let specs = vec![ccc_spec(), InstrumentSpec { ..InstrumentSpec::canonical("CCC-2026-OFFSET") }];
    let mut engine = Engine::<Book>::with_risk(specs, RiskConfig::ON).unwrap();
    let mut at = |ts_ns: u64, body: CommandBody| {
        let events = engine.apply_vec(&Command { ts_ns, body });
        engine.check_invariants().unwrap();
        events
    };
    let t0 = noon(2026, 1, 5);
    at(t0, funds(4, 1_000_000));
    at(t0, CommandBody::Holdings { participant: p(4), instrument: CCC, qty: 10 });
    // A resting bid in the continuous instrument, and one it will cancel itself.
    let bid = |id| CommandBody::New(NewOrder::limit(id, 4, 1, Side::Buy, TimeInForce::Gtc, 500, 10));
    assert_eq!(at(t0, bid(100)), vec![Event::Accepted { order_id: OrderId(100), instrument: other }]);
    let mut id = 0;
    let mut last = Vec::new();
    for (month, day) in [(1, 28), (2, 25), (3, 25)] {
        let t = noon(2026, month, day);
        id += 1;
        if id > 1 {
            at(t, set(Phase::Closed));
        }
        at(t, set(Phase::Call));
        assert_eq!(at(t, limit(id, 4, Side::Sell, 1500, 10)), accepted(id));
        at(t, set(Phase::CallClosed));
        last = at(t, CommandBody::Shortfall { instrument: CCC, participant: p(4) });
        at(t, CommandBody::Uncross { instrument: CCC });
    }
    let t = noon(2026, 3, 25);
    let until = t + 182 * 86_400 * 1_000_000_000;
    assert_eq!(
        last,
        vec![
            Event::Cancelled {
                order_id: OrderId(3),
                instrument: CCC,
                leaves_qty: 10,
                reason: CancelReason::HoldingsShortfall
            },
            Event::Defaulted { instrument: CCC, participant: p(4), defaults_in_quarter: 3 },
            Event::Suspended { participant: p(4), until_ns: until },
            Event::Cancelled {
                order_id: OrderId(100),
                instrument: other,
                leaves_qty: 10,
                reason: CancelReason::Suspended
            },
        ]
    );
    assert_eq!(funds_of(&engine, 4), (1_000_000, 1_000_000, 0, 0, 0));
    let later = noon(2026, 6, 1);
    let refused = vec![Event::Rejected {
        request: RequestKind::New,
        order_id: OrderId(101),
        instrument: other,
        reason: RejectReason::ParticipantSuspended,
    }];
    let new = CommandBody::New(NewOrder::limit(101, 4, 1, Side::Buy, TimeInForce::Gtc, 500, 10));
    let mut at = |ts_ns: u64, body: CommandBody| engine.apply_vec(&Command { ts_ns, body });
    assert_eq!(at(later, new), refused);
    assert_eq!(at(until - 1, new), refused);
    assert_eq!(at(until, new), vec![Event::Accepted { order_id: OrderId(101), instrument: other }]);
    let standing = engine.risk().account(p(4)).unwrap().standing;
    assert_eq!((standing.defaults_total, standing.defaults_in_quarter), (3, 3));
}

/// The next quarter starts the count again.
#[test]
fn defaults_in_different_quarters_do_not_add_up() {
    let mut engine = Engine::<Book>::with_risk(vec![ccc_spec()], RiskConfig::OFF).unwrap();
    let mut counts = Vec::new();
    for (i, (month, day)) in [(2, 25), (3, 25), (4, 29), (5, 27)].into_iter().enumerate() {
        let t = noon(2026, month, day);
        let id = i as u64 + 1;
        for body in [set(Phase::Call), limit(id, 4, Side::Sell, 1500, 10), set(Phase::CallClosed)] {
            engine.apply_vec(&Command { ts_ns: t, body });
        }
        let events = engine.apply_vec(&Command {
            ts_ns: t,
            body: CommandBody::Shortfall { instrument: CCC, participant: p(4) },
        });
        counts.extend(events.iter().filter_map(|e| match e {
            Event::Defaulted { defaults_in_quarter, .. } => Some(*defaults_in_quarter),
            Event::Suspended { .. } => Some(99),
            _ => None,
        }));
        for body in [CommandBody::Uncross { instrument: CCC }, set(Phase::Closed)] {
            engine.apply_vec(&Command { ts_ns: t, body });
        }
    }
    assert_eq!(counts, vec![1, 2, 1, 2]);
    // Risk checks off: no accounts, so FUNDS is refused.
    let events = engine.apply_vec(&Command { ts_ns: 1, body: funds(1, 5) });
    assert!(matches!(events[..], [Event::Rejected { reason: RejectReason::RiskChecksOff, .. }]));
}

// ---------------------------------------------------------------------------------------------
// The property test.

#[derive(Clone, Debug)]
enum Op {
    Funds { participant: u32, amount: i64 },
    Holdings { participant: u32, inst: u8, qty: i64 },
    New { inst: u8, side: Side, market: bool, tif: u8, price_off: i64, qty: Qty, participant: u32 },
    Cancel { pick: usize },
    Amend { pick: usize, price_off: i64, qty: Qty },
    MassCancel { participant: u32 },
    ExpireDay { inst: u8 },
    SetPhase { inst: u8, phase: u8 },
    Uncross { inst: u8 },
    Shortfall { inst: u8, participant: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    prop_oneof![
        8 => (0..4u32, -3000..20_000i64).prop_map(|(participant, amount)| Op::Funds { participant, amount }),
        8 => (0..4u32, 0..2u8, -30..120i64).prop_map(|(participant, inst, qty)| Op::Holdings { participant, inst, qty }),
        50 => (0..2u8, side, prop::bool::weighted(0.15), 0..4u8, -10..10i64, 1..40u64, 0..4u32).prop_map(
            |(inst, side, market, tif, price_off, qty, participant)| Op::New { inst, side, market, tif, price_off, qty, participant }
        ),
        12 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        12 => (any::<usize>(), -10..10i64, 1..40u64).prop_map(|(pick, price_off, qty)| Op::Amend { pick, price_off, qty }),
        1 => (0..4u32).prop_map(|participant| Op::MassCancel { participant }),
        1 => (0..2u8).prop_map(|inst| Op::ExpireDay { inst }),
        6 => (0..2u8, 0..5u8).prop_map(|(inst, phase)| Op::SetPhase { inst, phase }),
        3 => (0..2u8).prop_map(|inst| Op::Uncross { inst }),
        4 => (0..2u8, 0..4u32).prop_map(|(inst, participant)| Op::Shortfall { inst, participant }),
    ]
}

/// What the naive model knows, from commands and events only.
#[derive(Default)]
struct Model {
    deposited: BTreeMap<u32, Amount>,
    paid: BTreeMap<u32, Amount>,
    received: BTreeMap<u32, Amount>,
    held: BTreeMap<(u32, u32), Amount>,
    delivered: BTreeMap<(u32, u32), Amount>,
    bought: BTreeMap<(u32, u32), Amount>,
    /// (quarter, defaults in it) per participant.
    defaults: BTreeMap<u32, (u32, u32)>,
    suspended_until: BTreeMap<u32, u64>,
}

/// What the resting orders of an engine lock: funds per participant, holdings per
/// (participant, instrument).
fn locked<B: OrderBook>(engine: &Engine<B>) -> (BTreeMap<u32, Amount>, BTreeMap<(u32, u32), Amount>) {
    let (mut funds, mut holdings) = (BTreeMap::new(), BTreeMap::new());
    for (i, o) in engine.resting_orders() {
        match o.side {
            Side::Buy => {
                *funds.entry(o.participant.0).or_default() +=
                    Amount::from(o.price) * Amount::from(o.leaves_qty)
            }
            Side::Sell => *holdings.entry((o.participant.0, i.0)).or_default() += Amount::from(o.leaves_qty),
        }
    }
    (funds, holdings)
}

impl Model {
    fn funds_available(&self, locks: &BTreeMap<u32, Amount>, participant: u32) -> Amount {
        let get = |m: &BTreeMap<u32, Amount>| m.get(&participant).copied().unwrap_or(0);
        get(&self.deposited) - get(locks) - get(&self.paid)
    }

    fn holdings_available(&self, locks: &BTreeMap<(u32, u32), Amount>, key: (u32, u32)) -> Amount {
        let get = |m: &BTreeMap<(u32, u32), Amount>| m.get(&key).copied().unwrap_or(0);
        get(&self.held) - get(locks) - get(&self.delivered)
    }
}

struct Harness {
    fast: Engine<Book>,
    naive: Engine<ReferenceBook>,
    /// The fast engine applying into [`Discard`], as replay does: with risk checks on it must
    /// keep the same accounts without the events.
    quiet: Engine<Book>,
    specs: Vec<InstrumentSpec>,
    model: Model,
    config: RiskConfig,
    /// Every NEW sent: (instrument, id, participant).
    entered: Vec<(InstrumentId, OrderId, ParticipantId)>,
    next_id: u64,
    ts: u64,
}

const DAY_NS: u64 = 86_400_000_000_000;

impl Harness {
    fn command(&mut self, op: &Op) -> Option<CommandBody> {
        let mid = |inst: u8| 100 * self.specs[usize::from(inst)].tick_size;
        let tick = |inst: u8| self.specs[usize::from(inst)].tick_size;
        Some(match *op {
            Op::Funds { participant, amount } => CommandBody::Funds { participant: p(participant), amount },
            Op::Holdings { participant, inst, qty } => CommandBody::Holdings {
                participant: p(participant),
                instrument: InstrumentId(inst.into()),
                qty,
            },
            Op::New { inst, side, market, tif, price_off, qty, participant } => {
                let id = self.next_id;
                self.next_id += 1;
                let tif = [TimeInForce::Gtc, TimeInForce::Day, TimeInForce::Ioc, TimeInForce::Fok]
                    [usize::from(tif)];
                let order = if market {
                    NewOrder {
                        tif: if tif == TimeInForce::Fok { tif } else { TimeInForce::Ioc },
                        ..NewOrder::market(id, participant, inst.into(), side, qty)
                    }
                } else {
                    NewOrder::limit(
                        id,
                        participant,
                        inst.into(),
                        side,
                        tif,
                        mid(inst) + price_off * tick(inst),
                        qty,
                    )
                };
                self.entered.push((order.instrument, order.order_id, order.participant));
                CommandBody::New(order)
            }
            Op::Cancel { pick } => {
                let (instrument, order_id, participant) =
                    *self.entered.get(pick % self.entered.len().max(1))?;
                CommandBody::Cancel { instrument, order_id, participant }
            }
            Op::Amend { pick, price_off, qty } => {
                let (instrument, order_id, participant) =
                    *self.entered.get(pick % self.entered.len().max(1))?;
                let inst = instrument.0 as u8;
                CommandBody::Amend {
                    instrument,
                    order_id,
                    participant,
                    price: mid(inst) + price_off * tick(inst),
                    qty,
                }
            }
            Op::MassCancel { participant } => {
                CommandBody::MassCancel(MassCancelScope::Participant(p(participant)))
            }
            Op::ExpireDay { inst } => CommandBody::ExpireDay { instrument: InstrumentId(inst.into()) },
            Op::SetPhase { inst, phase } => CommandBody::SetPhase {
                instrument: InstrumentId(inst.into()),
                phase: Phase::from_code(phase).unwrap_or_default(),
            },
            Op::Uncross { inst } => CommandBody::Uncross { instrument: InstrumentId(inst.into()) },
            Op::Shortfall { inst, participant } => {
                CommandBody::Shortfall { instrument: InstrumentId(inst.into()), participant: p(participant) }
            }
        })
    }

    /// What the command asks the participant to make available, checked against the model
    /// before the command: `(participant, Some((need, available)))`.
    fn need(&self, cmd: &CommandBody) -> Option<(Side, Amount, Amount)> {
        let (funds_locks, holding_locks) = locked(&self.fast);
        let funds = |participant: ParticipantId| self.model.funds_available(&funds_locks, participant.0);
        let holding = |participant: ParticipantId, i: InstrumentId| {
            self.model.holdings_available(&holding_locks, (participant.0, i.0))
        };
        match *cmd {
            CommandBody::New(o) => {
                let spec = &self.specs[o.instrument.0 as usize];
                match o.side {
                    Side::Buy => {
                        let price = match o.order_type {
                            OrderType::Market => spec.price_ceiling?,
                            OrderType::Limit => o.price,
                        };
                        Some((Side::Buy, Amount::from(price) * Amount::from(o.qty), funds(o.participant)))
                    }
                    Side::Sell => {
                        Some((Side::Sell, Amount::from(o.qty), holding(o.participant, o.instrument)))
                    }
                }
            }
            CommandBody::Amend { instrument, order_id, participant, price, qty } => {
                let old =
                    self.fast.book(instrument)?.order(order_id).filter(|o| o.participant == participant)?;
                match old.side {
                    Side::Buy => {
                        let more = Amount::from(price) * Amount::from(qty)
                            - Amount::from(old.price) * Amount::from(old.leaves_qty);
                        Some((Side::Buy, more, funds(participant)))
                    }
                    Side::Sell => Some((
                        Side::Sell,
                        Amount::from(qty) - Amount::from(old.leaves_qty),
                        holding(participant, instrument),
                    )),
                }
            }
            CommandBody::Funds { participant, amount } => {
                Some((Side::Buy, -Amount::from(amount), funds(participant)))
            }
            CommandBody::Holdings { participant, instrument, qty } => {
                // A debit settles what was delivered first.
                let key = (participant.0, instrument.0);
                let delivered = self.model.delivered.get(&key).copied().unwrap_or(0);
                Some((Side::Sell, -Amount::from(qty) - delivered, holding(participant, instrument)))
            }
            _ => None,
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let Some(body) = self.command(op) else { return Ok(()) };
        self.ts += 5 * DAY_NS + 7;
        let cmd = Command { ts_ns: self.ts, body };
        let need = self.need(&cmd.body);
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
        self.check_decision(&cmd, need, &fast)?;
        self.learn(&cmd, &fast)?;
        self.compare_accounts()
    }

    /// The engine accepted what the model says fits, and refused for want of funds or
    /// holdings only what does not.
    fn check_decision(
        &self,
        cmd: &Command,
        need: Option<(Side, Amount, Amount)>,
        events: &[Event],
    ) -> Result<(), TestCaseError> {
        let took_effect = events.iter().any(|e| {
            matches!(
                e,
                Event::Accepted { .. }
                    | Event::Amended { .. }
                    | Event::FundsAdjusted { .. }
                    | Event::HoldingsAdjusted { .. }
            )
        });
        let refused = events.iter().find_map(|e| match e {
            Event::Rejected { reason, .. } => Some(*reason),
            _ => None,
        });
        let participant = match cmd.body {
            CommandBody::New(o) => Some(o.participant),
            CommandBody::Amend { participant, .. } => Some(participant),
            _ => None,
        };
        if let Some(participant) = participant {
            let suspended =
                self.model.suspended_until.get(&participant.0).is_some_and(|&until| cmd.ts_ns < until);
            if suspended {
                prop_assert!(!took_effect, "a suspended participant's {:?} took effect", cmd);
            }
            if refused == Some(RejectReason::ParticipantSuspended) {
                prop_assert!(suspended, "{:?} refused as suspended", cmd);
            }
        }
        if let CommandBody::New(o) = cmd.body {
            let no_ceiling = self.specs[o.instrument.0 as usize].price_ceiling.is_none();
            let market_buy = o.side == Side::Buy && o.order_type == OrderType::Market;
            if market_buy && no_ceiling {
                prop_assert!(!took_effect, "a market buy without a ceiling was accepted");
            }
        }
        let Some((side, need, available)) = need else { return Ok(()) };
        let short = if side == Side::Buy {
            RejectReason::InsufficientFunds
        } else {
            RejectReason::InsufficientHoldings
        };
        if took_effect {
            prop_assert!(
                need <= available.max(0) || need <= 0,
                "{:?} took effect needing {} of {}",
                cmd,
                need,
                available
            );
        }
        if refused == Some(short) {
            prop_assert!(need > 0 && need > available, "{:?} refused needing {} of {}", cmd, need, available);
        }
        Ok(())
    }

    fn learn(&mut self, cmd: &Command, events: &[Event]) -> Result<(), TestCaseError> {
        let m = &mut self.model;
        for event in events {
            match *event {
                Event::FundsAdjusted { participant, amount } => {
                    let amount = Amount::from(amount);
                    *m.deposited.entry(participant.0).or_default() += amount;
                    let received = m.received.entry(participant.0).or_default();
                    *received -= amount.clamp(0, *received);
                }
                Event::HoldingsAdjusted { participant, instrument, qty } => {
                    let (key, qty) = ((participant.0, instrument.0), Amount::from(qty));
                    *m.held.entry(key).or_default() += qty;
                    let delivered = m.delivered.entry(key).or_default();
                    *delivered -= (-qty).clamp(0, *delivered);
                    let bought = m.bought.entry(key).or_default();
                    *bought -= qty.clamp(0, *bought);
                }
                Event::Trade(t) => {
                    let value = Amount::from(t.price) * Amount::from(t.qty);
                    *m.paid.entry(t.buyer.0).or_default() += value;
                    *m.received.entry(t.seller.0).or_default() += value;
                    *m.delivered.entry((t.seller.0, t.instrument.0)).or_default() += Amount::from(t.qty);
                    *m.bought.entry((t.buyer.0, t.instrument.0)).or_default() += Amount::from(t.qty);
                }
                Event::Defaulted { participant, defaults_in_quarter, .. } => {
                    let quarter = cccx_engine::risk::quarter_of(cmd.ts_ns);
                    let entry = m.defaults.entry(participant.0).or_insert((quarter, 0));
                    if entry.0 != quarter {
                        *entry = (quarter, 0);
                    }
                    entry.1 += 1;
                    prop_assert_eq!(defaults_in_quarter, entry.1);
                    let suspends = entry.1 >= self.config.defaults_to_suspend;
                    let announced = events.iter().any(|e| matches!(e, Event::Suspended { .. }));
                    prop_assert_eq!(suspends, announced, "suspension after {} defaults", entry.1);
                }
                Event::Suspended { participant, until_ns } => {
                    prop_assert_eq!(until_ns, cmd.ts_ns + self.config.suspension_ns);
                    m.suspended_until.insert(participant.0, until_ns);
                }
                _ => {}
            }
        }
        if let CommandBody::Shortfall { instrument, participant } = cmd.body {
            if events.iter().any(|e| matches!(e, Event::Defaulted { .. })) {
                let left =
                    self.fast.resting_orders().iter().any(|(i, o)| {
                        *i == instrument && o.participant == participant && o.side == Side::Sell
                    });
                prop_assert!(!left, "sell orders left after a shortfall");
            }
        }
        Ok(())
    }

    fn compare_accounts(&self) -> Result<(), TestCaseError> {
        let (funds_locks, holding_locks) = locked(&self.fast);
        for participant in 0..4u32 {
            let account = self.fast.risk().account(p(participant)).cloned().unwrap_or_default();
            let get = |m: &BTreeMap<u32, Amount>| m.get(&participant).copied().unwrap_or(0);
            let f = account.funds;
            prop_assert_eq!(f.deposited, get(&self.model.deposited));
            prop_assert_eq!(f.paid, get(&self.model.paid));
            prop_assert_eq!(f.received, get(&self.model.received));
            prop_assert_eq!(f.locked, get(&funds_locks));
            prop_assert_eq!(f.available, self.model.funds_available(&funds_locks, participant));
            prop_assert!(f.available >= 0);
            for inst in 0..self.specs.len() as u32 {
                let key = (participant, inst);
                let h = account.holdings.get(&InstrumentId(inst)).copied().unwrap_or_default();
                let get = |m: &BTreeMap<(u32, u32), Amount>| m.get(&key).copied().unwrap_or(0);
                prop_assert_eq!(h.held, get(&self.model.held));
                prop_assert_eq!(h.delivered, get(&self.model.delivered));
                prop_assert_eq!(h.bought, get(&self.model.bought));
                prop_assert_eq!(h.locked, get(&holding_locks));
                prop_assert_eq!(h.available, self.model.holdings_available(&holding_locks, key));
                prop_assert!(h.available >= 0);
            }
        }
        Ok(())
    }
}

fn specs() -> impl Strategy<Value = Vec<InstrumentSpec>> {
    let one = (prop::bool::ANY, 1..3i64, 0..3usize).prop_map(|(band, tick, phase)| InstrumentSpec {
        tick_size: tick,
        price_floor: band.then_some(90 * tick),
        price_ceiling: band.then_some(110 * tick),
        initial_phase: [Phase::Continuous, Phase::Call, Phase::Closed][phase],
        resting_orders_max: 30,
        ladder_window_ticks: 16,
        ..InstrumentSpec::canonical("X")
    });
    (one.clone(), one).prop_map(|(mut a, b)| {
        a.symbol = "A".into();
        vec![a, InstrumentSpec { symbol: "B".into(), ..b }]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn accounts_follow_a_naive_model(
        specs in specs(),
        defaults_to_suspend in 1..4u32,
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let config = RiskConfig { checks: true, defaults_to_suspend, suspension_ns: 40 * DAY_NS };
        let mut h = Harness {
            fast: Engine::with_risk(specs.clone(), config).unwrap(),
            naive: Engine::with_risk(specs.clone(), config).unwrap(),
            quiet: Engine::with_risk(specs.clone(), config).unwrap(),
            specs,
            model: Model::default(),
            config,
            entered: Vec::new(),
            next_id: 1,
            ts: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
        };
        for (i, op) in ops.iter().enumerate() {
            h.step(op)?;
            if i % 40 == 39 {
                // A snapshot image rebuilds the same state, locks included.
                let rebuilt = Engine::<Book>::from_image(h.fast.image()).map_err(|e| TestCaseError::fail(e.0))?;
                prop_assert_eq!(state_hash(&rebuilt), state_hash(&h.fast));
                h.fast = rebuilt;
            }
        }
    }
}
