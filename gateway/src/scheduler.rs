//! The session scheduler: moves instruments through their calendar's phases.
//!
//! A thread outside the engine reads the clock twice a second, asks each instrument's
//! [`SessionSchedule`] for the commands due since its last look, and submits them like any
//! operator command, so that they are sequenced, journaled and replayed like everything else.
//! It starts from the moment the server starts: a session missed while the server was down is
//! not replayed (the operator moves it by hand).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cccx_engine::calendar::SessionSchedule;
use cccx_engine::ParticipantId;

use crate::core::{Core, Intent};

/// How often the scheduler looks at the clock.
pub const TICK: Duration = Duration::from_millis(500);

/// Submits a phase command, retrying while the engine's queue is full: a session must not
/// stall because the market was busy when its window closed.
fn submit(core: &Core, body: cccx_engine::CommandBody, stop: &AtomicBool) {
    loop {
        match core.submit_nowait(ParticipantId(0), Intent::Operator(body)) {
            Ok(()) => return,
            Err(crate::core::CoreError::Busy) if !stop.load(Ordering::Acquire) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                tracing::error!("scheduler: {body:?} not submitted: {e}");
                return;
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Starts the scheduler thread; it ends when `stop` is set.
pub fn start(core: Core, schedules: Vec<SessionSchedule>, stop: Arc<AtomicBool>) -> Option<JoinHandle<()>> {
    if schedules.is_empty() {
        return None;
    }
    let spawned = std::thread::Builder::new().name("cccx-scheduler".into()).spawn(move || {
        let mut last = now_ns();
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            let now = now_ns();
            for schedule in &schedules {
                match schedule.due(last, now) {
                    Ok(commands) => {
                        for cmd in commands {
                            tracing::info!("scheduler: {:?}", cmd.body);
                            submit(&core, cmd.body, &stop);
                        }
                    }
                    Err(e) => tracing::error!("scheduler: {e}"),
                }
            }
            last = now;
        }
    });
    spawned.map_err(|e| tracing::error!("cannot start the scheduler: {e}")).ok()
}
