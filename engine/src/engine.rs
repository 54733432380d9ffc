//! The engine: a deterministic state machine over many instruments' books.

use serde::{Deserialize, Serialize};

use crate::auction::{self, AuctionOrder};
use crate::book::{Book, OrderBook, RestingOrder};
use crate::message::{
    CancelReason, Command, CommandBody, Event, MassCancelScope, NewOrder, RejectReason, RequestKind,
};
use crate::risk::{Risk, RiskConfig, RiskImage};
use crate::sink::{EventSink, WithCancelReason};
use crate::types::{
    InstrumentId, InstrumentSpec, OrderId, OrderType, ParticipantId, Phase, Price, Qty, Side, TimeInForce,
};
use crate::uncross::AuctionScratch;

/// Why an engine could not be built from a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The whole state of an engine as plain values: what a snapshot stores.
///
/// Independent of the book implementation: an image taken from an `Engine<Book>` rebuilds an
/// `Engine<ReferenceBook>` and the other way round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    /// One entry per instrument, in id order (entry `i` is `InstrumentId(i)`).
    pub instruments: Vec<InstrumentImage>,
    /// Risk settings, accounts and standing (the locks follow from the resting orders).
    pub risk: RiskImage,
}

/// One instrument's rules and resting orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentImage {
    /// The instrument's specification.
    pub spec: InstrumentSpec,
    /// Resting buy orders in priority order (best price first, then time).
    pub bids: Vec<RestingOrder>,
    /// Resting sell orders in priority order (best price first, then time).
    pub asks: Vec<RestingOrder>,
    /// Trading totals so far.
    pub totals: TradeTotals,
    /// The trading phase.
    pub phase: Phase,
}

/// An instrument's trading totals since the engine's journal began: market statistics, and
/// part of the state, so that a command applied twice (a trade executed twice) shows in the
/// state hash even when the books end up the same.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeTotals {
    /// Number of trades.
    pub trades: u64,
    /// Certificates traded.
    pub volume: Qty,
    /// Price of the last trade.
    pub last_price: Option<Price>,
}

/// The matching engine: one book per instrument, `apply(command) -> events`.
///
/// Generic over the book so that the fast [`Book`] and the
/// [`ReferenceBook`](crate::reference::ReferenceBook) run behind exactly the same checks.
pub struct Engine<B: OrderBook = Book> {
    specs: Vec<InstrumentSpec>,
    books: Vec<B>,
    totals: Vec<TradeTotals>,
    /// Accounts, locks and standing.
    risk: Risk,
    /// Reused buffers of the uncross.
    auction: AuctionScratch,
}

impl<B: OrderBook> Engine<B> {
    /// An engine with one empty book per instrument, in the order given (instrument `i` is
    /// `InstrumentId(i)`), and risk checks off ([`RiskConfig::OFF`]).
    pub fn new(specs: Vec<InstrumentSpec>) -> Result<Self, ConfigError> {
        Self::with_risk(specs, RiskConfig::OFF)
    }

    /// An engine with one empty book per instrument and the given risk settings (no accounts
    /// yet: `FUNDS` and `HOLDINGS` commands fill them).
    pub fn with_risk(specs: Vec<InstrumentSpec>, risk: RiskConfig) -> Result<Self, ConfigError> {
        for spec in &specs {
            spec.validate().map_err(ConfigError)?;
        }
        for (i, a) in specs.iter().enumerate() {
            if specs[..i].iter().any(|b| b.symbol == a.symbol) {
                return Err(ConfigError(format!("instrument {} is configured twice", a.symbol)));
            }
        }
        if u32::try_from(specs.len()).is_err() {
            return Err(ConfigError("too many instruments".into()));
        }
        let books = specs.iter().enumerate().map(|(i, spec)| B::new(InstrumentId(i as u32), spec)).collect();
        let totals = vec![TradeTotals::default(); specs.len()];
        Ok(Engine { specs, books, totals, risk: Risk::new(risk), auction: AuctionScratch::default() })
    }

    /// Applies one command and appends the events it causes to `out` (which is not cleared).
    #[inline]
    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        let start = out.len();
        // The bookkeeping runs over the events once they are all in `out`, so that matching
        // only pushes: measurably faster here than following each push as `apply_into` does.
        // Both orders give the same state (see `Risk::on_event`; the property tests compare).
        self.step::<_, false>(cmd, out);
        let order = new_order_of(cmd);
        for event in &out[start..] {
            follow(&self.specs, &mut self.totals, &mut self.risk, order, event);
        }
    }

    /// Applies one command and pushes the events it causes into `sink`, in order.
    ///
    /// The state the command leaves behind does not depend on the sink: trade totals and, with
    /// risk checks on, accounts and locks follow every event as it is pushed, before the sink
    /// sees it. Replay applies into [`Discard`](crate::sink::Discard), which spares building the
    /// events.
    #[inline]
    pub fn apply_into(&mut self, cmd: &Command, sink: &mut impl EventSink) {
        self.step::<_, true>(cmd, sink);
    }

    /// Runs one command; with `FOLLOW` the bookkeeping follows each event as it is pushed.
    #[inline]
    fn step<S: EventSink, const FOLLOW: bool>(&mut self, cmd: &Command, sink: &mut S) {
        let Engine { specs, books, totals, risk, auction } = self;
        let fx = Effects::<S, FOLLOW> { specs, totals, risk, order: new_order_of(cmd), out: sink };
        Step { books, auction, fx }.dispatch(cmd);
    }

    /// Applies one command and returns its events in a new vector (allocates; for tests and
    /// tools, not for the hot path).
    pub fn apply_vec(&mut self, cmd: &Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.apply(cmd, &mut out);
        out
    }
}

/// The NEW of a command, if it is one (its `Accepted` locks what the order needs).
#[inline]
fn new_order_of(cmd: &Command) -> Option<&NewOrder> {
    match &cmd.body {
        CommandBody::New(order) => Some(order),
        _ => None,
    }
}

/// The engine's bookkeeping of one event: trade totals and, with risk checks on, accounts and
/// locks.
#[inline]
fn follow(
    specs: &[InstrumentSpec],
    totals: &mut [TradeTotals],
    risk: &mut Risk,
    order: Option<&NewOrder>,
    event: &Event,
) {
    if let Event::Trade(t) = event {
        let totals = &mut totals[t.instrument.0 as usize];
        totals.trades += 1;
        totals.volume = totals.volume.saturating_add(t.qty);
        totals.last_price = Some(t.price);
    }
    if risk.checks() {
        risk.on_event(specs, order, event);
    }
}

/// Where a command's events go on their way to the caller's sink: with `FOLLOW`, the engine's
/// bookkeeping ([`follow`]) sees each event first; without, the caller runs it afterwards.
struct Effects<'a, S, const FOLLOW: bool> {
    specs: &'a [InstrumentSpec],
    totals: &'a mut [TradeTotals],
    risk: &'a mut Risk,
    order: Option<&'a NewOrder>,
    out: &'a mut S,
}

impl<S: EventSink, const FOLLOW: bool> EventSink for Effects<'_, S, FOLLOW> {
    #[inline]
    fn push(&mut self, event: Event) {
        if FOLLOW {
            follow(self.specs, self.totals, self.risk, self.order, &event);
        }
        self.out.push(event);
    }
}

/// One command being applied: the engine's parts borrowed apart, so that a book pushes its
/// events into the bookkeeping while the step holds the book.
struct Step<'a, B, S, const FOLLOW: bool> {
    books: &'a mut [B],
    auction: &'a mut AuctionScratch,
    fx: Effects<'a, S, FOLLOW>,
}

impl<B: OrderBook, S: EventSink, const FOLLOW: bool> Step<'_, B, S, FOLLOW> {
    #[inline]
    fn dispatch(&mut self, cmd: &Command) {
        match cmd.body {
            CommandBody::New(ref order) => self.new_order(order, cmd.ts_ns),
            CommandBody::Cancel { instrument, order_id, participant } => {
                match self.books.get_mut(instrument.0 as usize) {
                    Some(book) if !book.phase().accepts_orders() => self.fx.push(Event::Rejected {
                        request: RequestKind::Cancel,
                        order_id,
                        instrument,
                        reason: RejectReason::OutsideTradingWindow,
                    }),
                    Some(book) => book.cancel(order_id, participant, &mut self.fx),
                    None => self.fx.push(unknown_instrument(RequestKind::Cancel, order_id, instrument)),
                }
            }
            CommandBody::Amend { instrument, order_id, participant, price, qty } => {
                let Some(spec) = self.fx.specs.get(instrument.0 as usize) else {
                    self.fx.push(unknown_instrument(RequestKind::Amend, order_id, instrument));
                    return;
                };
                let book = &mut self.books[instrument.0 as usize];
                let window = if book.phase().accepts_orders() {
                    Ok(())
                } else {
                    Err(RejectReason::OutsideTradingWindow)
                };
                let risk =
                    || self.fx.risk.check_amend(instrument, order_id, participant, price, qty, cmd.ts_ns);
                if let Err(reason) = check_qty(spec, qty)
                    .and_then(|_| check_price(spec, price))
                    .and(window)
                    .and_then(|_| risk())
                {
                    self.fx.push(Event::Rejected {
                        request: RequestKind::Amend,
                        order_id,
                        instrument,
                        reason,
                    });
                    return;
                }
                book.amend(order_id, participant, price, qty, cmd.ts_ns, &mut self.fx);
            }
            CommandBody::MassCancel(scope) => self.mass_cancel(scope),
            CommandBody::ExpireDay { instrument } => match self.books.get_mut(instrument.0 as usize) {
                Some(book) => book.expire_day(&mut self.fx),
                None => self.fx.push(unknown_instrument(RequestKind::ExpireDay, OrderId(0), instrument)),
            },
            CommandBody::Uncross { instrument } => self.uncross(instrument, cmd.ts_ns),
            CommandBody::SetPhase { instrument, phase } => match self.books.get_mut(instrument.0 as usize) {
                Some(book) if book.phase().can_move_to(phase) => {
                    book.set_phase(phase);
                    self.fx.push(Event::PhaseChanged { instrument, phase });
                    if phase == Phase::CallClosed {
                        for (participant, qty) in sell_totals(book) {
                            self.fx.push(Event::SellTotal { instrument, participant, qty });
                        }
                    }
                }
                Some(_) => self.fx.push(Event::Rejected {
                    request: RequestKind::SetPhase,
                    order_id: OrderId(0),
                    instrument,
                    reason: RejectReason::InvalidPhaseTransition,
                }),
                None => self.fx.push(unknown_instrument(RequestKind::SetPhase, OrderId(0), instrument)),
            },
            CommandBody::Funds { participant, amount } => {
                let reject = |reason| Event::Rejected {
                    request: RequestKind::Funds,
                    order_id: OrderId(0),
                    instrument: InstrumentId(0),
                    reason,
                };
                match self.fx.risk.adjust_funds(participant, amount) {
                    Ok(()) => self.fx.push(Event::FundsAdjusted { participant, amount }),
                    Err(reason) => self.fx.push(reject(reason)),
                }
            }
            CommandBody::Holdings { participant, instrument, qty } => {
                let result = if self.fx.specs.get(instrument.0 as usize).is_none() {
                    Err(RejectReason::UnknownInstrument)
                } else {
                    self.fx.risk.adjust_holdings(participant, instrument, qty)
                };
                match result {
                    Ok(()) => self.fx.push(Event::HoldingsAdjusted { participant, instrument, qty }),
                    Err(reason) => self.fx.push(Event::Rejected {
                        request: RequestKind::Holdings,
                        order_id: OrderId(0),
                        instrument,
                        reason,
                    }),
                }
            }
            CommandBody::Shortfall { instrument, participant } => {
                self.shortfall(instrument, participant, cmd.ts_ns)
            }
        }
    }

    /// The registry found `participant` short: its sell orders leave the auction and a default
    /// is counted; a default that suspends it also cancels its other resting orders.
    fn shortfall(&mut self, instrument: InstrumentId, participant: ParticipantId, ts_ns: u64) {
        let reject = |reason| Event::Rejected {
            request: RequestKind::Shortfall,
            order_id: OrderId(0),
            instrument,
            reason,
        };
        let Some(book) = self.books.get_mut(instrument.0 as usize) else {
            self.fx.push(reject(RejectReason::UnknownInstrument));
            return;
        };
        if book.phase() != Phase::CallClosed {
            self.fx.push(reject(RejectReason::NotAllowedInPhase));
            return;
        }
        let mut sells = Vec::new();
        book.for_each_order(Side::Sell, &mut |o| {
            if o.participant == participant {
                sells.push(o.order_id);
            }
        });
        if sells.is_empty() {
            self.fx.push(reject(RejectReason::NoSellOrders));
            return;
        }
        let mut short = WithCancelReason { inner: &mut self.fx, reason: CancelReason::HoldingsShortfall };
        for order_id in sells {
            book.cancel(order_id, participant, &mut short);
        }
        let (defaults_in_quarter, suspended) = self.fx.risk.record_default(participant, ts_ns);
        self.fx.push(Event::Defaulted { instrument, participant, defaults_in_quarter });
        if let Some(until_ns) = suspended {
            self.fx.push(Event::Suspended { participant, until_ns });
            let mut suspend = WithCancelReason { inner: &mut self.fx, reason: CancelReason::Suspended };
            for book in self.books.iter_mut() {
                book.mass_cancel(Some(participant), &mut suspend);
            }
        }
    }

    /// Crosses an instrument's curves once at a uniform price (see [`crate::auction`]).
    fn uncross(&mut self, instrument: InstrumentId, ts_ns: u64) {
        let (Some(spec), Some(book)) =
            (self.fx.specs.get(instrument.0 as usize), self.books.get_mut(instrument.0 as usize))
        else {
            self.fx.push(unknown_instrument(RequestKind::Uncross, OrderId(0), instrument));
            return;
        };
        if !matches!(book.phase(), Phase::Call | Phase::CallClosed) {
            let reason = RejectReason::NotAllowedInPhase;
            self.fx.push(Event::Rejected {
                request: RequestKind::Uncross,
                order_id: OrderId(0),
                instrument,
                reason,
            });
            return;
        }
        // Whatever the result, the results are published and the book leaves the call.
        let a = &mut self.auction;
        a.read_levels(book);
        book.set_phase(Phase::Uncrossed);
        match auction::clearing_price(&a.bid_levels, &a.ask_levels, spec.tick_size, spec.auction_price_rule) {
            None => self.fx.push(Event::Uncrossed { instrument, price: None, volume: 0 }),
            Some(clearing) => {
                a.read_orders(book, clearing.volume);
                self.fx.push(Event::Uncrossed {
                    instrument,
                    price: Some(clearing.price),
                    volume: clearing.volume,
                });
                a.trade(book, spec, clearing, instrument, ts_ns, &mut self.fx);
            }
        }
        self.fx.push(Event::PhaseChanged { instrument, phase: Phase::Uncrossed });
    }

    fn new_order(&mut self, order: &NewOrder, ts_ns: u64) {
        let instrument = order.instrument;
        let Some(spec) = self.fx.specs.get(instrument.0 as usize) else {
            self.fx.push(unknown_instrument(RequestKind::New, order.order_id, instrument));
            return;
        };
        let phase = self.books[instrument.0 as usize].phase();
        if let Err(reason) =
            check_new(spec, order, phase).and_then(|()| self.fx.risk.check_new(spec, order, ts_ns))
        {
            self.fx.push(Event::Rejected {
                request: RequestKind::New,
                order_id: order.order_id,
                instrument,
                reason,
            });
            return;
        }
        self.books[instrument.0 as usize].submit(order, ts_ns, &mut self.fx);
    }

    fn mass_cancel(&mut self, scope: MassCancelScope) {
        match scope {
            MassCancelScope::Instrument(instrument)
            | MassCancelScope::ParticipantInInstrument(_, instrument) => {
                let participant = match scope {
                    MassCancelScope::ParticipantInInstrument(p, _) => Some(p),
                    _ => None,
                };
                match self.books.get_mut(instrument.0 as usize) {
                    // A participant may not cancel outside its trading window (the operator
                    // may: an instrument-wide mass cancel is an operator action).
                    Some(book) if participant.is_some() && !book.phase().accepts_orders() => {
                        self.fx.push(Event::Rejected {
                            request: RequestKind::MassCancel,
                            order_id: OrderId(0),
                            instrument,
                            reason: RejectReason::OutsideTradingWindow,
                        })
                    }
                    Some(book) => book.mass_cancel(participant, &mut self.fx),
                    None => self.fx.push(unknown_instrument(RequestKind::MassCancel, OrderId(0), instrument)),
                }
            }
            MassCancelScope::Participant(participant) => {
                // Only in the instruments whose phase accepts cancels.
                for book in self.books.iter_mut().filter(|b| b.phase().accepts_orders()) {
                    book.mass_cancel(Some(participant), &mut self.fx);
                }
            }
        }
    }
}

impl<B: OrderBook> Engine<B> {
    /// The instruments, in id order.
    pub fn instruments(&self) -> &[InstrumentSpec] {
        &self.specs
    }

    /// The aggregate demand and supply curves of an instrument's book as they stand (before an
    /// uncross, what it will cross), one point per price level, ascending; `None` for an
    /// unknown instrument.
    pub fn auction_curves(&self, instrument: InstrumentId) -> Option<Vec<auction::CurvePoint>> {
        let book = self.books.get(instrument.0 as usize)?;
        let mut sides = [Vec::new(), Vec::new()];
        for (side, levels) in [Side::Buy, Side::Sell].into_iter().zip(&mut sides) {
            book.for_each_level(side, &mut |price, qty| {
                levels.push(AuctionOrder { order_id: OrderId(0), participant: ParticipantId(0), price, qty })
            });
        }
        Some(auction::curves(&sides[0], &sides[1]))
    }

    /// The total quantity of each seller's resting sell orders in an instrument, in participant
    /// order: what the exchange sends the registry for the holdings check. `None` for an
    /// unknown instrument.
    pub fn sell_totals(&self, instrument: InstrumentId) -> Option<Vec<(ParticipantId, Qty)>> {
        self.books.get(instrument.0 as usize).map(sell_totals)
    }

    /// Accounts, locks and standing.
    pub fn risk(&self) -> &Risk {
        &self.risk
    }

    /// Every resting order of every book: instruments in id order, bids then asks, each in
    /// priority order. Allocates.
    pub fn resting_orders(&self) -> Vec<(InstrumentId, RestingOrder)> {
        let mut all = Vec::new();
        for (i, book) in self.books.iter().enumerate() {
            for side in [Side::Buy, Side::Sell] {
                book.for_each_order(side, &mut |o| all.push((InstrumentId(i as u32), *o)));
            }
        }
        all
    }

    /// The trading totals of an instrument.
    pub fn totals(&self, instrument: InstrumentId) -> Option<&TradeTotals> {
        self.totals.get(instrument.0 as usize)
    }

    /// The book of an instrument.
    pub fn book(&self, instrument: InstrumentId) -> Option<&B> {
        self.books.get(instrument.0 as usize)
    }

    /// The engine's whole state: every instrument's specification and resting orders.
    ///
    /// Allocates; for snapshots and tests, not for the hot path.
    pub fn image(&self) -> EngineImage {
        let instruments = self
            .specs
            .iter()
            .zip(&self.books)
            .map(|(spec, book)| {
                let mut bids = Vec::new();
                let mut asks = Vec::new();
                book.for_each_order(Side::Buy, &mut |o| bids.push(*o));
                book.for_each_order(Side::Sell, &mut |o| asks.push(*o));
                (spec.clone(), bids, asks, book.phase())
            })
            .zip(&self.totals)
            .map(|((spec, bids, asks, phase), totals)| InstrumentImage {
                spec,
                bids,
                asks,
                totals: *totals,
                phase,
            })
            .collect();
        EngineImage { instruments, risk: self.risk.image() }
    }

    /// Rebuilds an engine from an image: for the same commands it then emits the same events
    /// as the engine the image was taken from.
    ///
    /// Refuses (never panics on) an image that no engine could have produced: a specification
    /// [`Engine::new`] refuses, or an order on the wrong side, out of priority order, outside
    /// the instrument's rules, with `filled + open` beyond `u64`, or that its book refuses
    /// ([`OrderBook::restore`]).
    pub fn from_image(image: EngineImage) -> Result<Self, ConfigError> {
        let specs = image.instruments.iter().map(|i| i.spec.clone()).collect();
        let mut engine = Engine::<B>::with_risk(specs, image.risk.config)?;
        for ((spec, book), inst) in engine.specs.iter().zip(&mut engine.books).zip(&image.instruments) {
            book.set_phase(inst.phase);
            for (side, orders) in [(Side::Buy, &inst.bids), (Side::Sell, &inst.asks)] {
                let mut previous = None;
                for order in orders {
                    check_restored(spec, side, previous, order)
                        .and_then(|()| book.restore(order))
                        .map_err(|e| ConfigError(format!("{}: {e}", spec.symbol)))?;
                    previous = Some(order.price);
                }
            }
        }
        engine.totals = image.instruments.iter().map(|i| i.totals).collect();
        engine.risk = Risk::from_image(&image.risk, &engine.resting_orders()).map_err(ConfigError)?;
        engine.check_invariants().map_err(ConfigError)?;
        Ok(engine)
    }

    /// Checks every book's invariants (each book checks that it is not crossed) and the
    /// accounts' ([`Risk::check`]). O(orders); for tests and recovery.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (spec, book) in self.specs.iter().zip(&self.books) {
            book.check_invariants().map_err(|e| format!("{}: {e}", spec.symbol))?;
        }
        self.risk.check(&self.resting_orders()).map_err(|e| format!("accounts: {e}"))
    }
}

/// The checks of a restored order that need only the instrument's rules (the ones every order
/// passed on its way into the book), and that it comes in priority order: its price is not
/// better than the `previous` one of its side.
fn check_restored(
    spec: &InstrumentSpec,
    side: Side,
    previous: Option<Price>,
    order: &RestingOrder,
) -> Result<(), String> {
    let id = order.order_id;
    if order.side != side {
        return Err(format!("order {id} is a {:?} order among the {side:?} orders", order.side));
    }
    let better = |previous: Price| match side {
        Side::Buy => order.price > previous,
        Side::Sell => order.price < previous,
    };
    if previous.is_some_and(better) {
        return Err(format!("order {id} at {} is out of priority order", order.price));
    }
    if let Err(reason) = check_qty(spec, order.leaves_qty).and_then(|()| check_price(spec, order.price)) {
        return Err(format!("order {id}: {}", reason.text()));
    }
    if order.filled_qty.checked_add(order.leaves_qty).is_none() {
        return Err(format!("order {id}: filled plus open quantity overflows"));
    }
    Ok(())
}

/// Each seller's total resting sell quantity, in participant order.
fn sell_totals<B: OrderBook>(book: &B) -> Vec<(ParticipantId, Qty)> {
    let mut totals = std::collections::BTreeMap::<ParticipantId, Qty>::new();
    book.for_each_order(Side::Sell, &mut |o| {
        let total = totals.entry(o.participant).or_default();
        *total = total.saturating_add(o.leaves_qty);
    });
    totals.into_iter().collect()
}

fn unknown_instrument(request: RequestKind, order_id: OrderId, instrument: InstrumentId) -> Event {
    Event::Rejected { request, order_id, instrument, reason: RejectReason::UnknownInstrument }
}

/// The checks of a NEW that need only the instrument's rules and phase: type, quantity, price,
/// then the phase (codes 14 and 15, added later, run after 2-8 and before the book's 9-13).
fn check_new(spec: &InstrumentSpec, order: &NewOrder, phase: Phase) -> Result<(), RejectReason> {
    let type_ok = match order.order_type {
        OrderType::Market => matches!(order.tif, TimeInForce::Ioc | TimeInForce::Fok) && !order.post_only,
        OrderType::Limit => !order.post_only || order.tif.rests(),
    };
    if !type_ok {
        return Err(RejectReason::InvalidOrderType);
    }
    check_qty(spec, order.qty)?;
    if order.order_type == OrderType::Limit {
        check_price(spec, order.price)?;
    }
    if phase == Phase::Call && !(order.order_type == OrderType::Limit && order.tif.rests()) {
        return Err(RejectReason::NotAllowedInPhase);
    }
    if !phase.accepts_orders() {
        return Err(RejectReason::OutsideTradingWindow);
    }
    Ok(())
}

fn check_qty(spec: &InstrumentSpec, qty: Qty) -> Result<(), RejectReason> {
    if qty == 0 {
        Err(RejectReason::ZeroQuantity)
    } else if qty > spec.max_order_qty {
        Err(RejectReason::QuantityAboveMax)
    } else if spec.lot_size != 1 && !qty.is_multiple_of(spec.lot_size) {
        Err(RejectReason::QuantityNotLotMultiple)
    } else {
        Ok(())
    }
}

fn check_price(spec: &InstrumentSpec, price: Price) -> Result<(), RejectReason> {
    if price <= 0 {
        Err(RejectReason::NonPositivePrice)
    } else if spec.tick_size != 1 && price % spec.tick_size != 0 {
        Err(RejectReason::PriceNotTickMultiple)
    } else if spec.price_floor.is_some_and(|lo| price < lo) || spec.price_ceiling.is_some_and(|hi| price > hi)
    {
        Err(RejectReason::PriceOutsideBand)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ParticipantId, Side, StpMode};

    fn spec() -> InstrumentSpec {
        InstrumentSpec {
            tick_size: 5,
            lot_size: 10,
            price_floor: Some(1000),
            price_ceiling: Some(2000),
            max_order_qty: 1000,
            stp: StpMode::None,
            ..InstrumentSpec::canonical("CCC-2026-COMPLIANCE")
        }
    }

    fn new(order: NewOrder) -> Command {
        Command { ts_ns: 1, body: CommandBody::New(order) }
    }

    fn rejected(events: &[Event]) -> Option<RejectReason> {
        match events {
            [Event::Rejected { reason, .. }] => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn new_order_checks_in_code_order() {
        use RejectReason::*;
        use TimeInForce::*;
        let limit = |tif, price, qty| NewOrder::limit(1, 1, 0, Side::Buy, tif, price, qty);
        let post_only = |tif| NewOrder { post_only: true, ..limit(tif, 1500, 10) };
        let cases: Vec<(NewOrder, Option<RejectReason>)> = vec![
            (NewOrder { instrument: InstrumentId(7), ..limit(Gtc, 1500, 10) }, Some(UnknownInstrument)),
            (NewOrder { tif: Gtc, ..NewOrder::market(1, 1, 0, Side::Buy, 10) }, Some(InvalidOrderType)),
            (NewOrder { tif: Day, ..NewOrder::market(1, 1, 0, Side::Buy, 10) }, Some(InvalidOrderType)),
            (post_only(Ioc), Some(InvalidOrderType)),
            (post_only(Fok), Some(InvalidOrderType)),
            (limit(Gtc, -5, 0), Some(ZeroQuantity)),
            (limit(Gtc, -5, 1010), Some(QuantityAboveMax)),
            (limit(Gtc, -5, 15), Some(QuantityNotLotMultiple)),
            (limit(Gtc, -5, 10), Some(NonPositivePrice)),
            (limit(Gtc, 0, 10), Some(NonPositivePrice)),
            (limit(Gtc, 1502, 10), Some(PriceNotTickMultiple)),
            (limit(Gtc, 995, 10), Some(PriceOutsideBand)),
            (limit(Gtc, 2005, 10), Some(PriceOutsideBand)),
            (limit(Gtc, 2000, 1000), None),
            (NewOrder::market(1, 1, 0, Side::Buy, 10), None),
            (post_only(Day), None),
        ];
        for (order, want) in cases {
            let mut engine = Engine::<Book>::new(vec![spec()]).unwrap();
            let events = engine.apply_vec(&new(order));
            assert_eq!(rejected(&events), want, "{order:?}: {events:?}");
            engine.check_invariants().unwrap();
        }
    }

    #[test]
    fn amend_checks_price_and_quantity_first() {
        let mut engine = Engine::<Book>::new(vec![spec()]).unwrap();
        engine.apply_vec(&new(NewOrder::limit(1, 1, 0, Side::Buy, TimeInForce::Gtc, 1500, 10)));
        let amend = |order_id, participant, price, qty| Command {
            ts_ns: 2,
            body: CommandBody::Amend {
                instrument: InstrumentId(0),
                order_id: OrderId(order_id),
                participant: ParticipantId(participant),
                price,
                qty,
            },
        };
        let cases = [
            (amend(1, 1, 1500, 0), Some(RejectReason::ZeroQuantity)),
            (amend(1, 1, 1503, 10), Some(RejectReason::PriceNotTickMultiple)),
            (amend(1, 1, 2500, 10), Some(RejectReason::PriceOutsideBand)),
            (amend(9, 1, 1500, 10), Some(RejectReason::UnknownOrder)),
            (amend(1, 2, 1500, 10), Some(RejectReason::NotOwner)),
            (amend(1, 1, 1495, 20), None),
        ];
        for (cmd, want) in cases {
            let events = engine.apply_vec(&cmd);
            assert_eq!(rejected(&events), want, "{cmd:?}: {events:?}");
        }
        assert_eq!(engine.book(InstrumentId(0)).unwrap().best_price(Side::Buy), Some(1495));
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(Engine::<Book>::new(vec![spec(), spec()]).is_err());
        assert!(Engine::<Book>::new(vec![InstrumentSpec { tick_size: 0, ..spec() }]).is_err());
        assert!(Engine::<Book>::new(vec![InstrumentSpec { lot_size: 0, ..spec() }]).is_err());
        assert!(Engine::<Book>::new(vec![InstrumentSpec { price_floor: Some(3000), ..spec() }]).is_err());
        assert!(Engine::<Book>::new(vec![InstrumentSpec { ladder_window_ticks: 0, ..spec() }]).is_err());
    }
}
