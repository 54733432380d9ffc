//! The router thread: turns FIX application messages into engine intents and published order
//! updates into FIX reports, and serves market data and trading session status. New orders
//! are the exception on the way in: the session's own QuickFIX thread enters them
//! (`enter_new_order`), one thread hop less for the most frequent message.
//!
//! One thread does all of it, so the order of what a session sees follows the engine's order
//! and a snapshot is consistent with the increments after it (see [`super::market`]). It never
//! stalls the engine: intents go in with `submit_nowait` (a full queue rejects the order, Text
//! says the exchange is busy), reads use `query_blocking` from this thread, and published
//! records arrive in batches on the engine thread's record tap ([`crate::core::Core::tap`]),
//! which never blocks the engine. Each wake-up drains what is waiting, then hands each session
//! its replies in one batch ([`super::outbound`]): the router never waits for a socket.
//!
//! Lag: when the tap loses records (this thread fell behind by more than
//! [`super::FEED_CAPACITY`] records), the lost reports cannot be rebuilt one by one. The router then logs an
//! error and, for every session that has logged on since start, sends an unsolicited status
//! ExecutionReport (ExecType I) for each of the participant's orders that changed since the last
//! record it saw (at most [`LAG_STATUS_ORDERS_MAX`], newest first), and a fresh snapshot (W) for
//! every market data subscription. LastPx/LastQty of lost fills are not replayed: the REST API
//! (`GET /v1/orders`) has the full state.

use cccx_engine::{InstrumentId, OrderType, ParticipantId, Side, TimeInForce};
use crossbeam_channel::Receiver;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use super::market::{self, EntryTypes, MarketData, SNAPSHOT_DEPTH_MAX};
use super::reports::{self, CancelReject, NewReject, PendingRequest};
use quickfix::{QuickFixError, Session, SessionId};

use super::outbound::{self, Outbound};
use super::session::{lock, CutOff, Inbound};
use super::status::{self, StatusSubscriptions};
use super::tags::*;
use super::wire::{Fields, OutMsg};
use super::{BEGIN_STRING, EXCHANGE_COMP_ID};
use crate::core::{Core, CoreError, Intent, Query, QueryResult, TapReceiver, Tapped};
use crate::orders::{ExecKind, MarketEvent, OrderView, Published};

/// Orders re-reported per session after a lag.
pub const LAG_STATUS_ORDERS_MAX: usize = 10_000;
/// Longest ClOrdID accepted.
pub const CL_ORD_ID_LEN_MAX: usize = 64;

/// Inbound messages and published records handled per wake-up at most, before the replies are
/// handed to the sessions' sender threads.
pub const DRAIN_MAX: usize = 4096;

/// The router's state.
pub(crate) struct Router {
    pub(crate) core: Core,
    /// Participant id -> CompID.
    pub(crate) comp_ids: HashMap<u32, String>,
    /// Sessions that logged on since start: their participants' reports are sent (and stored
    /// for resend while they are away).
    pub(crate) active: HashSet<String>,
    /// Cancel and replace requests waiting for the engine, by order id.
    pub(crate) pending: HashMap<u64, PendingRequest>,
    pub(crate) md: MarketData,
    /// Who hears of phase changes (TradingSessionStatusRequest subscriptions).
    pub(crate) status_subs: StatusSubscriptions,
    /// Time of the last published record seen.
    pub(crate) last_ts_ns: u64,
    /// The sessions' outbound queues.
    pub(crate) out: Outbound,
    /// Sessions cut off (a full outbound queue or a stuck send), until they log on again.
    pub(crate) cut: HashSet<String>,
    /// Sessions being logged out for a cut-off, shared with the logout callback.
    pub(crate) cut_off: CutOff,
}

impl Router {
    /// Runs until `stop` is closed: application messages on `inbound`, logons and logouts on
    /// `events`, published records on `feed`. Each wake-up drains what is waiting (up to
    /// [`DRAIN_MAX`]), then hands each session its replies in one batch.
    pub(crate) fn run(
        mut self,
        inbound: Receiver<Inbound>,
        events: Receiver<Inbound>,
        feed: TapReceiver,
        stop: Receiver<()>,
    ) {
        self.seed_levels();
        'run: loop {
            crossbeam_channel::select! {
                recv(inbound) -> m => match m {
                    Ok(m) => self.inbound(m),
                    Err(_) => break 'run,
                },
                recv(events) -> m => match m {
                    Ok(m) => self.inbound(m),
                    Err(_) => break 'run,
                },
                recv(feed.channel()) -> f => match f {
                    Ok(t) => self.tapped(t, &feed),
                    Err(_) => break 'run,
                },
                recv(stop) -> _ => break 'run,
            }
            let mut n = 1;
            while n < DRAIN_MAX {
                let mut any = false;
                if let Ok(m) = events.try_recv() {
                    self.inbound(m);
                    any = true;
                }
                if let Ok(m) = inbound.try_recv() {
                    self.inbound(m);
                    any = true;
                }
                if let Ok(t) = feed.channel().try_recv() {
                    self.tapped(t, &feed);
                    any = true;
                }
                if !any {
                    break;
                }
                n += 1;
            }
            self.flush();
        }
        self.flush();
        self.out.stop();
    }

    fn tapped(&mut self, t: Tapped, feed: &TapReceiver) {
        match t {
            Tapped::Records(records) => {
                feed.taken(records.len());
                for p in &records {
                    self.published(p);
                }
            }
            Tapped::Lagged(n) => self.lagged(n),
        }
    }

    /// Hands the replies to the sender threads; cuts off the sessions that cannot take them.
    fn flush(&mut self) {
        for comp_id in self.out.flush(self.last_ts_ns) {
            tracing::warn!(
                "FIX session {comp_id} cut off: it does not read its messages (its outbound queue is full or a send was blocked for {:?}); logging it out",
                outbound::SEND_TIMEOUT
            );
            self.md.drop_session(&comp_id);
            self.status_subs.drop_session(&comp_id);
            // The logout disables the session; the logout callback enables it again (it must be
            // able to log on at once, before this thread hears of the disconnect). A session
            // QuickFIX already disconnected is left as it is.
            lock(&self.cut_off).insert(comp_id.clone());
            with_session(&comp_id, |s| {
                if s.is_logged_on()? {
                    s.logout()
                } else {
                    lock(&self.cut_off).remove(&comp_id);
                    Ok(())
                }
            });
            self.cut.insert(comp_id);
        }
    }

    fn seed_levels(&mut self) {
        for i in 0..self.core.instruments().len() {
            let instrument = InstrumentId(i as u32);
            if let Ok(QueryResult::Book(bids, asks)) =
                self.core.query_blocking(Query::Book { instrument, depth: usize::MAX })
            {
                self.md.seed(instrument, &bids, &asks);
            }
        }
    }

    fn participant(&self, comp_id: &str) -> Option<ParticipantId> {
        self.comp_ids.iter().find(|(_, c)| c.as_str() == comp_id).map(|(p, _)| ParticipantId(*p))
    }

    fn reply(&mut self, comp_id: &str, out: OutMsg) {
        self.out.push(comp_id, out);
    }

    fn inbound(&mut self, m: Inbound) {
        match m {
            Inbound::Up(comp_id) => {
                if self.cut.remove(&comp_id) {
                    self.resynchronise(&comp_id);
                }
                self.active.insert(comp_id);
            }
            Inbound::Down(comp_id) => {
                self.md.drop_session(&comp_id);
                self.status_subs.drop_session(&comp_id);
            }
            Inbound::App { comp_id, raw } => {
                let fields = Fields::parse(&raw);
                let Some(participant) = self.participant(&comp_id) else { return };
                self.active.insert(comp_id.clone());
                let msg = Msg { comp_id: &comp_id, participant, f: &fields };
                match fields.get(u(MSG_TYPE)).unwrap_or("") {
                    "F" => self.cancel_or_replace(&msg, false),
                    "G" => self.cancel_or_replace(&msg, true),
                    "q" => self.mass_cancel(&msg),
                    "H" => self.status(&msg),
                    "V" => self.market_data_request(&msg),
                    "g" => self.trading_session_status_request(&msg),
                    other => {
                        let text = format!("message type {other} is not supported by cccx");
                        self.reply(&comp_id, reports::business_reject(msg.seq(), other, "3", &text));
                    }
                }
            }
        }
    }

    fn published(&mut self, p: &Published) {
        self.last_ts_ns = self.last_ts_ns.max(p.ts_ns);
        for u in &p.updates {
            let Some(comp_id) = self.comp_ids.get(&u.order.participant) else { continue };
            let answers_request = match u.exec {
                ExecKind::Cancelled => u.reason.is_some_and(|r| r.code == 101),
                ExecKind::Replaced | ExecKind::CancelRejected => true,
                _ => false,
            };
            let pending = if answers_request { self.pending.remove(&u.order.order_id) } else { None };
            if !self.active.contains(comp_id) || self.cut.contains(comp_id) {
                continue;
            }
            let comp_id = comp_id.clone();
            self.reply(&comp_id, reports::for_update(u, pending.as_ref()));
        }
        for e in &p.market {
            if let MarketEvent::Phase { symbol, phase } = e {
                let Some(instrument) = self.core.instrument_id(symbol) else { continue };
                for (comp_id, req_id) in self.status_subs.for_instrument(instrument) {
                    self.reply(&comp_id, status::status(symbol, phase, Some(&req_id), true));
                }
            }
        }
        for (comp_id, out) in self.md.on_published(p) {
            self.reply(&comp_id, out);
        }
    }

    fn lagged(&mut self, lost: u64) {
        tracing::error!(
            "FIX router fell behind the engine: {lost} published records lost; sending order status and snapshots"
        );
        let since = self.last_ts_ns;
        let sessions: Vec<(u32, String)> = self
            .comp_ids
            .iter()
            .filter(|(_, c)| self.active.contains(*c))
            .map(|(p, c)| (*p, c.clone()))
            .collect();
        for (participant, comp_id) in sessions {
            self.status_since(ParticipantId(participant), &comp_id, since);
        }
        self.seed_levels();
        for (comp_id, md_req_id, instrument, types) in self.md.subscriptions() {
            if let Some(out) = self.snapshot(&md_req_id, instrument, types, 0) {
                self.reply(&comp_id, out);
            }
        }
    }
}

impl Router {
    /// Unsolicited status reports (ExecType I) of the participant's orders that changed at or
    /// after `since_ns`, newest first, at most [`LAG_STATUS_ORDERS_MAX`].
    fn status_since(&mut self, participant: ParticipantId, comp_id: &str, since_ns: u64) {
        let query = Query::Orders { participant, open_only: false, limit: LAG_STATUS_ORDERS_MAX };
        if let Ok(QueryResult::Orders(orders)) = self.core.query_blocking(query) {
            for o in orders.iter().filter(|o| o.updated_ns >= since_ns) {
                let exec_id = format!("LAG-{}-{}", o.order_id, o.updated_ns);
                self.reply(comp_id, reports::status_report(o, exec_id, None));
            }
        }
    }

    /// A session that was cut off logged on again: the reports it missed, as status reports
    /// (its market data subscriptions ended with the cut; it subscribes again).
    fn resynchronise(&mut self, comp_id: &str) {
        self.out.restore(comp_id);
        let since = self.out.delivered_ts_ns(comp_id);
        tracing::info!(
            "FIX session {comp_id} is back after a cut-off: sending the status of orders changed since then"
        );
        if let Some(participant) = self.participant(comp_id) {
            self.status_since(participant, comp_id, since);
        }
    }
}

/// Runs `f` on a QuickFIX session (logout: it only sets the session's state).
fn with_session(comp_id: &str, f: impl FnOnce(&mut Session<'static>) -> Result<(), QuickFixError>) {
    let result = SessionId::try_new(BEGIN_STRING, EXCHANGE_COMP_ID, comp_id, "").and_then(|id| {
        // SAFETY: the sessions live as long as the acceptor, which is stopped only after the
        // router thread (the only caller) has ended.
        let mut session = unsafe { Session::lookup(&id) }?;
        f(&mut session)
    });
    if let Err(e) = result {
        tracing::warn!("FIX session {comp_id}: {e}");
    }
}

/// One inbound application message with its session.
struct Msg<'a> {
    comp_id: &'a str,
    participant: ParticipantId,
    f: &'a Fields<'a>,
}

impl Msg<'_> {
    fn seq(&self) -> Option<&str> {
        self.f.get(u(MSG_SEQ_NUM))
    }

    fn get(&self, tag: i32) -> &str {
        self.f.get(u(tag)).unwrap_or("")
    }

    /// An ExecID for a report the gateway makes itself: unique per session message.
    fn local_exec_id(&self, what: &str) -> String {
        format!("{}-{}-{what}", self.comp_id, self.seq().unwrap_or("0"))
    }
}

/// A whole, positive quantity.
fn parse_qty(text: &str) -> Result<u64, String> {
    let d = Decimal::from_str(text).map_err(|_| format!("OrderQty {text:?} is not a number"))?;
    if !d.fract().is_zero() || d <= Decimal::ZERO {
        return Err(format!("OrderQty {text} must be a whole, positive number of certificates"));
    }
    d.to_u64().ok_or_else(|| format!("OrderQty {text} is too large"))
}

/// A whole number of price units.
fn parse_price(text: &str) -> Result<i64, String> {
    let d = Decimal::from_str(text).map_err(|_| format!("Price {text:?} is not a number"))?;
    if !d.fract().is_zero() {
        return Err(format!("Price {text} must be a whole number of the instrument's price units"));
    }
    d.to_i64().ok_or_else(|| format!("Price {text} is out of range"))
}

/// What a NewOrderSingle asks for, or why it cannot be entered (OrdRejReason, Text).
fn new_intent(m: &Msg<'_>, core: &Core) -> Result<Intent, (&'static str, String)> {
    let cl_ord_id = m.get(CL_ORD_ID);
    if cl_ord_id.is_empty() || cl_ord_id.len() > CL_ORD_ID_LEN_MAX {
        return Err(("99", format!("ClOrdID must have 1 to {CL_ORD_ID_LEN_MAX} characters")));
    }
    let instrument = core
        .instrument_id(m.get(SYMBOL))
        .ok_or_else(|| ("1", format!("unknown symbol {:?}", m.get(SYMBOL))))?;
    let side = match m.get(SIDE) {
        "1" => Side::Buy,
        "2" => Side::Sell,
        s => return Err(("11", format!("Side {s} is not supported: 1 (buy) or 2 (sell)"))),
    };
    let qty = parse_qty(m.get(ORDER_QTY)).map_err(|t| ("13", t))?;
    let order_type = match m.get(ORD_TYPE) {
        "1" => OrderType::Market,
        "2" => OrderType::Limit,
        t => return Err(("11", format!("OrdType {t} is not supported: 1 (market) or 2 (limit)"))),
    };
    let price = match (order_type, m.f.non_empty(u(PRICE))) {
        (OrderType::Limit, Some(p)) => parse_price(p).map_err(|t| ("99", t))?,
        (OrderType::Limit, None) => return Err(("99", "a limit order needs a Price (44)".into())),
        (OrderType::Market, _) => 0,
    };
    // GTC by default for limit orders (the exchange's sessions span days); a market order
    // without TimeInForce is IOC (it never rests).
    let tif = match (m.f.non_empty(u(TIME_IN_FORCE)), order_type) {
        (None, OrderType::Limit) | (Some("1"), _) => TimeInForce::Gtc,
        (None, OrderType::Market) | (Some("3"), _) => TimeInForce::Ioc,
        (Some("0"), _) => TimeInForce::Day,
        (Some("4"), _) => TimeInForce::Fok,
        (Some(t), _) => {
            return Err((
                "11",
                format!("TimeInForce {t} is not supported: 0 (day), 1 (GTC), 3 (IOC), 4 (FOK)"),
            ))
        }
    };
    let mut post_only = false;
    for inst in m.get(EXEC_INST).split_whitespace() {
        match inst {
            "6" => post_only = true,
            other => return Err(("11", format!("ExecInst {other} is not supported: 6 (post-only)"))),
        }
    }
    Ok(Intent::New {
        instrument,
        side,
        order_type,
        tif,
        price,
        qty,
        post_only,
        client_order_id: cl_ord_id.to_string(),
    })
}

fn busy_text(e: &CoreError) -> String {
    match e {
        CoreError::Busy => "the exchange is busy: its input queue is full; try again".into(),
        other => other.to_string(),
    }
}

/// Enters a NewOrderSingle (`f`, from `comp_id`'s session) into the engine. It runs on the
/// session's QuickFIX thread, not the router's: the engine's queue keeps the order of what one
/// session sends (a cancel that follows through the router finds the order), and its reports
/// come back through the router like any other. Returns the reject to send when the order is
/// refused before it reaches the engine.
pub(crate) fn enter_new_order(
    core: &Core,
    comp_id: &str,
    participant: ParticipantId,
    f: &Fields<'_>,
) -> Option<OutMsg> {
    let m = Msg { comp_id, participant, f };
    let result = new_intent(&m, core).and_then(|intent| {
        core.submit_nowait(m.participant, intent).map_err(|e| match e {
            CoreError::Stopped(_) => ("2", busy_text(&e)),
            _ => ("99", busy_text(&e)),
        })
    });
    let (reason, text) = result.err()?;
    Some(reports::new_reject(NewReject {
        exec_id: m.local_exec_id("rej"),
        cl_ord_id: m.get(CL_ORD_ID),
        symbol: m.get(SYMBOL),
        side: m.get(SIDE),
        qty: m.get(ORDER_QTY),
        reason,
        text,
    }))
}

impl Router {
    /// The participant's order a request names: by OrderID (37) if given, else by `cl_tag`.
    fn find_order(&self, m: &Msg<'_>, cl_tag: i32) -> Option<OrderView> {
        let query = match m.f.non_empty(u(ORDER_ID)).and_then(|id| id.parse::<u64>().ok()) {
            Some(order_id) => Query::Order { participant: m.participant, order_id },
            None => Query::OrderByClientId {
                participant: m.participant,
                client_order_id: m.f.non_empty(u(cl_tag))?.to_string(),
            },
        };
        match self.core.query_blocking(query) {
            Ok(QueryResult::Orders(mut orders)) => orders.pop(),
            _ => None,
        }
    }

    fn cancel_or_replace(&mut self, m: &Msg<'_>, amend: bool) {
        let cl_ord_id = m.get(CL_ORD_ID).to_string();
        let order = self.find_order(m, ORIG_CL_ORD_ID);
        let refuse = |order: Option<&OrderView>, reason: &'static str, text: String| {
            reports::cancel_reject(CancelReject {
                order_id: order.map(|o| o.order_id),
                cl_ord_id: cl_ord_id.clone(),
                orig_cl_ord_id: m.get(ORIG_CL_ORD_ID).to_string(),
                status: order.map(|o| o.status),
                amend,
                reason,
                text,
            })
        };
        let Some(order) = order else {
            return self.reply(m.comp_id, refuse(None, "1", "unknown order".into()));
        };
        if !order.status.is_open() {
            let text = format!("the order is no longer open ({:?})", order.status);
            return self.reply(m.comp_id, refuse(Some(&order), "0", text));
        }
        if cl_ord_id.is_empty() || cl_ord_id.len() > CL_ORD_ID_LEN_MAX {
            let text = format!("ClOrdID must have 1 to {CL_ORD_ID_LEN_MAX} characters");
            return self.reply(m.comp_id, refuse(Some(&order), "99", text));
        }
        let intent = if amend {
            match replace_intent(m, &order, &cl_ord_id) {
                Ok(intent) => intent,
                Err(text) => return self.reply(m.comp_id, refuse(Some(&order), "99", text)),
            }
        } else {
            Intent::Cancel { order_id: order.order_id }
        };
        let request = PendingRequest {
            cl_ord_id: cl_ord_id.clone(),
            orig_cl_ord_id: order.client_order_id.clone(),
            amend,
        };
        self.pending.insert(order.order_id, request);
        if let Err(e) = self.core.submit_nowait(m.participant, intent) {
            self.pending.remove(&order.order_id);
            self.reply(m.comp_id, refuse(Some(&order), "99", busy_text(&e)));
        }
    }

    fn mass_cancel(&mut self, m: &Msg<'_>) {
        let request_type = m.get(MASS_CANCEL_REQUEST_TYPE).to_string();
        let scope = match request_type.as_str() {
            "7" => Ok(None),
            "1" => self
                .core
                .instrument_id(m.get(SYMBOL))
                .map(Some)
                .ok_or(("1", format!("unknown symbol {:?}", m.get(SYMBOL)))),
            t => Err(("0", format!("MassCancelRequestType {t} is not supported: 1 (security) or 7 (all)"))),
        };
        let result = scope.and_then(|instrument| {
            self.core
                .submit_nowait(m.participant, Intent::MassCancel { instrument })
                .map_err(|e| ("99", busy_text(&e)))
        });
        let mut r = OutMsg::new("r");
        r.set(CL_ORD_ID, m.get(CL_ORD_ID))
            .set(ORDER_ID, m.local_exec_id("mass"))
            .set(MASS_CANCEL_REQUEST_TYPE, &request_type);
        if let Some(symbol) = m.f.non_empty(u(SYMBOL)) {
            r.set(SYMBOL, symbol);
        }
        match result {
            Ok(()) => {
                // Accepted: each cancelled order follows as an ExecutionReport.
                r.set(MASS_CANCEL_RESPONSE, &request_type);
            }
            Err((reason, text)) => {
                r.set(MASS_CANCEL_RESPONSE, "0").set(MASS_CANCEL_REJECT_REASON, reason).set(TEXT, text);
            }
        }
        self.reply(m.comp_id, r);
    }

    fn status(&mut self, m: &Msg<'_>) {
        let status_id = m.f.non_empty(790);
        match self.find_order(m, CL_ORD_ID) {
            Some(o) => {
                let out = reports::status_report(&o, m.local_exec_id("status"), status_id);
                self.reply(m.comp_id, out);
            }
            None => {
                let mut out = reports::new_reject(NewReject {
                    exec_id: m.local_exec_id("status"),
                    cl_ord_id: m.get(CL_ORD_ID),
                    symbol: m.get(SYMBOL),
                    side: m.get(SIDE),
                    qty: "",
                    reason: "5",
                    text: "unknown order".into(),
                });
                out.replace(EXEC_TYPE, "I");
                if let Some(id) = status_id {
                    out.set(790, id);
                }
                self.reply(m.comp_id, out);
            }
        }
    }

    fn snapshot(
        &self,
        md_req_id: &str,
        instrument: InstrumentId,
        types: EntryTypes,
        depth: usize,
    ) -> Option<OutMsg> {
        let depth = if depth == 0 { SNAPSHOT_DEPTH_MAX } else { depth.min(SNAPSHOT_DEPTH_MAX) };
        let QueryResult::Book(bids, asks) =
            self.core.query_blocking(Query::Book { instrument, depth }).ok()?
        else {
            return None;
        };
        let trade = match self.core.query_blocking(Query::Trades { instrument, limit: 1 }) {
            Ok(QueryResult::Trades(t)) => t.first().map(|t| (Some(t.price), t.qty, t.aggressor == "auction")),
            _ => None,
        };
        let symbol = self.core.instruments().get(instrument.0 as usize)?.symbol.clone();
        Some(market::snapshot(md_req_id, &symbol, types, &bids, &asks, trade))
    }

    fn market_data_request(&mut self, m: &Msg<'_>) {
        let md_req_id = m.get(MD_REQ_ID).to_string();
        let md_reject = |reason: &str, text: &str| {
            let mut r = OutMsg::new("Y");
            r.set(MD_REQ_ID, &md_req_id).set(MD_REQ_REJ_REASON, reason).set(TEXT, text);
            r
        };
        let subscription = m.get(SUBSCRIPTION_REQUEST_TYPE);
        if subscription == "2" {
            if !self.md.unsubscribe(m.comp_id, &md_req_id) {
                self.reply(m.comp_id, md_reject("0", "no such subscription"));
            }
            return;
        }
        let mut types = EntryTypes::default();
        for t in m.f.all(u(MD_ENTRY_TYPE)) {
            match t {
                "0" => types.bids = true,
                "1" => types.offers = true,
                "2" => types.trades = true,
                _ => {
                    let text = format!("MDEntryType {t} is not supported: 0 (bid), 1 (offer), 2 (trade)");
                    return self.reply(m.comp_id, md_reject("8", &text));
                }
            }
        }
        let depth = m.get(MARKET_DEPTH).parse::<usize>().unwrap_or(0);
        let mut instruments = Vec::new();
        for symbol in m.f.all(u(SYMBOL)) {
            match self.core.instrument_id(symbol) {
                Some(i) => instruments.push(i),
                None => return self.reply(m.comp_id, md_reject("0", &format!("unknown symbol {symbol:?}"))),
            }
        }
        for instrument in instruments {
            if subscription == "1" {
                if let Err((reason, text)) = self.md.subscribe(m.comp_id, &md_req_id, instrument, types) {
                    return self.reply(m.comp_id, md_reject(reason, text));
                }
            }
            if let Some(out) = self.snapshot(&md_req_id, instrument, types, depth) {
                self.reply(m.comp_id, out);
            }
        }
    }
}

impl Router {
    /// TradingSessionStatusRequest (g): see [`super::status`].
    fn trading_session_status_request(&mut self, m: &Msg<'_>) {
        let req_id = m.get(TRAD_SES_REQ_ID).to_string();
        let subscription = m.get(SUBSCRIPTION_REQUEST_TYPE);
        if subscription == "2" {
            self.status_subs.unsubscribe(m.comp_id, &req_id);
            return;
        }
        let instrument = match m.f.non_empty(u(TRADING_SESSION_ID)) {
            None => None,
            Some(session) => match self.core.instrument_id(session) {
                Some(i) => Some(i),
                None => return self.reply(m.comp_id, status::unknown_session(&req_id, session)),
            },
        };
        if subscription == "1" && !self.status_subs.subscribe(m.comp_id, &req_id, instrument) {
            let text = "too many trading session status subscriptions for this session";
            return self.reply(m.comp_id, reports::business_reject(m.seq(), "g", "0", text));
        }
        let Ok(QueryResult::Instruments(all)) = self.core.query_blocking(Query::Instruments) else { return };
        for (i, info) in all.iter().enumerate() {
            if instrument.is_none_or(|want| want.0 as usize == i) {
                self.reply(m.comp_id, status::status(&info.spec.symbol, info.phase, Some(&req_id), false));
            }
        }
    }
}

/// A replace: OrderQty (38) is the new total quantity; the engine takes the new open quantity.
fn replace_intent(m: &Msg<'_>, order: &OrderView, cl_ord_id: &str) -> Result<Intent, String> {
    let total = parse_qty(m.get(ORDER_QTY))?;
    let open = total.checked_sub(order.cum_qty).filter(|q| *q > 0).ok_or_else(|| {
        format!("OrderQty {total} must exceed the quantity already filled ({})", order.cum_qty)
    })?;
    let price = match (m.f.non_empty(u(PRICE)), order.price) {
        (Some(p), _) => parse_price(p)?,
        (None, Some(p)) => p,
        (None, None) => return Err("a market order cannot be replaced".into()),
    };
    Ok(Intent::Amend {
        order_id: order.order_id,
        price,
        qty: open,
        client_order_id: Some(cl_ord_id.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_quantities_must_be_whole() {
        assert_eq!(parse_price("101"), Ok(101));
        assert_eq!(parse_price("101.000"), Ok(101));
        assert!(parse_price("101.5").unwrap_err().contains("whole number"));
        assert!(parse_price("abc").is_err());
        assert!(parse_price("1e400").is_err());
        assert_eq!(parse_qty("7"), Ok(7));
        assert!(parse_qty("0").is_err());
        assert!(parse_qty("-3").is_err());
        assert!(parse_qty("2.5").is_err());
    }
}
