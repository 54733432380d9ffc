//! Running a workload under the canonical semantics and writing the canonical outputs
//! (WORKLOADS.md): the trades in the order they happen and the final book.

use std::io::{self, Write};

use cccx_engine::{Engine, Event, InstrumentId, OrderBook, Side, Trade};

use crate::flow::Flow;

/// Header of the canonical trades file.
pub const TRADES_HEADER: &str = "trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side";
/// Header of the canonical book file.
pub const BOOK_HEADER: &str = "instrument,side,price,order_id,leaves_qty";

/// Runs every command of `flow` through a new engine and returns it with the trades.
pub fn run<B: OrderBook>(flow: &Flow) -> anyhow::Result<(Engine<B>, Vec<Trade>)> {
    let mut engine = Engine::<B>::new(flow.canonical_specs())?;
    let mut events = Vec::with_capacity(1024);
    let mut trades = Vec::new();
    for cmd in &flow.commands {
        events.clear();
        engine.apply(cmd, &mut events);
        trades.extend(events.iter().filter_map(|e| match e {
            Event::Trade(t) => Some(*t),
            _ => None,
        }));
    }
    Ok((engine, trades))
}

/// Writes the canonical trades file.
pub fn write_trades(mut w: impl Write, instruments: &[String], trades: &[Trade]) -> io::Result<()> {
    writeln!(w, "{TRADES_HEADER}")?;
    let mut buf = itoa::Buffer::new();
    for (n, t) in trades.iter().enumerate() {
        w.write_all(buf.format(n + 1).as_bytes())?;
        w.write_all(b",")?;
        w.write_all(instruments[t.instrument.0 as usize].as_bytes())?;
        for v in [t.price as i128, t.qty as i128, t.buy_order_id.0 as i128, t.sell_order_id.0 as i128] {
            w.write_all(b",")?;
            w.write_all(buf.format(v).as_bytes())?;
        }
        w.write_all(b",")?;
        w.write_all(t.aggressor.as_str().as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Writes the canonical final book: instruments sorted by name, bids then asks, each in
/// priority order.
pub fn write_book<B: OrderBook>(mut w: impl Write, engine: &Engine<B>) -> io::Result<()> {
    writeln!(w, "{BOOK_HEADER}")?;
    let mut ids: Vec<usize> = (0..engine.instruments().len()).collect();
    ids.sort_by(|a, b| engine.instruments()[*a].symbol.cmp(&engine.instruments()[*b].symbol));
    let mut result = Ok(());
    for i in ids {
        let name = &engine.instruments()[i].symbol;
        let Some(book) = engine.book(InstrumentId(i as u32)) else { continue };
        for side in [Side::Buy, Side::Sell] {
            book.for_each_order(side, &mut |o| {
                if result.is_ok() {
                    result =
                        writeln!(w, "{name},{},{},{},{}", side.as_str(), o.price, o.order_id, o.leaves_qty);
                }
            });
        }
    }
    result?;
    w.flush()
}
