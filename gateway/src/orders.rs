//! What the gateway derives from the engine's events: every order's state as a FIX desk sees it
//! (cumulative and open quantity, average price, status), the updates to report per command,
//! a mirror of each book's price levels for market data, and the recent public trades.
//!
//! All of it is a pure function of the journaled commands and their events (plus the client
//! order ids, which the journal's fixed records do not carry and the side log
//! [`crate::core`] keeps), so a restart rebuilds it by replaying the journal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use cccx_engine::{
    Aggressor, CancelReason, Command, CommandBody, Event, InstrumentId, OrderId, OrderType, ParticipantId,
    Phase, Price, Qty, RejectReason, RequestKind, Side, TimeInForce,
};
use rust_decimal::Decimal;
use serde::Serialize;

mod table;

use table::{ChunkedList, OrderTable};

/// A book's levels, best first: bids, asks.
pub type Depth = (Vec<(Price, Qty)>, Vec<(Price, Qty)>);

/// Public trades kept per instrument for `GET /trades`.
pub const RECENT_TRADES: usize = 1000;

/// An order's status (FIX OrdStatus).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, nothing filled (OrdStatus 0).
    New,
    /// Partly filled, still open (1).
    PartiallyFilled,
    /// Filled (2).
    Filled,
    /// Cancelled, possibly after fills (4).
    Cancelled,
    /// Expired at the end of the day (C).
    Expired,
    /// Rejected on entry (8).
    Rejected,
}

impl OrderStatus {
    /// Whether the order can still trade.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

/// One order as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// The exchange's order id.
    pub order_id: u64,
    /// The client's id (FIX ClOrdID; for REST, as given or the order id).
    pub client_order_id: String,
    /// The owner.
    pub participant: u32,
    /// The instrument's symbol.
    #[schema(value_type = String)]
    pub symbol: Arc<str>,
    /// `buy` or `sell`.
    pub side: &'static str,
    /// `limit` or `market`.
    pub order_type: &'static str,
    /// `gtc`, `day`, `ioc` or `fok`.
    pub tif: &'static str,
    /// The limit price (none for a market order).
    pub price: Option<Price>,
    /// The order quantity (an amendment makes it filled + new open).
    pub qty: Qty,
    /// Filled so far.
    pub cum_qty: Qty,
    /// Still open.
    pub leaves_qty: Qty,
    /// Average fill price, if anything filled (a decimal string).
    #[schema(value_type = Option<String>)]
    pub avg_px: Option<Decimal>,
    /// Status.
    pub status: OrderStatus,
    /// Time of the last change (ns since the epoch).
    pub updated_ns: u64,
    #[serde(skip)]
    pub(crate) instrument: InstrumentId,
    #[serde(skip)]
    pub(crate) side_raw: Side,
    #[serde(skip)]
    pub(crate) rests: bool,
    #[serde(skip)]
    notional: i128,
}

impl OrderView {
    /// The engine's side.
    pub fn side(&self) -> Side {
        self.side_raw
    }

    /// The engine's instrument id.
    pub fn instrument(&self) -> InstrumentId {
        self.instrument
    }

    /// What the order contributes to its book's level: `(price, open)` while it rests.
    fn resting(&self) -> Option<(Price, Qty)> {
        (self.rests && self.status.is_open() && self.leaves_qty > 0)
            .then(|| (self.price.unwrap_or(0), self.leaves_qty))
    }
}

/// What happened to an order (FIX ExecType, plus cancel rejects).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecKind {
    /// Accepted (ExecType 0).
    New,
    /// A fill (F).
    Trade,
    /// Cancelled (4).
    Cancelled,
    /// Amended (5).
    Replaced,
    /// Rejected on entry (8).
    Rejected,
    /// Expired (C).
    Expired,
    /// A cancel or amendment of it was refused (FIX OrderCancelReject).
    CancelRejected,
}

/// A reason code and text.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    /// The engine's stable code (reject reasons 1-22; cancel reasons as `100 + code`).
    pub code: u16,
    /// Its text.
    pub text: &'static str,
}

/// One report to an order's owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderUpdate {
    /// What happened.
    pub exec: ExecKind,
    /// The order after it.
    pub order: OrderView,
    /// Unique id of this report.
    pub exec_id: String,
    /// Price of this fill.
    pub last_px: Option<Price>,
    /// Quantity of this fill.
    pub last_qty: Option<Qty>,
    /// Why (rejects and cancels).
    pub reason: Option<Reason>,
    /// For a cancel reject: whether a cancel (`false`) or an amendment (`true`) was refused.
    pub amend: bool,
}

/// A public trade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublicTrade {
    /// Unique trade id.
    pub trade_id: String,
    /// The instrument.
    #[schema(value_type = String)]
    pub symbol: Arc<str>,
    /// Price.
    pub price: Price,
    /// Certificates.
    pub qty: Qty,
    /// `buy`, `sell` or `auction`.
    pub aggressor: &'static str,
    /// Time (ns since the epoch).
    pub ts_ns: u64,
}

/// A public market fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MarketEvent {
    /// A trade.
    Trade(PublicTrade),
    /// The total open quantity at a price level after a command (0: the level is gone).
    Level {
        /// The instrument.
        symbol: Arc<str>,
        /// `buy` or `sell`.
        side: &'static str,
        /// The price.
        price: Price,
        /// Open quantity now at that price.
        qty: Qty,
    },
    /// An instrument's phase changed.
    Phase {
        /// The instrument.
        symbol: Arc<str>,
        /// The new phase.
        phase: &'static str,
    },
    /// An uncross: the market clearing price and volume.
    Auction {
        /// The instrument.
        symbol: Arc<str>,
        /// MCP (none when nothing crossed).
        price: Option<Price>,
        /// MCV.
        volume: Qty,
        /// Time.
        ts_ns: u64,
    },
}

/// Everything one command produced, as the dispatcher fans it out.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    /// The command's journal sequence.
    pub seq: u64,
    /// Its time.
    pub ts_ns: u64,
    /// Reports to order owners.
    pub updates: Vec<OrderUpdate>,
    /// Public market data.
    pub market: Vec<MarketEvent>,
}

/// `BUY`-style names.
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// A phase's name in the API.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Continuous => "continuous",
        Phase::Call => "call",
        Phase::Closed => "closed",
        Phase::CallClosed => "call_closed",
        Phase::Uncrossed => "uncrossed",
    }
}

fn tif_name(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Day => "day",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
    }
}

fn reject_reason(reason: RejectReason) -> Reason {
    Reason { code: reason.code(), text: reason.text() }
}

fn cancel_reason(reason: CancelReason) -> Reason {
    let text = match reason {
        CancelReason::Requested => "cancelled on request",
        CancelReason::ImmediateOrCancel => "unfilled remainder of an immediate order",
        CancelReason::SelfTrade => "self-trade prevention",
        CancelReason::MassCancel => "mass cancel",
        CancelReason::BookFull => "the book is full",
        CancelReason::HoldingsShortfall => "the registry found the seller short",
        CancelReason::Suspended => "the participant is suspended",
    };
    Reason { code: 100 + reason as u16, text }
}

/// Orders, book mirror and recent trades.
#[derive(Default)]
pub struct OrderStore {
    symbols: Vec<Arc<str>>,
    /// The orders of the trading day and the open ones of earlier days, by id (a table that
    /// grows without rehashing: see [`table`]). An instrument's finished orders are forgotten
    /// when it opens its next trading day ([`Self::forget_finished`]).
    orders: OrderTable<OrderView>,
    /// Per participant: client order id -> order id (B-trees, which grow a node at a time).
    by_client: HashMap<u32, BTreeMap<String, u64>>,
    /// Per participant: its order ids, oldest first.
    by_participant: HashMap<u32, ChunkedList<u64>>,
    /// Per instrument: bids and asks, price -> open quantity.
    levels: Vec<[BTreeMap<Price, Qty>; 2]>,
    trades: Vec<VecDeque<PublicTrade>>,
    /// Highest order id seen.
    max_order_id: u64,
    /// The last uncross per instrument.
    auctions: Vec<Option<MarketEvent>>,
    /// The last phase each instrument changed to (none before its first change).
    phases: Vec<Option<Phase>>,
}

impl OrderStore {
    /// An empty store for these instrument symbols.
    pub fn new(symbols: &[String]) -> Self {
        OrderStore {
            symbols: symbols.iter().map(|s| Arc::from(s.as_str())).collect(),
            levels: symbols.iter().map(|_| [BTreeMap::new(), BTreeMap::new()]).collect(),
            trades: symbols.iter().map(|_| VecDeque::new()).collect(),
            auctions: symbols.iter().map(|_| None).collect(),
            phases: symbols.iter().map(|_| None).collect(),
            ..OrderStore::default()
        }
    }

    /// The highest order id any command used.
    pub fn max_order_id(&self) -> u64 {
        self.max_order_id
    }

    /// An order, if it exists.
    pub fn get(&self, order_id: u64) -> Option<&OrderView> {
        self.orders.get(order_id)
    }

    /// The order a participant knows by a client order id.
    pub fn by_client_id(&self, participant: u32, client_order_id: &str) -> Option<&OrderView> {
        let id = self.by_client.get(&participant)?.get(client_order_id)?;
        self.orders.get(*id).filter(|o| o.participant == participant)
    }

    /// A participant's orders, newest first (open ones only when `open_only`).
    pub fn of_participant(&self, participant: u32, open_only: bool, limit: usize) -> Vec<OrderView> {
        let Some(ids) = self.by_participant.get(&participant) else { return Vec::new() };
        ids.iter_rev()
            .filter_map(|id| self.orders.get(*id))
            .filter(|o| !open_only || o.status.is_open())
            .take(limit)
            .cloned()
            .collect()
    }

    /// The best `depth` levels of each side: (bids best first, asks best first).
    pub fn depth(&self, instrument: InstrumentId, depth: usize) -> Depth {
        let Some([bids, asks]) = self.levels.get(instrument.0 as usize) else { return (vec![], vec![]) };
        (
            bids.iter().rev().take(depth).map(|(p, q)| (*p, *q)).collect(),
            asks.iter().take(depth).map(|(p, q)| (*p, *q)).collect(),
        )
    }

    /// The most recent public trades, newest first.
    pub fn recent_trades(&self, instrument: InstrumentId, limit: usize) -> Vec<PublicTrade> {
        self.trades
            .get(instrument.0 as usize)
            .map(|t| t.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// The last uncross of an instrument.
    pub fn last_auction(&self, instrument: InstrumentId) -> Option<&MarketEvent> {
        self.auctions.get(instrument.0 as usize)?.as_ref()
    }

    /// The report of an intent the gateway refused before it reached the engine (a client order
    /// id in use, an order that is not the participant's): a rejected NEW (order id 0) or a
    /// refused cancel or replace of a known order, with code 9 (duplicate) or 10 (unknown order)
    /// and the gateway's text.
    pub fn refusal(
        &self,
        seq: u64,
        ts_ns: u64,
        participant: ParticipantId,
        intent: &crate::core::Intent,
        text: &str,
    ) -> Option<Published> {
        use crate::core::Intent;
        let text: &'static str = match text {
            t if t.contains("client order id") => "client order id in use by an open order",
            _ => "order not in the book",
        };
        let code = if text.starts_with("client") { 9 } else { 10 };
        let reason = Some(Reason { code, text });
        let update = match intent {
            Intent::New { instrument, side, order_type, tif, price, qty, client_order_id, .. } => {
                let view = OrderView {
                    order_id: 0,
                    client_order_id: client_order_id.clone(),
                    participant: participant.0,
                    symbol: self.symbol(*instrument),
                    side: side_name(*side),
                    order_type: if *order_type == OrderType::Market { "market" } else { "limit" },
                    tif: tif_name(*tif),
                    price: (*order_type == OrderType::Limit).then_some(*price),
                    qty: *qty,
                    cum_qty: 0,
                    leaves_qty: 0,
                    avg_px: None,
                    status: OrderStatus::Rejected,
                    updated_ns: ts_ns,
                    instrument: *instrument,
                    side_raw: *side,
                    rests: false,
                    notional: 0,
                };
                OrderUpdate {
                    exec: ExecKind::Rejected,
                    order: view,
                    exec_id: format!("{seq}-r{ts_ns}"),
                    last_px: None,
                    last_qty: None,
                    reason,
                    amend: false,
                }
            }
            Intent::Cancel { order_id } | Intent::Amend { order_id, .. } => {
                let order = self.orders.get(*order_id).filter(|o| o.participant == participant.0)?;
                OrderUpdate {
                    exec: ExecKind::CancelRejected,
                    order: order.clone(),
                    exec_id: format!("{seq}-r{ts_ns}"),
                    last_px: None,
                    last_qty: None,
                    reason,
                    amend: matches!(intent, Intent::Amend { .. }),
                }
            }
            _ => return None,
        };
        Some(Published { seq, ts_ns, updates: vec![update], market: Vec::new() })
    }

    /// Records a client order id for an order (a NEW, or an amendment that renames it).
    pub fn name(&mut self, order_id: u64, participant: u32, client_order_id: &str) {
        self.by_client.entry(participant).or_default().insert(client_order_id.to_string(), order_id);
        if let Some(o) = self.orders.get_mut(order_id) {
            o.client_order_id = client_order_id.to_string();
        }
    }

    /// Follows one command and its events; returns what to publish. `client_order_id` is the
    /// client id of a NEW (or of an amendment that renames the order).
    pub fn apply(
        &mut self,
        seq: u64,
        cmd: &Command,
        events: &[Event],
        client_order_id: Option<&str>,
    ) -> Published {
        let mut out = Published { seq, ts_ns: cmd.ts_ns, updates: Vec::new(), market: Vec::new() };
        let touched = touched(events);
        let before: HashMap<u64, Option<(Price, Qty)>> =
            touched.iter().filter_map(|id| self.orders.get(*id).map(|o| (*id, o.resting()))).collect();
        if let CommandBody::New(o) = &cmd.body {
            self.max_order_id = self.max_order_id.max(o.order_id.0);
        }
        for (i, event) in events.iter().enumerate() {
            let exec_id = format!("{seq}-{i}");
            self.event(cmd, event, exec_id, client_order_id, &mut out);
        }
        // Level changes, from what each touched order rested before and after.
        let mut changed: BTreeMap<(u32, u8, Price), ()> = BTreeMap::new();
        for id in touched {
            let Some(o) = self.orders.get(id) else { continue };
            let (old, new) = (before.get(&id).copied().flatten(), o.resting());
            if old == new {
                continue;
            }
            let (instrument, side) = (o.instrument.0, o.side_raw);
            let book = &mut self.levels[instrument as usize][side as usize];
            if let Some((price, qty)) = old {
                let level = book.entry(price).or_default();
                *level = level.saturating_sub(qty);
                if *level == 0 {
                    book.remove(&price);
                }
                changed.insert((instrument, side as u8, price), ());
            }
            if let Some((price, qty)) = new {
                *book.entry(price).or_default() += qty;
                changed.insert((instrument, side as u8, price), ());
            }
        }
        for (instrument, side, price) in changed.into_keys() {
            let qty = self.levels[instrument as usize][side as usize].get(&price).copied().unwrap_or(0);
            let side = if side == 0 { Side::Buy } else { Side::Sell };
            out.market.push(MarketEvent::Level {
                symbol: self.symbols[instrument as usize].clone(),
                side: side_name(side),
                price,
                qty,
            });
        }
        out
    }

    fn event(
        &mut self,
        cmd: &Command,
        event: &Event,
        exec_id: String,
        client_order_id: Option<&str>,
        out: &mut Published,
    ) {
        let ts = cmd.ts_ns;
        let update = |exec, order: &OrderView, reason| OrderUpdate {
            exec,
            order: order.clone(),
            exec_id: exec_id.clone(),
            last_px: None,
            last_qty: None,
            reason,
            amend: false,
        };
        match *event {
            Event::Accepted { order_id, .. }
            | Event::Rejected { request: RequestKind::New, order_id, .. } => {
                let CommandBody::New(o) = cmd.body else { return };
                let rejected = match *event {
                    Event::Rejected { reason, .. } => Some(reason),
                    _ => None,
                };
                let view = OrderView {
                    order_id: order_id.0,
                    client_order_id: client_order_id.map_or_else(|| order_id.0.to_string(), str::to_string),
                    participant: o.participant.0,
                    symbol: self.symbol(o.instrument),
                    side: side_name(o.side),
                    order_type: if o.order_type == OrderType::Market { "market" } else { "limit" },
                    tif: tif_name(o.tif),
                    price: (o.order_type == OrderType::Limit).then_some(o.price),
                    qty: o.qty,
                    cum_qty: 0,
                    leaves_qty: if rejected.is_some() { 0 } else { o.qty },
                    avg_px: None,
                    status: if rejected.is_some() { OrderStatus::Rejected } else { OrderStatus::New },
                    updated_ns: ts,
                    instrument: o.instrument,
                    side_raw: o.side,
                    rests: o.order_type == OrderType::Limit && o.tif.rests(),
                    notional: 0,
                };
                let exec = if rejected.is_some() { ExecKind::Rejected } else { ExecKind::New };
                out.updates.push(update(exec, &view, rejected.map(reject_reason)));
                if self.orders.contains(order_id.0) {
                    // A rejected duplicate must not overwrite the live order (the gateway never
                    // reuses ids, but a hand-made journal could).
                    return;
                }
                if let Some(c) = client_order_id {
                    self.by_client.entry(o.participant.0).or_default().insert(c.to_string(), order_id.0);
                }
                self.by_participant.entry(o.participant.0).or_default().push(order_id.0);
                self.orders.insert(order_id.0, view);
            }
            Event::Rejected {
                request: request @ (RequestKind::Cancel | RequestKind::Amend),
                order_id,
                reason,
                ..
            } => {
                if let Some(o) = self.orders.get(order_id.0) {
                    let mut u = update(ExecKind::CancelRejected, o, Some(reject_reason(reason)));
                    u.amend = request == RequestKind::Amend;
                    out.updates.push(u);
                }
            }
            Event::Rejected { .. } => {}
            Event::Trade(t) => {
                let symbol = self.symbol(t.instrument);
                for (id, leaves) in [(t.buy_order_id, t.buy_leaves_qty), (t.sell_order_id, t.sell_leaves_qty)]
                {
                    if let Some(o) = self.orders.get_mut(id.0) {
                        o.cum_qty += t.qty;
                        o.leaves_qty = leaves;
                        o.notional += i128::from(t.price) * i128::from(t.qty);
                        o.avg_px = average(o.notional, o.cum_qty);
                        o.status =
                            if leaves == 0 { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
                        o.updated_ns = ts;
                        let mut u = update(ExecKind::Trade, o, None);
                        (u.last_px, u.last_qty) = (Some(t.price), Some(t.qty));
                        out.updates.push(u);
                    }
                }
                let trade = PublicTrade {
                    trade_id: exec_id.clone(),
                    symbol,
                    price: t.price,
                    qty: t.qty,
                    aggressor: match t.aggressor {
                        Aggressor::Buy => "buy",
                        Aggressor::Sell => "sell",
                        Aggressor::Auction => "auction",
                    },
                    ts_ns: t.ts_ns,
                };
                if let Some(recent) = self.trades.get_mut(t.instrument.0 as usize) {
                    if recent.len() == RECENT_TRADES {
                        recent.pop_front();
                    }
                    recent.push_back(trade.clone());
                }
                out.market.push(MarketEvent::Trade(trade));
            }
            Event::Cancelled { order_id, reason, .. } => {
                if let Some(o) = self.orders.get_mut(order_id.0) {
                    (o.leaves_qty, o.status, o.updated_ns) = (0, OrderStatus::Cancelled, ts);
                    out.updates.push(update(ExecKind::Cancelled, o, Some(cancel_reason(reason))));
                }
            }
            Event::Expired { order_id, .. } => {
                if let Some(o) = self.orders.get_mut(order_id.0) {
                    (o.leaves_qty, o.status, o.updated_ns) = (0, OrderStatus::Expired, ts);
                    out.updates.push(update(ExecKind::Expired, o, None));
                }
            }
            Event::Amended { order_id, price, leaves_qty, .. } => {
                if let Some(o) = self.orders.get_mut(order_id.0) {
                    if let Some(c) = client_order_id {
                        o.client_order_id = c.to_string();
                        self.by_client.entry(o.participant).or_default().insert(c.to_string(), order_id.0);
                    }
                    o.price = Some(price);
                    o.leaves_qty = leaves_qty;
                    o.qty = o.cum_qty + leaves_qty;
                    o.updated_ns = ts;
                    out.updates.push(update(ExecKind::Replaced, o, None));
                }
            }
            Event::PhaseChanged { instrument, phase } => {
                out.market
                    .push(MarketEvent::Phase { symbol: self.symbol(instrument), phase: phase_name(phase) });
                if let Some(last) = self.phases.get_mut(instrument.0 as usize) {
                    let reopens = *last == Some(Phase::Closed) && phase.accepts_orders();
                    *last = Some(phase);
                    if reopens {
                        self.forget_finished(instrument);
                    }
                }
            }
            Event::Uncrossed { instrument, price, volume } => {
                let e = MarketEvent::Auction { symbol: self.symbol(instrument), price, volume, ts_ns: ts };
                if let Some(slot) = self.auctions.get_mut(instrument.0 as usize) {
                    *slot = Some(e.clone());
                }
                out.market.push(e);
            }
            Event::FundsAdjusted { .. }
            | Event::HoldingsAdjusted { .. }
            | Event::SellTotal { .. }
            | Event::Defaulted { .. }
            | Event::Suspended { .. } => {}
        }
    }

    /// Forgets the finished orders (filled, cancelled, expired, rejected) of an instrument
    /// that opens a new trading day, so that the store holds one day's orders and the open
    /// ones, not every order since the journal began. They stay in the journal; asked for
    /// afterwards they are unknown, and their client order ids may be used again (FIX wants
    /// them unique within a trading day). Costs a pass over the store, once per day.
    pub fn forget_finished(&mut self, instrument: InstrumentId) {
        self.orders.retain(|_, o| o.instrument != instrument || o.status.is_open());
        let orders = &self.orders;
        for list in self.by_participant.values_mut() {
            list.retain(|id| orders.contains(*id));
        }
        self.by_participant.retain(|_, list| !list.is_empty());
        for names in self.by_client.values_mut() {
            names.retain(|_, id| orders.contains(*id));
        }
        self.by_client.retain(|_, names| !names.is_empty());
    }

    fn symbol(&self, instrument: InstrumentId) -> Arc<str> {
        self.symbols.get(instrument.0 as usize).cloned().unwrap_or_else(|| Arc::from("?"))
    }

    /// Checks the level mirror against an engine's books (tests).
    pub fn levels_of(&self, instrument: InstrumentId, side: Side) -> Vec<(Price, Qty)> {
        let book = &self.levels[instrument.0 as usize][side as usize];
        match side {
            Side::Buy => book.iter().rev().map(|(p, q)| (*p, *q)).collect(),
            Side::Sell => book.iter().map(|(p, q)| (*p, *q)).collect(),
        }
    }
}

/// The order ids an event list touches, each once, in first-touch order (linear: an uncross or
/// mass cancel can touch hundreds of thousands).
fn touched(events: &[Event]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .flat_map(|e| {
            let ids: [Option<OrderId>; 2] = match *e {
                Event::Accepted { order_id, .. }
                | Event::Cancelled { order_id, .. }
                | Event::Expired { order_id, .. }
                | Event::Amended { order_id, .. } => [Some(order_id), None],
                Event::Trade(t) => [Some(t.buy_order_id), Some(t.sell_order_id)],
                _ => [None, None],
            };
            ids.into_iter().flatten()
        })
        .filter(|id| seen.insert(id.0))
        .map(|id| id.0)
        .collect()
}

/// `notional / qty`, rounded to 6 decimal places.
fn average(notional: i128, qty: Qty) -> Option<Decimal> {
    if qty == 0 {
        return None;
    }
    let n = Decimal::try_from_i128_with_scale(notional, 0).ok()?;
    n.checked_div(Decimal::from(qty)).map(|d| d.round_dp(6).normalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccx_engine::{Book, Engine, InstrumentSpec, NewOrder, OrderBook, ParticipantId};

    /// The level mirror equals the engine's books after every command of a busy flow.
    #[test]
    fn the_level_mirror_follows_the_books() {
        let specs = vec![InstrumentSpec::canonical("A"), InstrumentSpec::canonical("B")];
        let mut engine = Engine::<Book>::new(specs).unwrap();
        let mut store = OrderStore::new(&["A".into(), "B".into()]);
        let mut x: u64 = 12345;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seq in 1..3000u64 {
            let r = next();
            let inst = (r % 2) as u32;
            let side = if r % 3 == 0 { Side::Buy } else { Side::Sell };
            let body = match r % 10 {
                0..=5 => {
                    let tif = [TimeInForce::Gtc, TimeInForce::Day, TimeInForce::Ioc, TimeInForce::Fok]
                        [(r % 4) as usize];
                    let price = 100 + (next() % 20) as i64 - 10;
                    CommandBody::New(NewOrder::limit(
                        seq,
                        (r % 7) as u32,
                        inst,
                        side,
                        tif,
                        price,
                        1 + next() % 50,
                    ))
                }
                6 => CommandBody::New(NewOrder::market(seq, (r % 7) as u32, inst, side, 1 + next() % 30)),
                7 | 8 => {
                    let id = 1 + next() % seq;
                    let Some(o) = store.get(id) else { continue };
                    CommandBody::Cancel {
                        instrument: o.instrument,
                        order_id: OrderId(id),
                        participant: ParticipantId(o.participant),
                    }
                }
                _ => {
                    let id = 1 + next() % seq;
                    let Some(o) = store.get(id) else { continue };
                    CommandBody::Amend {
                        instrument: o.instrument,
                        order_id: OrderId(id),
                        participant: ParticipantId(o.participant),
                        price: 100 + (next() % 20) as i64 - 10,
                        qty: 1 + next() % 50,
                    }
                }
            };
            let cmd = Command { ts_ns: seq, body };
            let events = engine.apply_vec(&cmd);
            let published = store.apply(seq, &cmd, &events, None);
            for i in 0..2 {
                let instrument = InstrumentId(i);
                for side in [Side::Buy, Side::Sell] {
                    let mut real = Vec::new();
                    engine.book(instrument).unwrap().for_each_level(side, &mut |p, q| real.push((p, q)));
                    assert_eq!(store.levels_of(instrument, side), real, "after {cmd:?}");
                }
            }
            // Every open order in the store is in the book with the same open quantity.
            for u in &published.updates {
                let o = store.get(u.order.order_id).unwrap();
                let in_book = engine.book(o.instrument).unwrap().order(OrderId(o.order_id));
                match in_book {
                    Some(r) => assert_eq!((r.leaves_qty, r.filled_qty), (o.leaves_qty, o.cum_qty)),
                    None => assert!(!o.status.is_open() || !o.rests, "{o:?}"),
                }
            }
        }
    }

    /// An instrument that opens a new trading day drops its finished orders from the store, and
    /// nothing else: open orders, the other instrument's orders and the day's client order ids
    /// before the reopening stay.
    #[test]
    fn finished_orders_are_forgotten_when_the_instrument_reopens() {
        let specs = vec![InstrumentSpec::canonical("A"), InstrumentSpec::canonical("B")];
        let mut engine = Engine::<Book>::new(specs).unwrap();
        let mut store = OrderStore::new(&["A".into(), "B".into()]);
        let mut seq = 0;
        let mut run = |store: &mut OrderStore, body: CommandBody, cid: Option<&str>| {
            seq += 1;
            let cmd = Command { ts_ns: seq, body };
            let events = engine.apply_vec(&cmd);
            store.apply(seq, &cmd, &events, cid);
            if let (Some(cid), CommandBody::New(o)) = (cid, body) {
                store.name(o.order_id.0, o.participant.0, cid);
            }
        };
        let limit = |id, p, inst, side, tif, px, qty| {
            CommandBody::New(NewOrder::limit(id, p, inst, side, tif, px, qty))
        };
        let phase = |inst, phase| CommandBody::SetPhase { instrument: InstrumentId(inst), phase };
        run(&mut store, limit(1, 1, 0, Side::Buy, TimeInForce::Gtc, 100, 10), Some("gtc-a"));
        run(&mut store, limit(2, 2, 0, Side::Sell, TimeInForce::Gtc, 100, 10), Some("filler")); // fills 1
        run(&mut store, limit(3, 1, 0, Side::Buy, TimeInForce::Gtc, 90, 5), Some("resting-a"));
        run(&mut store, limit(4, 1, 0, Side::Buy, TimeInForce::Ioc, 80, 5), Some("ioc-a")); // cancelled
        run(&mut store, limit(5, 1, 1, Side::Buy, TimeInForce::Ioc, 80, 5), Some("ioc-b")); // B, cancelled
        let status = |store: &OrderStore, id| store.get(id).map(|o| o.status);
        assert_eq!(status(&store, 1), Some(OrderStatus::Filled));
        assert_eq!(status(&store, 4), Some(OrderStatus::Cancelled));
        // Closing keeps everything (the day's orders can still be looked at in the evening).
        run(&mut store, phase(0, Phase::Closed), None);
        assert_eq!(status(&store, 1), Some(OrderStatus::Filled));
        assert_eq!(store.of_participant(1, false, 100).len(), 4);
        // The next day opens: A's finished orders go, its open order and B's orders stay.
        run(&mut store, phase(0, Phase::Continuous), None);
        for gone in [1, 2, 4] {
            assert_eq!(status(&store, gone), None, "order {gone}");
        }
        assert_eq!(status(&store, 3), Some(OrderStatus::New));
        assert_eq!(status(&store, 5), Some(OrderStatus::Cancelled));
        assert!(store.by_client_id(1, "gtc-a").is_none());
        assert!(store.by_client_id(2, "filler").is_none());
        assert_eq!(store.by_client_id(1, "resting-a").map(|o| o.order_id), Some(3));
        assert_eq!(store.by_client_id(1, "ioc-b").map(|o| o.order_id), Some(5));
        let ids: Vec<u64> = store.of_participant(1, false, 100).iter().map(|o| o.order_id).collect();
        assert_eq!(ids, vec![5, 3]);
        assert!(store.of_participant(2, false, 100).is_empty());
        // A client order id of the day before may be used again, and the book mirror is intact.
        run(&mut store, limit(6, 1, 0, Side::Sell, TimeInForce::Gtc, 95, 1), Some("gtc-a"));
        assert_eq!(store.by_client_id(1, "gtc-a").map(|o| o.order_id), Some(6));
        assert_eq!(store.levels_of(InstrumentId(0), Side::Buy), vec![(90, 5)]);
        assert_eq!(store.max_order_id(), 6);
    }

    #[test]
    fn average_price_is_exact_to_six_places() {
        assert_eq!(average(0, 0), None);
        assert_eq!(average(3 * 100 + 101, 4), Some(Decimal::new(10025, 2)));
        assert_eq!(average(10, 3), Some(Decimal::new(3333333, 6)));
    }
}
