//! Outgoing FIX messages built from the gateway's order updates: ExecutionReport (8),
//! OrderCancelReject (9), BusinessMessageReject (j), and the mapping of the engine's reject
//! codes onto FIX reasons.
//!
//! Every reject carries the engine's stable code and text in Text (58), as
//! `<text> (cccx code <n>)`: the FIX reason enumerations are coarser than the engine's.

use cccx_engine::Side;

use super::tags::*;
use super::wire::OutMsg;
use crate::orders::{ExecKind, OrderStatus, OrderUpdate, OrderView};

/// What the gateway remembers of a cancel or replace request until the engine answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// The request's ClOrdID (11).
    pub cl_ord_id: String,
    /// The order's ClOrdID when the request was made (41).
    pub orig_cl_ord_id: String,
    /// A replace (`true`) or a cancel.
    pub amend: bool,
}

/// OrdStatus (39).
pub fn ord_status(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::New => "0",
        OrderStatus::PartiallyFilled => "1",
        OrderStatus::Filled => "2",
        OrderStatus::Cancelled => "4",
        OrderStatus::Expired => "C",
        OrderStatus::Rejected => "8",
    }
}

/// Side (54).
pub fn side_code(side: Side) -> &'static str {
    match side {
        Side::Buy => "1",
        Side::Sell => "2",
    }
}

fn tif_code(tif: &str) -> &'static str {
    match tif {
        "day" => "0",
        "ioc" => "3",
        "fok" => "4",
        _ => "1",
    }
}

/// OrdRejReason (103) for an engine reject code.
pub fn ord_rej_reason(code: u16) -> &'static str {
    match code {
        1 => "1",            // unknown instrument: unknown symbol
        2 | 14 | 20 => "11", // order type, phase, market buy: unsupported characteristic
        3 | 5 => "13",       // zero or not a lot multiple: incorrect quantity
        4 | 17 | 18 => "3",  // above max, holdings, funds: order exceeds limit
        9 => "6",            // duplicate order
        10 | 11 => "5",      // unknown order
        15 => "2",           // outside the trading window: exchange closed
        19 => "0",           // suspended: exchange option
        _ => "99",           // price checks, post-only, FOK and the rest: other
    }
}

/// CxlRejReason (102) for an engine reject code.
pub fn cxl_rej_reason(code: u16) -> &'static str {
    match code {
        10 => "0",      // no longer in the book: too late to cancel
        11 => "1",      // someone else's order: unknown order
        15 | 19 => "2", // exchange option
        _ => "99",
    }
}

/// `<text> (cccx code <n>)`.
pub fn reason_text(text: &str, code: u16) -> String {
    format!("{text} (cccx code {code})")
}

/// The order's fields every ExecutionReport carries.
fn order_fields(m: &mut OutMsg, o: &OrderView) {
    m.set(ORDER_ID, o.order_id)
        .set(SYMBOL, &*o.symbol)
        .set(SIDE, side_code(o.side()))
        .set(ORDER_QTY, o.qty)
        .set(ORD_TYPE, if o.order_type == "market" { "1" } else { "2" })
        .set(TIME_IN_FORCE, tif_code(o.tif))
        .set(ORD_STATUS, ord_status(o.status))
        .set(LEAVES_QTY, o.leaves_qty)
        .set(CUM_QTY, o.cum_qty)
        .set(TRANSACT_TIME, UtcTimestamp(o.updated_ns));
    match o.avg_px {
        Some(d) => m.set(AVG_PX, d.normalize()),
        None => m.set(AVG_PX, 0),
    };
    if let Some(p) = o.price {
        m.set(PRICE, p);
    }
}

/// The ExecutionReport (or OrderCancelReject) for an order update. `pending` is the cancel or
/// replace request the update answers, if any.
pub fn for_update(u: &OrderUpdate, pending: Option<&PendingRequest>) -> OutMsg {
    if u.exec == ExecKind::CancelRejected {
        return cancel_reject_for(u, pending);
    }
    let mut m = OutMsg::new("8");
    let exec_type = match u.exec {
        ExecKind::New => "0",
        ExecKind::Trade => "F",
        ExecKind::Cancelled => "4",
        ExecKind::Replaced => "5",
        ExecKind::Rejected => "8",
        ExecKind::Expired => "C",
        ExecKind::CancelRejected => unreachable!("handled above"),
    };
    m.set(EXEC_ID, &u.exec_id).set(EXEC_TYPE, exec_type);
    order_fields(&mut m, &u.order);
    match (u.exec, pending) {
        (ExecKind::Cancelled, Some(p)) => {
            m.set(CL_ORD_ID, &p.cl_ord_id).set(ORIG_CL_ORD_ID, &p.orig_cl_ord_id);
        }
        (ExecKind::Replaced, Some(p)) => {
            m.set(CL_ORD_ID, &u.order.client_order_id).set(ORIG_CL_ORD_ID, &p.orig_cl_ord_id);
        }
        _ => {
            m.set(CL_ORD_ID, &u.order.client_order_id);
        }
    }
    if let (Some(px), Some(qty)) = (u.last_px, u.last_qty) {
        m.set(LAST_PX, px).set(LAST_QTY, qty);
    }
    if let Some(r) = &u.reason {
        if u.exec == ExecKind::Rejected {
            m.set(ORD_REJ_REASON, ord_rej_reason(r.code));
        }
        m.set(TEXT, reason_text(r.text, r.code));
    }
    m
}

fn cancel_reject_for(u: &OrderUpdate, pending: Option<&PendingRequest>) -> OutMsg {
    let (cl_ord_id, orig) = match pending {
        Some(p) => (p.cl_ord_id.clone(), p.orig_cl_ord_id.clone()),
        None => (u.order.client_order_id.clone(), u.order.client_order_id.clone()),
    };
    let (code, text) = u.reason.map_or((0, "refused"), |r| (r.code, r.text));
    cancel_reject(CancelReject {
        order_id: Some(u.order.order_id),
        cl_ord_id,
        orig_cl_ord_id: orig,
        status: Some(u.order.status),
        amend: u.amend,
        reason: cxl_rej_reason(code),
        text: reason_text(text, code),
    })
}

/// An OrderCancelReject's content.
#[derive(Clone, Debug)]
pub struct CancelReject {
    /// The order, if known.
    pub order_id: Option<u64>,
    /// The request's ClOrdID.
    pub cl_ord_id: String,
    /// Its OrigClOrdID.
    pub orig_cl_ord_id: String,
    /// The order's status, if known (unknown orders report Rejected).
    pub status: Option<OrderStatus>,
    /// Replace (`true`) or cancel.
    pub amend: bool,
    /// CxlRejReason.
    pub reason: &'static str,
    /// Text.
    pub text: String,
}

/// OrderCancelReject (9).
pub fn cancel_reject(r: CancelReject) -> OutMsg {
    let mut m = OutMsg::new("9");
    m.set(ORDER_ID, r.order_id.map_or_else(|| "NONE".to_string(), |id| id.to_string()))
        .set(CL_ORD_ID, r.cl_ord_id)
        .set(ORIG_CL_ORD_ID, r.orig_cl_ord_id)
        .set(ORD_STATUS, r.status.map_or("8", ord_status))
        .set(CXL_REJ_RESPONSE_TO, if r.amend { "2" } else { "1" })
        .set(CXL_REJ_REASON, r.reason)
        .set(TEXT, r.text);
    m
}

/// A NewOrderSingle refused by the gateway before it reached the engine.
#[derive(Clone, Debug)]
pub struct NewReject<'a> {
    /// ExecID (unique: built from the session and the message's sequence number).
    pub exec_id: String,
    /// ClOrdID as sent.
    pub cl_ord_id: &'a str,
    /// Symbol as sent.
    pub symbol: &'a str,
    /// Side as sent (FIX code).
    pub side: &'a str,
    /// OrderQty as sent.
    pub qty: &'a str,
    /// OrdRejReason.
    pub reason: &'static str,
    /// Text.
    pub text: String,
}

/// ExecutionReport (8) rejecting a new order that has no order id: OrderID `NONE`.
pub fn new_reject(r: NewReject<'_>) -> OutMsg {
    let mut m = OutMsg::new("8");
    m.set(ORDER_ID, "NONE")
        .set(CL_ORD_ID, r.cl_ord_id)
        .set(EXEC_ID, r.exec_id)
        .set(EXEC_TYPE, "8")
        .set(ORD_STATUS, "8")
        .set(SYMBOL, r.symbol)
        .set(SIDE, r.side)
        .set(LEAVES_QTY, 0)
        .set(CUM_QTY, 0)
        .set(AVG_PX, 0)
        .set(ORD_REJ_REASON, r.reason)
        .set(TEXT, r.text)
        .set(TRANSACT_TIME, UtcTimestamp(now_ns()));
    if r.qty.parse::<f64>().is_ok() {
        m.set(ORDER_QTY, r.qty);
    }
    m
}

/// ExecutionReport with ExecType I (order status), for an OrderStatusRequest.
pub fn status_report(o: &OrderView, exec_id: String, status_req_cl_ord_id: Option<&str>) -> OutMsg {
    let mut m = OutMsg::new("8");
    m.set(EXEC_ID, exec_id).set(EXEC_TYPE, "I").set(CL_ORD_ID, &o.client_order_id);
    order_fields(&mut m, o);
    if let Some(id) = status_req_cl_ord_id {
        m.set(790, id); // OrdStatusReqID
    }
    m
}

/// BusinessMessageReject (j).
pub fn business_reject(ref_seq: Option<&str>, ref_msg_type: &str, reason: &str, text: &str) -> OutMsg {
    let mut m = OutMsg::new("j");
    if let Some(seq) = ref_seq.filter(|s| s.parse::<u64>().is_ok()) {
        m.set(REF_SEQ_NUM, seq);
    }
    m.set(REF_MSG_TYPE, ref_msg_type).set(BUSINESS_REJECT_REASON, reason).set(TEXT, text);
    m
}

/// Nanoseconds since the epoch, now (for messages that report no engine time).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `YYYYMMDD-HH:MM:SS.sss` (UTCTimestamp) of nanoseconds since the epoch.
pub fn utc_timestamp(ns: u64) -> String {
    UtcTimestamp(ns).to_string()
}

/// A UTCTimestamp (`YYYYMMDD-HH:MM:SS.sss`) of nanoseconds since the epoch, written where it is
/// displayed (a report's field) without a string of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTimestamp(pub u64);

impl std::fmt::Display for UtcTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        let secs = (ns / 1_000_000_000) as i64;
        let ms = (ns / 1_000_000) % 1000;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}{month:02}{day:02}-{:02}:{:02}:{:02}.{ms:03}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccx_engine::RejectReason;

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc_timestamp(0), "19700101-00:00:00.000");
        // 2026-02-28 13:45:07.123 UTC
        assert_eq!(utc_timestamp(1_772_286_307_123_000_000), "20260228-13:45:07.123");
    }

    #[test]
    fn every_engine_reject_maps_to_a_fix_reason() {
        let ord = ["0", "1", "2", "3", "5", "6", "11", "13", "99"];
        let cxl = ["0", "1", "2", "99"];
        for r in RejectReason::ALL {
            assert!(ord.contains(&ord_rej_reason(r.code())), "{r:?}");
            assert!(cxl.contains(&cxl_rej_reason(r.code())), "{r:?}");
        }
        assert_eq!(ord_rej_reason(RejectReason::UnknownInstrument.code()), "1");
        assert_eq!(reason_text("quantity is zero", 3), "quantity is zero (cccx code 3)");
    }
}
