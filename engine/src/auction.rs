//! The uniform-price uncross of a call auction: one clearing price for everyone, pro rata at
//! the margin (the rules of WORKLOADS.md's canonical semantics, as certificate markets clear).
//!
//! 1. The clearing price P maximises the executable volume V(P) = min(D(P), S(P)), D being the
//!    open buy quantity with a limit at or above P and S the sell quantity at or below; every
//!    tick is a candidate, not only the prices orders carry.
//! 2. Among those, the smallest surplus |D(P) - S(P)| wins.
//! 3. The candidates left form an interval [lo, hi] of ticks; P = floor((lo + hi) / 2) (or,
//!    configured per instrument, lo or hi).
//! 4. No uncross when V(P) = 0.
//! 5. Each side separately: price priority first; at the marginal price level the quantity left
//!    is shared pro rata to open quantity, rounded down, and the units left over go one each to
//!    the largest remainders, ties to the earlier order (or, configured per instrument, by time
//!    priority).
//!
//! The clearing price always lies between order prices, so an instrument's price band (floor
//! and forbearance price, which every order's price is checked against) bounds it too.
//! 6. Trades pair the allocated buys and sells, each side in priority order, each trade of
//!    min(remaining buy, remaining sell) at P.
//!
//! Pure functions over the orders in priority order; the engine applies the fills.

use std::collections::BTreeMap;

use crate::message::Trade;
use crate::types::{AuctionAllocation, AuctionPriceRule, OrderId, ParticipantId, Price, Qty};

/// An order as the uncross sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AuctionOrder {
    /// The order.
    pub order_id: OrderId,
    /// Its owner.
    pub participant: ParticipantId,
    /// Limit price.
    pub price: Price,
    /// Open quantity.
    pub qty: Qty,
}

/// The clearing price and volume.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Clearing {
    /// The market clearing price (MCP).
    pub price: Price,
    /// The market clearing volume (MCV).
    pub volume: Qty,
}

/// One point of the aggregate curves an operator plots: at `price`, the open buy quantity with
/// a limit at or above it and the open sell quantity with a limit at or below it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CurvePoint {
    /// A price some order carries.
    pub price: Price,
    /// D(price).
    pub demand: u128,
    /// S(price).
    pub supply: u128,
}

/// The aggregate demand and supply curves of `bids` (best first) and `asks` (best first), one
/// point per price that an order carries, ascending.
pub fn curves(bids: &[AuctionOrder], asks: &[AuctionOrder]) -> Vec<CurvePoint> {
    let points = price_points(bids, asks);
    let mut demand: u128 = points.iter().map(|p| p.1).sum();
    let mut supply = 0u128;
    points
        .iter()
        .map(|&(price, bid_qty, ask_qty)| {
            supply += ask_qty;
            let point = CurvePoint { price, demand, supply };
            demand -= bid_qty;
            point
        })
        .collect()
}

/// What one participant bought and sold in an uncross (or any set of trades).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ParticipantResult {
    /// The participant.
    pub participant: ParticipantId,
    /// Certificates bought.
    pub bought: Qty,
    /// Certificates sold.
    pub sold: Qty,
    /// Value bought, in price units times certificates.
    pub bought_value: i128,
    /// Value sold, in price units times certificates.
    pub sold_value: i128,
}

/// The per-participant results of `trades` (an uncross's, say), by participant id.
pub fn participant_results<'a>(trades: impl IntoIterator<Item = &'a Trade>) -> Vec<ParticipantResult> {
    let mut by: BTreeMap<ParticipantId, ParticipantResult> = BTreeMap::new();
    for t in trades {
        let value = i128::from(t.price) * i128::from(t.qty);
        let buyer =
            by.entry(t.buyer).or_insert(ParticipantResult { participant: t.buyer, ..Default::default() });
        buyer.bought += t.qty;
        buyer.bought_value += value;
        let seller =
            by.entry(t.seller).or_insert(ParticipantResult { participant: t.seller, ..Default::default() });
        seller.sold += t.qty;
        seller.sold_value += value;
    }
    by.into_values().collect()
}

/// One candidate price range with its demand and supply.
#[derive(Copy, Clone, Debug)]
struct Candidate {
    lo: Price,
    hi: Price,
    demand: u128,
    supply: u128,
}

impl Candidate {
    fn volume(&self) -> u128 {
        self.demand.min(self.supply)
    }
    fn surplus(&self) -> u128 {
        self.demand.abs_diff(self.supply)
    }
}

/// Finds the clearing price of `bids` (best first: price descending) and `asks` (best first:
/// price ascending) on a grid of `tick`; `None` when nothing would trade. Linear in the
/// number of orders.
pub fn clearing_price(
    bids: &[AuctionOrder],
    asks: &[AuctionOrder],
    tick: Price,
    rule: AuctionPriceRule,
) -> Option<Clearing> {
    let points = price_points(bids, asks);
    let total_demand: u128 = points.iter().map(|p| p.1).sum();
    // Walk upwards: demand at p = bids at or above p; supply at p = asks at or below p.
    let mut best: Option<Candidate> = None;
    let mut range: Option<(Price, Price)> = None;
    let (mut demand_at_or_above, mut supply_at_or_below) = (total_demand, 0u128);
    for (i, &(price, bid_qty, ask_qty)) in points.iter().enumerate() {
        supply_at_or_below += ask_qty;
        let at = Candidate { lo: price, hi: price, demand: demand_at_or_above, supply: supply_at_or_below };
        consider(&mut best, &mut range, at);
        demand_at_or_above -= bid_qty;
        // The ticks strictly between this point and the next: no order there, so the demand is
        // the bids above and the supply the asks at or below this point.
        if let Some(&(next, _, _)) = points.get(i + 1) {
            if next - price >= 2 * tick {
                let between = Candidate {
                    lo: price + tick,
                    hi: next - tick,
                    demand: demand_at_or_above,
                    supply: supply_at_or_below,
                };
                consider(&mut best, &mut range, between);
            }
        }
    }
    let best = best?;
    let (lo, hi) = range?;
    if best.volume() == 0 {
        return None;
    }
    let (lo_ticks, hi_ticks) = (lo.div_euclid(tick), hi.div_euclid(tick));
    let price = match rule {
        // floor((lo + hi) / 2) without overflowing: hi >= lo.
        AuctionPriceRule::Midpoint => (lo_ticks + (hi_ticks - lo_ticks) / 2) * tick,
        AuctionPriceRule::Lowest => lo,
        AuctionPriceRule::Highest => hi,
    };
    Some(Clearing { price, volume: best.volume() as Qty })
}

/// Price points ascending with the bid quantity and the ask quantity at each: a merge of the two
/// sides, which arrive sorted (bids best first, so walked from the back).
fn price_points(bids: &[AuctionOrder], asks: &[AuctionOrder]) -> Vec<(Price, u128, u128)> {
    let mut points: Vec<(Price, u128, u128)> = Vec::with_capacity(bids.len() + asks.len());
    let (mut b, mut a) = (bids.iter().rev().peekable(), asks.iter().peekable());
    loop {
        let next = match (b.peek(), a.peek()) {
            (Some(x), Some(y)) if x.price <= y.price => b.next().map(|o| (o.price, u128::from(o.qty), 0)),
            (Some(_), Some(_)) | (None, Some(_)) => a.next().map(|o| (o.price, 0, u128::from(o.qty))),
            (Some(_), None) => b.next().map(|o| (o.price, u128::from(o.qty), 0)),
            (None, None) => None,
        };
        let Some((price, bid_qty, ask_qty)) = next else { break };
        match points.last_mut() {
            Some(last) if last.0 == price => {
                last.1 += bid_qty;
                last.2 += ask_qty;
            }
            _ => points.push((price, bid_qty, ask_qty)),
        }
    }
    points
}

/// Keeps the best candidates (volume, then surplus) and the range of ticks they span.
fn consider(best: &mut Option<Candidate>, range: &mut Option<(Price, Price)>, c: Candidate) {
    let better = match best {
        None => true,
        Some(b) => {
            (c.volume(), std::cmp::Reverse(c.surplus())) > (b.volume(), std::cmp::Reverse(b.surplus()))
        }
    };
    let equal = best.is_some_and(|b| c.volume() == b.volume() && c.surplus() == b.surplus());
    if better {
        *best = Some(c);
        *range = Some((c.lo, c.hi));
    } else if equal {
        if let Some((lo, hi)) = range {
            *lo = (*lo).min(c.lo);
            *hi = (*hi).max(c.hi);
        }
    }
}

/// Allocates `volume` over one side's `orders` (best first) that trade at `price` (`eligible`
/// says which do): price priority, then at the marginal level pro rata with largest
/// remainders, or time priority. Writes each order's allocation into `alloc` (same indexing;
/// zero for the rest).
pub fn allocate(
    orders: &[AuctionOrder],
    volume: Qty,
    eligible: impl Fn(Price) -> bool,
    rule: AuctionAllocation,
    alloc: &mut Vec<Qty>,
) {
    alloc.clear();
    alloc.resize(orders.len(), 0);
    let mut left = volume;
    let mut start = 0;
    while left > 0 && start < orders.len() && eligible(orders[start].price) {
        let price = orders[start].price;
        let end = start + orders[start..].iter().take_while(|o| o.price == price).count();
        let level: Qty = orders[start..end].iter().map(|o| o.qty).sum();
        if level <= left {
            for i in start..end {
                alloc[i] = orders[i].qty;
            }
            left -= level;
        } else {
            match rule {
                AuctionAllocation::ProRata => {
                    pro_rata(&orders[start..end], level, left, &mut alloc[start..end])
                }
                AuctionAllocation::TimePriority => {
                    for i in start..end {
                        alloc[i] = orders[i].qty.min(left);
                        left -= alloc[i];
                    }
                }
            }
            left = 0;
        }
        start = end;
    }
}

/// Shares `share` of a level of total `level` pro rata, leftover units to the largest
/// remainders, ties to the earlier order.
fn pro_rata(orders: &[AuctionOrder], level: Qty, share: Qty, alloc: &mut [Qty]) {
    let (share, level) = (u128::from(share), u128::from(level));
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(orders.len());
    let mut given = 0u128;
    for (i, o) in orders.iter().enumerate() {
        let exact = share * u128::from(o.qty);
        let base = exact / level;
        alloc[i] = base as Qty;
        given += base;
        remainders.push((exact % level, i));
    }
    // Largest remainder first; among equals the earlier order.
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take((share - given) as usize) {
        alloc[i] += 1;
    }
}

/// Pairs the allocated buys and sells in priority order: calls `trade(buy, sell, qty)` with
/// indices into `bids` and `asks`.
pub fn pair(buy_alloc: &[Qty], sell_alloc: &[Qty], mut trade: impl FnMut(usize, usize, Qty)) {
    let (mut b, mut s) = (0, 0);
    let (mut buy_left, mut sell_left) = (0, 0);
    loop {
        while buy_left == 0 && b < buy_alloc.len() {
            buy_left = buy_alloc[b];
            if buy_left == 0 {
                b += 1;
            }
        }
        while sell_left == 0 && s < sell_alloc.len() {
            sell_left = sell_alloc[s];
            if sell_left == 0 {
                s += 1;
            }
        }
        if buy_left == 0 || sell_left == 0 {
            return;
        }
        let qty = buy_left.min(sell_left);
        trade(b, s, qty);
        buy_left -= qty;
        sell_left -= qty;
        if buy_left == 0 {
            b += 1;
        }
        if sell_left == 0 {
            s += 1;
        }
    }
}
