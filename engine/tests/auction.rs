//! The uncross against a brute-force reference that tries every tick, allocates by repeated
//! single units and pairs unit by unit, on random books: ties, single-sided books, one-tick
//! books, several levels at the margin.

use cccx_engine::auction::{allocate, clearing_price, curves, pair, AuctionOrder, Clearing, CurvePoint};
use cccx_engine::{AuctionAllocation, AuctionPriceRule, OrderId, ParticipantId, Price, Qty};
use proptest::prelude::*;

/// The clearing price by brute force over every tick from the lowest to the highest price.
fn reference_clearing(
    bids: &[AuctionOrder],
    asks: &[AuctionOrder],
    tick: Price,
    rule: AuctionPriceRule,
) -> Option<Clearing> {
    let prices = bids.iter().chain(asks).map(|o| o.price);
    let (lo, hi) = (prices.clone().min()?, prices.max()?);
    let mut best: Option<(u64, u64)> = None; // (volume, surplus)
    let mut span: Vec<Price> = Vec::new();
    let mut p = lo;
    while p <= hi {
        let demand: u64 = bids.iter().filter(|o| o.price >= p).map(|o| o.qty).sum();
        let supply: u64 = asks.iter().filter(|o| o.price <= p).map(|o| o.qty).sum();
        let key = (demand.min(supply), demand.abs_diff(supply));
        let better = best.is_none_or(|b| key.0 > b.0 || (key.0 == b.0 && key.1 < b.1));
        if better {
            best = Some(key);
            span = vec![p];
        } else if best == Some(key) {
            span.push(p);
        }
        p += tick;
    }
    let (volume, _) = best?;
    if volume == 0 {
        return None;
    }
    let (first, last) = (span[0] / tick, span[span.len() - 1] / tick);
    let price = match rule {
        AuctionPriceRule::Midpoint => (first + last).div_euclid(2) * tick,
        AuctionPriceRule::Lowest => first * tick,
        AuctionPriceRule::Highest => last * tick,
    };
    Some(Clearing { price, volume })
}

/// Allocation by handing out one unit at a time: whole better levels first; at the margin each
/// order's exact share is computed, rounded down, and the rest handed out one unit at a time to
/// the largest remainder, the earlier order first.
fn reference_allocation(
    orders: &[AuctionOrder],
    volume: Qty,
    eligible: impl Fn(Price) -> bool,
    rule: AuctionAllocation,
) -> Vec<Qty> {
    let mut alloc = vec![0; orders.len()];
    let mut left = volume;
    if rule == AuctionAllocation::TimePriority {
        // Price priority then time priority is simply the priority order.
        for (i, o) in orders.iter().enumerate().filter(|(_, o)| eligible(o.price)) {
            alloc[i] = o.qty.min(left);
            left -= alloc[i];
        }
        return alloc;
    }
    let mut prices: Vec<Price> = Vec::new();
    for o in orders.iter().filter(|o| eligible(o.price)) {
        if !prices.contains(&o.price) {
            prices.push(o.price);
        }
    }
    for price in prices {
        let members: Vec<usize> = (0..orders.len()).filter(|&i| orders[i].price == price).collect();
        let level: Qty = members.iter().map(|&i| orders[i].qty).sum();
        if level <= left {
            members.iter().for_each(|&i| alloc[i] = orders[i].qty);
            left -= level;
            continue;
        }
        let mut remainders = Vec::new();
        for &i in &members {
            alloc[i] = left * orders[i].qty / level;
            remainders.push((left * orders[i].qty % level, i));
        }
        let mut rest = left - members.iter().map(|&i| alloc[i]).sum::<Qty>();
        while rest > 0 {
            let &(_, i) = remainders.iter().max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1))).unwrap();
            alloc[i] += 1;
            remainders.retain(|&(_, j)| j != i);
            rest -= 1;
        }
        break;
    }
    alloc
}

/// Pairs by units: the k-th allocated buy unit trades with the k-th allocated sell unit.
fn reference_pairs(buy_alloc: &[Qty], sell_alloc: &[Qty]) -> Vec<(usize, usize, Qty)> {
    let units = |alloc: &[Qty]| -> Vec<usize> {
        alloc.iter().enumerate().flat_map(|(i, &q)| std::iter::repeat_n(i, q as usize)).collect()
    };
    let (buys, sells) = (units(buy_alloc), units(sell_alloc));
    let mut trades: Vec<(usize, usize, Qty)> = Vec::new();
    for (&b, &s) in buys.iter().zip(&sells) {
        match trades.last_mut() {
            Some(last) if last.0 == b && last.1 == s => last.2 += 1,
            _ => trades.push((b, s, 1)),
        }
    }
    trades
}

/// A side of a book in priority order (best price first, then time).
fn side(raw: RawSide, buy: bool, id_base: u64) -> Vec<AuctionOrder> {
    let mut orders: Vec<AuctionOrder> = raw
        .into_iter()
        .enumerate()
        .map(|(i, (price, qty))| AuctionOrder {
            order_id: OrderId(id_base + i as u64),
            participant: ParticipantId(i as u32),
            price,
            qty,
        })
        .collect();
    // Stable sort: time order is kept within a price.
    orders.sort_by_key(|o| if buy { -o.price } else { o.price });
    orders
}

/// Raw orders of one side: (price in ticks, quantity) in time order.
type RawSide = Vec<(i64, u64)>;

fn book(max_orders: usize, ticks: i64) -> impl Strategy<Value = (RawSide, RawSide)> {
    let order = (1..=ticks, 1..30u64);
    (prop::collection::vec(order.clone(), 0..max_orders), prop::collection::vec(order, 0..max_orders))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn uncross_matches_brute_force(
        (raw_bids, raw_asks) in prop_oneof![book(12, 12), book(20, 3), book(6, 1), book(30, 40)],
        tick in prop_oneof![Just(1i64), Just(5)],
        price_rule in prop_oneof![
            4 => Just(AuctionPriceRule::Midpoint),
            1 => Just(AuctionPriceRule::Lowest),
            1 => Just(AuctionPriceRule::Highest)
        ],
        allocation in prop_oneof![4 => Just(AuctionAllocation::ProRata), 1 => Just(AuctionAllocation::TimePriority)],
    ) {
        let scale = |v: RawSide| v.into_iter().map(|(p, q)| (p * tick, q)).collect::<Vec<_>>();
        let bids = side(scale(raw_bids), true, 1);
        let asks = side(scale(raw_asks), false, 1000);
        let fast = clearing_price(&bids, &asks, tick, price_rule);
        prop_assert_eq!(fast, reference_clearing(&bids, &asks, tick, price_rule));
        let Some(Clearing { price, volume }) = fast else { return Ok(()) };
        let (mut buy_alloc, mut sell_alloc) = (Vec::new(), Vec::new());
        allocate(&bids, volume, |p| p >= price, allocation, &mut buy_alloc);
        allocate(&asks, volume, |p| p <= price, allocation, &mut sell_alloc);
        prop_assert_eq!(&buy_alloc, &reference_allocation(&bids, volume, |p| p >= price, allocation));
        prop_assert_eq!(&sell_alloc, &reference_allocation(&asks, volume, |p| p <= price, allocation));
        prop_assert_eq!(buy_alloc.iter().sum::<Qty>(), volume);
        prop_assert_eq!(sell_alloc.iter().sum::<Qty>(), volume);
        let mut trades = Vec::new();
        pair(&buy_alloc, &sell_alloc, |b, s, q| trades.push((b, s, q)));
        prop_assert_eq!(trades, reference_pairs(&buy_alloc, &sell_alloc));
    }
}

const MID: AuctionPriceRule = AuctionPriceRule::Midpoint;

#[test]
fn worked_examples() {
    let order =
        |id, price, qty| AuctionOrder { order_id: OrderId(id), participant: ParticipantId(0), price, qty };
    // Demand 10 at 105 and above, supply 4 at 100 and 6 at 103: volume 10 from 103 to 105,
    // surplus 0 over 103..=105 -> the middle, 104.
    let bids = [order(1, 105, 10)];
    let asks = [order(2, 100, 4), order(3, 103, 6)];
    assert_eq!(clearing_price(&bids, &asks, 1, MID), Some(Clearing { price: 104, volume: 10 }));
    assert_eq!(
        clearing_price(&bids, &asks, 1, AuctionPriceRule::Lowest),
        Some(Clearing { price: 103, volume: 10 })
    );
    assert_eq!(
        clearing_price(&bids, &asks, 1, AuctionPriceRule::Highest),
        Some(Clearing { price: 105, volume: 10 })
    );
    // An even width: candidates 103..=104 -> floor(103.5) = 103.
    let bids = [order(1, 104, 10)];
    assert_eq!(clearing_price(&bids, &asks, 1, MID), Some(Clearing { price: 103, volume: 10 }));
    // One-sided: nothing.
    assert_eq!(clearing_price(&bids, &[], 1, MID), None);
    // Not crossing: nothing.
    assert_eq!(clearing_price(&[order(1, 99, 5)], &asks, 1, MID), None);
    // Pro rata at the margin: 10 to share over 7, 7 and 6 (level 20): 3.5, 3.5, 3 -> 3, 3, 3
    // and one unit left to the largest remainder (a tie between the first two: the earlier).
    let level = [order(1, 100, 7), order(2, 100, 7), order(3, 100, 6)];
    let mut alloc = Vec::new();
    allocate(&level, 10, |_| true, AuctionAllocation::ProRata, &mut alloc);
    assert_eq!(alloc, vec![4, 3, 3]);
    // The curves an operator plots: at each price, demand at or above and supply at or below.
    let points = |v: &[(i64, u128, u128)]| {
        v.iter().map(|&(price, demand, supply)| CurvePoint { price, demand, supply }).collect::<Vec<_>>()
    };
    assert_eq!(curves(&[order(1, 105, 10)], &asks), points(&[(100, 10, 4), (103, 10, 10), (105, 10, 10)]));
    // Time priority: the earlier orders first.
    allocate(&level, 10, |_| true, AuctionAllocation::TimePriority, &mut alloc);
    assert_eq!(alloc, vec![7, 3, 0]);
}
