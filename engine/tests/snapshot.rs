//! Snapshots rebuild an engine that behaves exactly like the original: random command streams,
//! then image and restore (in memory and through a file), then the same further commands on
//! both, with identical events, books and state hashes; for the fast and the reference book.

use cccx_engine::snapshot::{read_snapshot, state_hash, write_snapshot};
use cccx_engine::{
    Book, Command, CommandBody, Engine, EngineImage, InstrumentId, InstrumentSpec, MassCancelScope, NewOrder,
    OrderBook, OrderId, OrderType, ParticipantId, Qty, ReferenceBook, RestingOrder, Side, StpMode,
    TimeInForce,
};
use proptest::prelude::*;

/// Two small instruments: one with tick, lot, band and a tiny ladder window; one plain. Books
/// fill up at 12 orders, so `BookFull` happens.
fn specs(stp: StpMode) -> Vec<InstrumentSpec> {
    let small = |symbol| InstrumentSpec {
        max_order_qty: 20,
        resting_orders_max: 12,
        stp,
        ladder_window_ticks: 4,
        ..InstrumentSpec::canonical(symbol)
    };
    vec![
        InstrumentSpec {
            tick_size: 2,
            lot_size: 2,
            price_floor: Some(180),
            price_ceiling: Some(220),
            ..small("CCC-2026-COMPLIANCE")
        },
        small("CCC-2027-VOLUNTARY"),
    ]
}

/// A random command. Ids come from a small range, so cancels and amends often find their order,
/// and a NEW often reuses the id of a resting or a finished order.
fn command() -> impl Strategy<Value = CommandBody> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let id = || (1..40u64).prop_map(OrderId);
    let who = || (0..3u32).prop_map(ParticipantId);
    let inst = || (0..2u32).prop_map(InstrumentId);
    prop_oneof![
        8 => (id(), who(), inst(), side, 0..7u8, -8..8i64, 0..12u64, prop::bool::weighted(0.1)).prop_map(
            |(order_id, participant, instrument, side, kind, off, lots, post_only)| {
                let (order_type, tif) = match kind {
                    0..=2 => (OrderType::Limit, TimeInForce::Gtc),
                    3 => (OrderType::Limit, TimeInForce::Day),
                    4 => (OrderType::Limit, TimeInForce::Ioc),
                    5 => (OrderType::Limit, TimeInForce::Fok),
                    _ => (OrderType::Market, TimeInForce::Ioc),
                };
                let price = 200 + 2 * off;
                let qty: Qty = 2 * lots;
                CommandBody::New(NewOrder {
                    order_id, participant, instrument, side, order_type, tif, price, qty, post_only,
                })
            }
        ),
        3 => (id(), who(), inst()).prop_map(|(order_id, participant, instrument)| {
            CommandBody::Cancel { instrument, order_id, participant }
        }),
        3 => (id(), who(), inst(), -8..8i64, 1..12u64).prop_map(|(order_id, participant, instrument, off, lots)| {
            CommandBody::Amend { instrument, order_id, participant, price: 200 + 2 * off, qty: 2 * lots }
        }),
        1 => (who(), inst(), 0..3u8).prop_map(|(p, i, scope)| CommandBody::MassCancel(match scope {
            0 => MassCancelScope::Instrument(i),
            1 => MassCancelScope::Participant(p),
            _ => MassCancelScope::ParticipantInInstrument(p, i),
        })),
        1 => inst().prop_map(|instrument| CommandBody::ExpireDay { instrument }),
    ]
}

fn stp() -> impl Strategy<Value = StpMode> {
    prop_oneof![
        Just(StpMode::None),
        Just(StpMode::CancelResting),
        Just(StpMode::CancelIncoming),
        Just(StpMode::CancelBoth)
    ]
}

fn run<B: OrderBook>(engine: &mut Engine<B>, commands: &[CommandBody], first_ts: u64) {
    for (ts_ns, body) in (first_ts..).zip(commands) {
        engine.apply_vec(&Command { ts_ns, body: *body });
    }
}

/// Restores `image` as an `Engine<R>` and checks that it matches `original` now and after
/// `after` is applied to both.
fn check_restored<B: OrderBook, R: OrderBook>(
    original: &mut Engine<B>,
    image: &EngineImage,
    after: &[CommandBody],
) -> Result<(), TestCaseError> {
    let mut restored = Engine::<R>::from_image(image.clone()).map_err(|e| TestCaseError::fail(e.0))?;
    restored.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(&restored.image(), image);
    prop_assert_eq!(state_hash(&restored), state_hash(original));
    for (ts_ns, body) in (1_000..).zip(after) {
        let cmd = Command { ts_ns, body: *body };
        prop_assert_eq!(original.apply_vec(&cmd), restored.apply_vec(&cmd), "after {:?}", cmd);
        restored.check_invariants().map_err(TestCaseError::fail)?;
    }
    prop_assert_eq!(restored.image(), original.image());
    prop_assert_eq!(state_hash(&restored), state_hash(original));
    Ok(())
}

/// Runs `before`, images, and checks a restore into each book type; returns the state hash.
fn round_trip<B: OrderBook>(
    stp: StpMode,
    before: &[CommandBody],
    after: &[CommandBody],
) -> Result<[u8; 32], TestCaseError> {
    let mut original = Engine::<B>::new(specs(stp)).map_err(|e| TestCaseError::fail(e.0))?;
    run(&mut original, before, 1);
    let image = original.image();
    let hash = state_hash(&original);
    let fork = || {
        let mut copy = Engine::<B>::new(specs(stp)).expect("valid specs");
        run(&mut copy, before, 1);
        copy
    };
    check_restored::<B, Book>(&mut fork(), &image, after)?;
    check_restored::<B, ReferenceBook>(&mut fork(), &image, after)?;
    check_restored::<B, B>(&mut original, &image, after)?;
    Ok(hash)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Image and restore, for both books and across them: the same state hash, the same
    /// books, and the same events for the same further commands.
    #[test]
    fn restored_engines_behave_identically(
        stp in stp(),
        before in prop::collection::vec(command(), 0..120),
        after in prop::collection::vec(command(), 0..60),
    ) {
        let fast = round_trip::<Book>(stp, &before, &after)?;
        let naive = round_trip::<ReferenceBook>(stp, &before, &after)?;
        prop_assert_eq!(fast, naive, "same content, same hash, whatever the book");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The same through a snapshot file.
    #[test]
    fn file_round_trip(stp in stp(), before in prop::collection::vec(command(), 0..120), seq in any::<u64>()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut original = Engine::<Book>::new(specs(stp)).expect("valid specs");
        run(&mut original, &before, 1);
        let path = write_snapshot(dir.path(), seq, &original).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (read_seq, restored) =
            read_snapshot::<ReferenceBook>(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read_seq, seq);
        prop_assert_eq!(restored.image(), original.image());
        prop_assert_eq!(state_hash(&restored), state_hash(&original));
    }
}

fn order(id: u64, side: Side, price: i64, leaves_qty: Qty) -> RestingOrder {
    RestingOrder {
        order_id: OrderId(id),
        participant: ParticipantId(1),
        side,
        price,
        leaves_qty,
        filled_qty: 0,
        tif: TimeInForce::Gtc,
        post_only: false,
    }
}

/// `restore` refuses what would break a book, and leaves the book as it was.
fn restore_refusals<B: OrderBook>() {
    let spec = InstrumentSpec { resting_orders_max: 3, ..InstrumentSpec::canonical("X") };
    let mut book = B::new(InstrumentId(0), &spec);
    book.restore(&order(1, Side::Buy, 100, 5)).expect("first bid");
    book.restore(&order(2, Side::Sell, 101, 5)).expect("first ask");
    let refused = [
        ("duplicate id", order(1, Side::Sell, 105, 5)),
        ("zero leaves", order(3, Side::Buy, 99, 0)),
        ("bid crossing", order(3, Side::Buy, 101, 5)),
        ("ask crossing", order(3, Side::Sell, 100, 5)),
        ("non-positive price", order(3, Side::Buy, 0, 5)),
        ("IOC", RestingOrder { tif: TimeInForce::Ioc, ..order(3, Side::Buy, 99, 5) }),
    ];
    for (what, o) in refused {
        assert!(book.restore(&o).is_err(), "{what} accepted");
        assert_eq!(book.order_count(), 2, "{what} changed the book");
        book.check_invariants().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    book.restore(&order(3, Side::Buy, 100, 5)).expect("second bid at 100, behind order 1");
    assert!(book.restore(&order(4, Side::Buy, 90, 5)).is_err(), "book full accepted");
    let mut bids = Vec::new();
    book.for_each_order(Side::Buy, &mut |o| bids.push(o.order_id.0));
    assert_eq!(bids, vec![1, 3]);
    book.check_invariants().expect("invariants");
}

#[test]
fn restore_refuses_what_would_break_the_book() {
    restore_refusals::<Book>();
    restore_refusals::<ReferenceBook>();
}

/// A restored fast book still spots a duplicate id below the largest restored id and accepts
/// ids above it.
#[test]
fn restored_fast_book_knows_its_ids() {
    let mut image = Engine::<Book>::new(specs(StpMode::None)).expect("specs").image();
    image.instruments[1].bids = vec![order(50, Side::Buy, 100, 4), order(7, Side::Buy, 99, 4)];
    let mut engine = Engine::<Book>::from_image(image).expect("restore");
    for (id, accepted) in [(7, false), (50, false), (8, true), (51, true)] {
        let new = NewOrder::limit(id, 2, 1, Side::Buy, TimeInForce::Gtc, 90, 2);
        let events = engine.apply_vec(&Command { ts_ns: 1, body: CommandBody::New(new) });
        assert_eq!(matches!(events[0], cccx_engine::Event::Accepted { .. }), accepted, "id {id}: {events:?}");
    }
}

/// `from_image` refuses an order that could not have entered the instrument.
#[test]
fn from_image_refuses_orders_outside_the_rules() {
    let base = Engine::<Book>::new(specs(StpMode::None)).expect("specs").image();
    let cases = [
        ("on the wrong side", 0, order(1, Side::Sell, 200, 2)),
        ("off the tick", 0, order(1, Side::Buy, 201, 2)),
        ("outside the band", 0, order(1, Side::Buy, 230, 2)),
        ("off the lot", 0, order(1, Side::Buy, 200, 3)),
        ("above the maximum quantity", 1, order(1, Side::Buy, 200, 21)),
        (
            "overflowing filled + open",
            1,
            RestingOrder { filled_qty: u64::MAX, ..order(1, Side::Buy, 200, 2) },
        ),
    ];
    for (what, instrument, o) in cases {
        let mut image = base.clone();
        image.instruments[instrument].bids.push(o);
        assert!(Engine::<Book>::from_image(image.clone()).is_err(), "{what} accepted by the fast book");
        assert!(Engine::<ReferenceBook>::from_image(image).is_err(), "{what} accepted by the reference book");
    }
    for (side, prices) in [(Side::Buy, [196, 198]), (Side::Sell, [204, 202])] {
        let mut image = base.clone();
        let orders = vec![order(1, side, prices[0], 2), order(2, side, prices[1], 2)];
        match side {
            Side::Buy => image.instruments[0].bids = orders,
            Side::Sell => image.instruments[0].asks = orders,
        }
        assert!(Engine::<Book>::from_image(image).is_err(), "{side:?} out of priority order accepted");
    }
    let mut twice = base.clone();
    twice.instruments.push(base.instruments[0].clone());
    assert!(Engine::<Book>::from_image(twice).is_err(), "an instrument configured twice accepted");
}
