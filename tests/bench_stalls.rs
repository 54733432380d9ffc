//! The stall probe of the load generators (`benches/common/stalls.rs`): how it merges the
//! stalls of several CPUs and which orders it counts as overlapped by one.

#[allow(dead_code)]
#[path = "../benches/common/stalls.rs"]
mod stalls;

use std::time::{Duration, Instant};

use stalls::{merged, overlaps, Stall};

#[test]
fn merged_spans_are_disjoint_and_overlaps_finds_every_touching_order() {
    let t = Instant::now();
    let ms = |n: u64| t + Duration::from_millis(n);
    let stalls = [
        Stall { cpu: 0, from: ms(10), to: ms(12) },
        Stall { cpu: 1, from: ms(11), to: ms(15) },
        // Inside the span so far: it must not shorten it.
        Stall { cpu: 0, from: ms(12), to: ms(13) },
        Stall { cpu: 0, from: ms(14), to: ms(15) },
        Stall { cpu: 0, from: ms(30), to: ms(31) },
    ];
    let spans = merged(&stalls);
    assert_eq!(spans, vec![(ms(10), ms(15)), (ms(30), ms(31))]);
    // In flight across a start, an end, or a whole span; or inside one.
    assert!(overlaps(&spans, ms(9), ms(11)));
    assert!(overlaps(&spans, ms(14), ms(20)));
    assert!(overlaps(&spans, ms(16), ms(40)));
    assert!(overlaps(&spans, ms(12), ms(13)));
    // Between spans, before the first, after the last.
    assert!(!overlaps(&spans, ms(15), ms(30)));
    assert!(!overlaps(&spans, ms(0), ms(10)));
    assert!(!overlaps(&spans, ms(32), ms(40)));
    assert!(!overlaps(&[], ms(0), ms(40)));
}

#[test]
fn the_probe_starts_on_every_allowed_cpu_and_stops() {
    let probe = stalls::Probe::start();
    assert!(!probe.cpus.is_empty());
    std::thread::sleep(Duration::from_millis(20));
    let cpus = probe.cpus.clone();
    let seen = probe.finish();
    // Whatever it saw (a loaded test machine may stall), it is sorted and on probed CPUs.
    assert!(seen.windows(2).all(|w| w[0].from <= w[1].from));
    assert!(seen.iter().all(|s| cpus.contains(&s.cpu) && s.to > s.from));
}
