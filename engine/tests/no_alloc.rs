//! Once warm, the matching path does not allocate: a counting global allocator watches a
//! steady-state stream of new orders (passive and aggressive, all time-in-force kinds), cancels
//! and amends after a warm-up that reached the same high-water marks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cccx_engine::{
    Book, Command, CommandBody, Engine, InstrumentId, InstrumentSpec, NewOrder, OrderId, OrderType,
    ParticipantId, Side, TimeInForce,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Orders the generator keeps live at most; the warm-up reaches it.
const LIVE_CAP: usize = 5000;

/// A deterministic flow around price 10 000: 60% new orders (mostly GTC, some IOC, FOK and
/// market), 30% cancels, 10% amends; never more than `LIVE_CAP` of its own orders live.
struct Flow {
    state: u64,
    next_id: u64,
    live: Vec<(OrderId, ParticipantId)>,
}

impl Flow {
    fn below(&mut self, n: u64) -> u64 {
        self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.state >> 33) % n
    }

    fn next(&mut self, ts_ns: u64) -> Command {
        let r = self.below(100);
        let body = if (r >= 60 || self.live.len() >= LIVE_CAP) && !self.live.is_empty() {
            let i = self.below(self.live.len() as u64) as usize;
            let (order_id, participant) = self.live.swap_remove(i);
            let instrument = InstrumentId(0);
            if r < 90 || self.live.len() + 1 >= LIVE_CAP {
                CommandBody::Cancel { instrument, order_id, participant }
            } else {
                self.live.push((order_id, participant));
                let price = 9_990 + self.below(20) as i64;
                CommandBody::Amend { instrument, order_id, participant, price, qty: 1 + self.below(50) }
            }
        } else {
            let side = if self.below(2) == 0 { Side::Buy } else { Side::Sell };
            let participant = self.below(50) as u32;
            let (order_type, tif) = match self.below(20) {
                0..=13 => (OrderType::Limit, TimeInForce::Gtc),
                14..=16 => (OrderType::Limit, TimeInForce::Ioc),
                17 => (OrderType::Limit, TimeInForce::Fok),
                _ => (OrderType::Market, TimeInForce::Ioc),
            };
            let off = self.below(12) as i64 - 2;
            let price = if side == Side::Buy { 10_000 - off } else { 10_000 + off };
            self.next_id += 1;
            let mut order =
                NewOrder::limit(self.next_id, participant, 0, side, tif, price, 1 + self.below(60));
            order.order_type = order_type;
            if tif == TimeInForce::Gtc {
                self.live.push((order.order_id, order.participant));
            }
            CommandBody::New(order)
        };
        Command { ts_ns, body }
    }
}

#[test]
fn matching_does_not_allocate_once_warm() {
    let spec =
        InstrumentSpec { resting_orders_max: 4 * LIVE_CAP as u32, ..InstrumentSpec::canonical("CCC0") };
    let mut engine = Engine::<Book>::new(vec![spec]).unwrap();
    let mut flow = Flow { state: 42, next_id: 0, live: Vec::with_capacity(LIVE_CAP + 1) };
    let warm: Vec<Command> = (0..200_000).map(|t| flow.next(t)).collect();
    let steady: Vec<Command> = (200_000..400_000).map(|t| flow.next(t)).collect();
    let mut events = Vec::new();
    // The warm-up grows the event buffer and the order-id index (the counter sees it)...
    COUNTING.store(true, Ordering::SeqCst);
    for cmd in &warm {
        events.clear();
        engine.apply(cmd, &mut events);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert!(ALLOCATIONS.swap(0, Ordering::SeqCst) > 0, "the warm-up grows the index");
    // ...and from then on nothing allocates.
    let mut trades = 0;
    COUNTING.store(true, Ordering::SeqCst);
    for cmd in &steady {
        events.clear();
        engine.apply(cmd, &mut events);
        trades += events.iter().filter(|e| matches!(e, cccx_engine::Event::Trade(_))).count();
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert!(trades > 10_000, "the steady state must trade ({trades} trades)");
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "allocations on the warm matching path");
    engine.check_invariants().unwrap();
}
