//! Market data over FIX: MarketDataRequest (V) answered by a full snapshot (W) and, for
//! subscriptions, incremental refreshes (X).
//!
//! - Book entries are price levels (aggregated quantity), MDEntryType 0 (bid) and 1 (offer).
//!   Increments say MDUpdateAction 0 (a new level), 1 (a level's quantity changed; the size is
//!   the new total, not a delta) or 2 (the level is gone). MarketDepth limits the snapshot;
//!   increments cover every level.
//! - Trades of continuous trading are MDEntryType 2 (trade) entries with price and size.
//! - An uncross (the call auction's result) is one MDEntryType 2 entry with the market clearing
//!   price (MDEntryPx) and volume (MDEntrySize) and TradeCondition (277) `R` (opening/auction
//!   price): FIX 4.4 has no auction entry type (FIX 5.0's MDEntryType `Q`, auction clearing
//!   price, would replace it). The individual auction fills are not repeated as trade entries
//!   (they add up to the clearing volume); their owners get them as ExecutionReports. An uncross
//!   that crossed nothing has size 0 and no price.
//! - Snapshot and increments are consistent: the router handles requests and published records
//!   on one thread, so a snapshot taken while records are still queued is followed by their
//!   increments; as book increments carry absolute level sizes, a client that applies them to
//!   the snapshot converges on the book.

use std::collections::BTreeMap;

use cccx_engine::{InstrumentId, Price, Qty};

use super::tags::*;
use super::wire::{OutGroup, OutMsg};
use crate::orders::{MarketEvent, Published};

/// Subscriptions a session may hold at once.
pub const SUBSCRIPTIONS_PER_SESSION_MAX: usize = 16;
/// Levels per side of a snapshot when MarketDepth is 0 (full book).
pub const SNAPSHOT_DEPTH_MAX: usize = 1000;

const INC_ORDER: &[i32] =
    &[MD_UPDATE_ACTION, MD_ENTRY_TYPE, SYMBOL, MD_ENTRY_PX, MD_ENTRY_SIZE, TRADE_CONDITION];
const FULL_ORDER: &[i32] = &[MD_ENTRY_TYPE, MD_ENTRY_PX, MD_ENTRY_SIZE, TRADE_CONDITION];

/// Which entry types a subscriber asked for: bids, offers, trades.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryTypes {
    /// MDEntryType 0.
    pub bids: bool,
    /// 1.
    pub offers: bool,
    /// 2.
    pub trades: bool,
}

impl EntryTypes {
    fn wants(&self, entry_type: &str) -> bool {
        match entry_type {
            "0" => self.bids,
            "1" => self.offers,
            _ => self.trades,
        }
    }
}

#[derive(Clone, Debug)]
struct Subscription {
    comp_id: String,
    md_req_id: String,
    instrument: InstrumentId,
    types: EntryTypes,
}

/// One entry of an incremental refresh, before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    instrument: InstrumentId,
    entry_type: &'static str,
    fields: Vec<(i32, String)>,
}

/// Subscriptions and the mirror of the books' levels (to tell new levels from changed ones).
#[derive(Default)]
pub(crate) struct MarketData {
    subs: Vec<Subscription>,
    /// Per instrument: bids, asks.
    levels: Vec<[BTreeMap<Price, Qty>; 2]>,
    symbols: Vec<String>,
}

impl MarketData {
    /// For instruments with these symbols.
    pub(crate) fn new(symbols: Vec<String>) -> MarketData {
        MarketData {
            subs: Vec::new(),
            levels: symbols.iter().map(|_| [BTreeMap::new(), BTreeMap::new()]).collect(),
            symbols,
        }
    }

    /// Replaces the level mirror of an instrument with a full book (at start, after a lag).
    pub(crate) fn seed(&mut self, instrument: InstrumentId, bids: &[(Price, Qty)], asks: &[(Price, Qty)]) {
        if let Some(l) = self.levels.get_mut(instrument.0 as usize) {
            l[0] = bids.iter().copied().collect();
            l[1] = asks.iter().copied().collect();
        }
    }

    /// Subscribes; `Err` with MDReqRejReason and text when refused.
    pub(crate) fn subscribe(
        &mut self,
        comp_id: &str,
        md_req_id: &str,
        instrument: InstrumentId,
        types: EntryTypes,
    ) -> Result<(), (&'static str, &'static str)> {
        if self
            .subs
            .iter()
            .any(|s| s.comp_id == comp_id && s.md_req_id == md_req_id && s.instrument == instrument)
        {
            return Err(("1", "duplicate MDReqID"));
        }
        if self.subs.iter().filter(|s| s.comp_id == comp_id).count() >= SUBSCRIPTIONS_PER_SESSION_MAX {
            return Err(("2", "too many market data subscriptions for this session"));
        }
        self.subs.push(Subscription {
            comp_id: comp_id.into(),
            md_req_id: md_req_id.into(),
            instrument,
            types,
        });
        Ok(())
    }

    /// Ends a subscription (SubscriptionRequestType 2); whether there was one.
    pub(crate) fn unsubscribe(&mut self, comp_id: &str, md_req_id: &str) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| !(s.comp_id == comp_id && s.md_req_id == md_req_id));
        self.subs.len() != before
    }

    /// Ends every subscription of a session (it logged out).
    pub(crate) fn drop_session(&mut self, comp_id: &str) {
        self.subs.retain(|s| s.comp_id != comp_id);
    }

    /// Every subscription, as (CompID, MDReqID, instrument, types), for snapshots after a lag.
    pub(crate) fn subscriptions(&self) -> Vec<(String, String, InstrumentId, EntryTypes)> {
        self.subs.iter().map(|s| (s.comp_id.clone(), s.md_req_id.clone(), s.instrument, s.types)).collect()
    }

    /// The incremental refreshes a published record causes: (CompID, message).
    pub(crate) fn on_published(&mut self, p: &Published) -> Vec<(String, OutMsg)> {
        let mut entries = Vec::new();
        for e in &p.market {
            if let Some(entry) = self.entry(e) {
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in &self.subs {
            let mine: Vec<Vec<(i32, String)>> = entries
                .iter()
                .filter(|e| e.instrument == s.instrument && s.types.wants(e.entry_type))
                .map(|e| e.fields.clone())
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut m = OutMsg::new("X");
            m.set(MD_REQ_ID, &s.md_req_id);
            m.groups.push(OutGroup {
                count_tag: NO_MD_ENTRIES,
                delimiter: MD_UPDATE_ACTION,
                order: INC_ORDER,
                entries: mine,
            });
            out.push((s.comp_id.clone(), m));
        }
        out
    }

    fn instrument_of(&self, symbol: &str) -> Option<InstrumentId> {
        self.symbols.iter().position(|s| s == symbol).map(|i| InstrumentId(i as u32))
    }

    fn entry(&mut self, e: &MarketEvent) -> Option<Entry> {
        match e {
            MarketEvent::Level { symbol, side, price, qty } => {
                let instrument = self.instrument_of(symbol)?;
                let (index, entry_type) = if *side == "buy" { (0, "0") } else { (1, "1") };
                let book = &mut self.levels.get_mut(instrument.0 as usize)?[index];
                let old = book.get(price).copied();
                let action = match (old, *qty) {
                    (None, 0) => return None,
                    (Some(_), 0) => {
                        book.remove(price);
                        "2"
                    }
                    (None, q) => {
                        book.insert(*price, q);
                        "0"
                    }
                    (Some(_), q) => {
                        book.insert(*price, q);
                        "1"
                    }
                };
                let mut fields = vec![
                    (MD_UPDATE_ACTION, action.to_string()),
                    (MD_ENTRY_TYPE, entry_type.to_string()),
                    (SYMBOL, symbol.to_string()),
                    (MD_ENTRY_PX, price.to_string()),
                ];
                if action != "2" {
                    fields.push((MD_ENTRY_SIZE, qty.to_string()));
                }
                Some(Entry { instrument, entry_type, fields })
            }
            MarketEvent::Trade(t) if t.aggressor != "auction" => {
                let instrument = self.instrument_of(&t.symbol)?;
                let fields = vec![
                    (MD_UPDATE_ACTION, "0".to_string()),
                    (MD_ENTRY_TYPE, "2".to_string()),
                    (SYMBOL, t.symbol.to_string()),
                    (MD_ENTRY_PX, t.price.to_string()),
                    (MD_ENTRY_SIZE, t.qty.to_string()),
                ];
                Some(Entry { instrument, entry_type: "2", fields })
            }
            MarketEvent::Auction { symbol, price, volume, .. } => {
                let instrument = self.instrument_of(symbol)?;
                let mut fields = vec![
                    (MD_UPDATE_ACTION, "0".to_string()),
                    (MD_ENTRY_TYPE, "2".to_string()),
                    (SYMBOL, symbol.to_string()),
                ];
                if let Some(p) = price {
                    fields.push((MD_ENTRY_PX, p.to_string()));
                }
                fields.push((MD_ENTRY_SIZE, volume.to_string()));
                fields.push((TRADE_CONDITION, "R".to_string()));
                Some(Entry { instrument, entry_type: "2", fields })
            }
            MarketEvent::Trade(_) | MarketEvent::Phase { .. } => None,
        }
    }
}

/// A full snapshot (W) of a book: levels best first, and the last trade or uncross.
pub(crate) fn snapshot(
    md_req_id: &str,
    symbol: &str,
    types: EntryTypes,
    bids: &[(Price, Qty)],
    asks: &[(Price, Qty)],
    last_trade: Option<(Option<Price>, Qty, bool)>,
) -> OutMsg {
    let mut entries = Vec::new();
    let level = |t: &str, (p, q): &(Price, Qty)| {
        vec![(MD_ENTRY_TYPE, t.to_string()), (MD_ENTRY_PX, p.to_string()), (MD_ENTRY_SIZE, q.to_string())]
    };
    if types.bids {
        entries.extend(bids.iter().map(|l| level("0", l)));
    }
    if types.offers {
        entries.extend(asks.iter().map(|l| level("1", l)));
    }
    if let (true, Some((price, qty, auction))) = (types.trades, last_trade) {
        let mut e = vec![(MD_ENTRY_TYPE, "2".to_string())];
        if let Some(p) = price {
            e.push((MD_ENTRY_PX, p.to_string()));
        }
        e.push((MD_ENTRY_SIZE, qty.to_string()));
        if auction {
            e.push((TRADE_CONDITION, "R".to_string()));
        }
        entries.push(e);
    }
    let mut m = OutMsg::new("W");
    m.set(MD_REQ_ID, md_req_id).set(SYMBOL, symbol);
    if entries.is_empty() {
        m.set(NO_MD_ENTRIES, 0);
    } else {
        m.groups.push(OutGroup {
            count_tag: NO_MD_ENTRIES,
            delimiter: MD_ENTRY_TYPE,
            order: FULL_ORDER,
            entries,
        });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(side: &'static str, price: Price, qty: Qty) -> MarketEvent {
        MarketEvent::Level { symbol: "A".into(), side, price, qty }
    }

    #[test]
    fn increments_tell_new_changed_and_deleted_levels() {
        let mut md = MarketData::new(vec!["A".into()]);
        let all = EntryTypes { bids: true, offers: true, trades: true };
        md.subscribe("X1", "r1", InstrumentId(0), all).unwrap();
        assert!(md.subscribe("X1", "r1", InstrumentId(0), all).is_err());
        let p = |market| Published { seq: 1, ts_ns: 0, updates: vec![], market };
        let actions = |out: Vec<(String, OutMsg)>| -> Vec<String> {
            out[0].1.groups[0].entries.iter().map(|e| e[0].1.clone()).collect()
        };
        assert_eq!(actions(md.on_published(&p(vec![level("buy", 100, 5)]))), ["0"]);
        assert_eq!(
            actions(md.on_published(&p(vec![level("buy", 100, 7), level("sell", 101, 1)]))),
            ["1", "0"]
        );
        assert_eq!(actions(md.on_published(&p(vec![level("buy", 100, 0)]))), ["2"]);
        md.drop_session("X1");
        assert!(md.on_published(&p(vec![level("buy", 99, 1)])).is_empty());
    }
}
