//! A probe for the platform's own stalls, so that a latency run can tell the server's latency
//! from time the machine took away.
//!
//! One thread per CPU this process may use, pinned to it and, where the process may (root or
//! CAP_SYS_NICE), at real-time priority (`SCHED_FIFO`): it sleeps [`PERIOD`] in a loop and
//! notes every wake-up more than [`LATE`] after it was due. A `SCHED_FIFO` thread preempts
//! every thread of the server and the client the moment its timer fires, so its lateness is
//! not load: it is time the CPU did not run this system at all (on a virtual machine, the
//! hypervisor running something else on that vCPU; the guest's scheduler does not see it, and
//! `steal` in `/proc/stat` need not count it). Without real-time priority the probe still
//! runs, but its lateness then includes waiting behind the load, and the report says so.
//!
//! Each probe thread wakes 2,000 times a second and runs for a few microseconds each time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a probe thread sleeps between checks.
pub const PERIOD: Duration = Duration::from_micros(500);
/// A wake-up this much later than due is a stall.
pub const LATE: Duration = Duration::from_micros(200);

/// A time a CPU did not run its probe: from when the probe was due to wake to when it did.
#[derive(Clone, Copy, Debug)]
pub struct Stall {
    pub cpu: usize,
    pub from: Instant,
    pub to: Instant,
}

/// The running probe threads.
pub struct Probe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Stall>>>,
    /// Whether every probe thread got `SCHED_FIFO`.
    pub realtime: bool,
    /// The CPUs probed.
    pub cpus: Vec<usize>,
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a zeroed cpu_set_t, the size passed is its size, and pid 0 is this
    // thread; CPU_ISSET only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Pins the calling thread to `cpu` and asks for `SCHED_FIFO` priority 1; whether it got it.
fn pin_realtime(cpu: usize) -> bool {
    // SAFETY: `set` is a zeroed cpu_set_t with one CPU added, its size is passed, and pid 0 is
    // the calling thread; `param` is a live sched_param; PR_SET_TIMERSLACK takes an integer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        let _ = libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
}

impl Probe {
    /// Starts one probe thread per CPU.
    pub fn start() -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = allowed_cpus();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let threads = cpus
            .iter()
            .map(|&cpu| {
                let (stop, ready) = (stop.clone(), ready_tx.clone());
                std::thread::Builder::new()
                    .name(format!("stall-probe-{cpu}"))
                    .spawn(move || {
                        let _ = ready.send(pin_realtime(cpu));
                        let mut stalls = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let due = Instant::now() + PERIOD;
                            std::thread::sleep(PERIOD);
                            let woke = Instant::now();
                            if woke > due + LATE {
                                stalls.push(Stall { cpu, from: due, to: woke });
                            }
                        }
                        stalls
                    })
                    .expect("start a probe thread")
            })
            .collect::<Vec<_>>();
        let realtime = (0..threads.len()).all(|_| ready_rx.recv().unwrap_or(false));
        Probe { stop, threads, realtime, cpus }
    }

    /// Stops the probe threads; every stall they saw, by start.
    pub fn finish(self) -> Vec<Stall> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Stall> =
            self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect();
        all.sort_by_key(|s| s.from);
        all
    }
}

/// Stalls merged across CPUs into disjoint spans, by start.
pub fn merged(stalls: &[Stall]) -> Vec<(Instant, Instant)> {
    let mut spans: Vec<(Instant, Instant)> = Vec::new();
    for s in stalls {
        match spans.last_mut() {
            Some(last) if s.from <= last.1 => last.1 = last.1.max(s.to),
            _ => spans.push((s.from, s.to)),
        }
    }
    spans
}

/// Whether `[from, to]` overlaps one of `spans` (disjoint, by start, as [`merged`] gives).
pub fn overlaps(spans: &[(Instant, Instant)], from: Instant, to: Instant) -> bool {
    // The first span that ends after `from`; spans before it ended before the interval began.
    let i = spans.partition_point(|s| s.1 <= from);
    spans.get(i).is_some_and(|s| s.0 < to)
}
