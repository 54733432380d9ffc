//! The engine's side of an uncross: reading the book, turning the allocation into trades and
//! fills. The rules themselves are pure functions in [`crate::auction`].

use crate::auction::{self, AuctionOrder, Clearing};
use crate::book::OrderBook;
use crate::message::{Aggressor, Event, Trade};
use crate::sink::EventSink;
use crate::types::{InstrumentId, InstrumentSpec, OrderId, ParticipantId, Price, Qty, Side};

/// The uncross's working memory, kept between uncrosses so that it stops allocating.
#[derive(Default)]
pub(crate) struct AuctionScratch {
    pub(crate) bid_levels: Vec<AuctionOrder>,
    pub(crate) ask_levels: Vec<AuctionOrder>,
    bids: Vec<AuctionOrder>,
    asks: Vec<AuctionOrder>,
    buy_alloc: Vec<Qty>,
    sell_alloc: Vec<Qty>,
    trades: Vec<(usize, usize, Qty)>,
    buy_done: Vec<Qty>,
    sell_done: Vec<Qty>,
}

impl AuctionScratch {
    /// Reads each price level's total (the clearing price needs no more: no order is read).
    pub(crate) fn read_levels(&mut self, book: &impl OrderBook) {
        for (side, levels) in [(Side::Buy, &mut self.bid_levels), (Side::Sell, &mut self.ask_levels)] {
            levels.clear();
            book.for_each_level(side, &mut |price, qty| {
                levels.push(AuctionOrder { order_id: OrderId(0), participant: ParticipantId(0), price, qty })
            });
        }
    }

    /// Reads the orders of each side down to its marginal level (the last one allocated).
    pub(crate) fn read_orders(&mut self, book: &impl OrderBook, volume: Qty) {
        let marginal = |levels: &[AuctionOrder]| {
            let mut total = 0u128;
            levels
                .iter()
                .find(|l| {
                    total += u128::from(l.qty);
                    total >= u128::from(volume)
                })
                .map(|l| l.price)
        };
        let (buy_margin, sell_margin) = (marginal(&self.bid_levels), marginal(&self.ask_levels));
        for (side, orders, margin) in
            [(Side::Buy, &mut self.bids, buy_margin), (Side::Sell, &mut self.asks, sell_margin)]
        {
            orders.clear();
            let beyond =
                |price: Price| margin.is_none_or(|m| if side == Side::Buy { price < m } else { price > m });
            book.for_each_order_while(side, &mut |o| {
                if beyond(o.price) {
                    return false;
                }
                orders.push(AuctionOrder {
                    order_id: o.order_id,
                    participant: o.participant,
                    price: o.price,
                    qty: o.leaves_qty,
                });
                true
            });
        }
    }

    /// Allocates, pairs, emits the trades and applies the fills to the book.
    pub(crate) fn trade(
        &mut self,
        book: &mut impl OrderBook,
        spec: &InstrumentSpec,
        clearing: Clearing,
        instrument: InstrumentId,
        ts_ns: u64,
        out: &mut impl EventSink,
    ) {
        let (p, volume, rule) = (clearing.price, clearing.volume, spec.auction_allocation);
        auction::allocate(&self.bids, volume, |limit| limit >= p, rule, &mut self.buy_alloc);
        auction::allocate(&self.asks, volume, |limit| limit <= p, rule, &mut self.sell_alloc);
        let trades = &mut self.trades;
        trades.clear();
        auction::pair(&self.buy_alloc, &self.sell_alloc, |b, s, q| trades.push((b, s, q)));
        // Leaves after each trade follow from the open quantities and what each order has
        // traded so far; the book takes all the fills at once afterwards.
        self.buy_done.clear();
        self.sell_done.clear();
        self.buy_done.resize(self.bids.len(), 0);
        self.sell_done.resize(self.asks.len(), 0);
        for &(b, s, qty) in &self.trades {
            let (buy, sell) = (self.bids[b], self.asks[s]);
            self.buy_done[b] += qty;
            self.sell_done[s] += qty;
            out.push(Event::Trade(Trade {
                instrument,
                price: p,
                qty,
                buy_order_id: buy.order_id,
                sell_order_id: sell.order_id,
                buyer: buy.participant,
                seller: sell.participant,
                aggressor: Aggressor::Auction,
                buy_leaves_qty: buy.qty - self.buy_done[b],
                sell_leaves_qty: sell.qty - self.sell_done[s],
                ts_ns,
            }));
        }
        // The allocations never exceed the open quantities they were computed from. Only the
        // orders up to the last one allocated are walked.
        let prefix = |alloc: &[Qty]| alloc.iter().rposition(|q| *q > 0).map_or(0, |i| i + 1);
        book.fill_in_priority(Side::Buy, &self.buy_alloc[..prefix(&self.buy_alloc)]);
        book.fill_in_priority(Side::Sell, &self.sell_alloc[..prefix(&self.sell_alloc)]);
    }
}
