//! Trading phases over FIX: TradingSessionStatusRequest (g) answered by TradingSessionStatus
//! (h), and, for subscribers, an unsolicited TradingSessionStatus at every phase change.
//!
//! Each instrument's book has its own phases, so each instrument is a FIX trading session:
//! TradingSessionID (336) is the instrument's symbol and TradingSessionSubID (625) the
//! exchange's phase name (`continuous`, `call`, `call_closed`, `uncrossed`, `closed`).
//! TradSesStatus (340): continuous 2 (open), call 4 (pre-open: the bid window is open, orders
//! rest until the uncross), call_closed 5 (pre-close: the window has closed, the uncross is
//! due), uncrossed and closed 3 (closed). A request without TradingSessionID is answered for
//! every instrument. SubscriptionRequestType 0 answers once, 1 answers and subscribes, 2 ends
//! the subscription of that TradSesReqID. An unknown TradingSessionID is answered with
//! TradSesStatus 6 (request rejected) and TradSesStatusRejReason 1.

use cccx_engine::InstrumentId;

use super::tags::*;
use super::wire::OutMsg;

/// Subscriptions a session may hold at once.
pub const STATUS_SUBSCRIPTIONS_PER_SESSION_MAX: usize = 16;

/// TradSesStatus (340) of a phase name.
pub fn trad_ses_status(phase: &str) -> &'static str {
    match phase {
        "continuous" => "2",
        "call" => "4",
        "call_closed" => "5",
        _ => "3",
    }
}

/// A TradingSessionStatus (h) for an instrument in a phase; `req_id` when it answers or
/// follows a request.
pub fn status(symbol: &str, phase: &str, req_id: Option<&str>, unsolicited: bool) -> OutMsg {
    let mut m = OutMsg::new("h");
    if let Some(id) = req_id {
        m.set(TRAD_SES_REQ_ID, id);
    }
    m.set(TRADING_SESSION_ID, symbol)
        .set(TRADING_SESSION_SUB_ID, phase)
        .set(UNSOLICITED_INDICATOR, if unsolicited { "Y" } else { "N" })
        .set(TRAD_SES_STATUS, trad_ses_status(phase));
    m
}

/// A TradingSessionStatus refusing a request for an unknown TradingSessionID.
pub fn unknown_session(req_id: &str, session: &str) -> OutMsg {
    let mut m = OutMsg::new("h");
    m.set(TRAD_SES_REQ_ID, req_id)
        .set(TRADING_SESSION_ID, session)
        .set(TRAD_SES_STATUS, "6")
        .set(TRAD_SES_STATUS_REJ_REASON, "1")
        .set(
            TEXT,
            format!(
                "unknown TradingSessionID {session:?}: the trading sessions are the instruments' symbols"
            ),
        );
    m
}

/// Who asked to hear of phase changes.
#[derive(Default)]
pub(crate) struct StatusSubscriptions {
    /// (CompID, TradSesReqID, one instrument or all).
    subs: Vec<(String, String, Option<InstrumentId>)>,
}

impl StatusSubscriptions {
    /// Subscribes; `false` when the session holds too many subscriptions already.
    pub(crate) fn subscribe(
        &mut self,
        comp_id: &str,
        req_id: &str,
        instrument: Option<InstrumentId>,
    ) -> bool {
        self.subs.retain(|(c, r, _)| !(c == comp_id && r == req_id));
        if self.subs.iter().filter(|(c, _, _)| c == comp_id).count() >= STATUS_SUBSCRIPTIONS_PER_SESSION_MAX {
            return false;
        }
        self.subs.push((comp_id.into(), req_id.into(), instrument));
        true
    }

    /// Ends one subscription.
    pub(crate) fn unsubscribe(&mut self, comp_id: &str, req_id: &str) {
        self.subs.retain(|(c, r, _)| !(c == comp_id && r == req_id));
    }

    /// Ends every subscription of a session (it logged out or was cut off).
    pub(crate) fn drop_session(&mut self, comp_id: &str) {
        self.subs.retain(|(c, _, _)| c != comp_id);
    }

    /// The (CompID, TradSesReqID) pairs to tell of a phase change of `instrument`.
    pub(crate) fn for_instrument(&self, instrument: InstrumentId) -> Vec<(String, String)> {
        self.subs
            .iter()
            .filter(|(_, _, i)| i.is_none_or(|i| i == instrument))
            .map(|(c, r, _)| (c.clone(), r.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_map_to_fix_session_statuses() {
        let m = status("CCC-2026-O", "call", Some("r1"), false);
        assert_eq!(m.msg_type, "h");
        assert_eq!(m.get(TRAD_SES_STATUS), Some("4"));
        assert_eq!(m.get(TRADING_SESSION_ID), Some("CCC-2026-O"));
        assert_eq!(trad_ses_status("continuous"), "2");
        assert_eq!(trad_ses_status("uncrossed"), "3");
        let mut subs = StatusSubscriptions::default();
        assert!(subs.subscribe("A", "r1", None));
        assert!(subs.subscribe("B", "r2", Some(InstrumentId(1))));
        assert_eq!(subs.for_instrument(InstrumentId(0)), vec![("A".to_string(), "r1".to_string())]);
        assert_eq!(subs.for_instrument(InstrumentId(1)).len(), 2);
        subs.drop_session("A");
        subs.unsubscribe("B", "r2");
        assert!(subs.for_instrument(InstrumentId(1)).is_empty());
    }
}
