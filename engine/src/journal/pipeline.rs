//! Journal and engine on two threads: a journal thread appends the commands in order while the
//! caller's thread applies each one as soon as the journal holds it (the arrangement of the
//! LMAX exchange, where the journaller runs ahead of the business logic). A command is never
//! applied before it is in the journal, so replaying the journal still rebuilds the same state;
//! what the second thread buys is that the append (record, CRC, the seals' BLAKE3) no longer
//! adds to the engine's time per command, as long as a second core is free.
//!
//! [`journal_and_apply`] takes commands that are already in memory (a workload, a batch taken
//! off a queue). The journal thread publishes how far it has appended and how far the journal
//! is durable, every [`PUBLISH_EVERY`] commands and whenever it waits; the applying thread reads
//! both through [`Progress`], and may ask for a sync up to a sequence (before a snapshot, say).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{JournalError, JournalWriter};
use crate::message::Command;

/// Commands the journal thread appends between two publications of its progress.
pub const PUBLISH_EVERY: usize = 32;

/// What the journal thread has done, as the applying thread sees it.
pub struct Progress {
    /// Sequence of the last command appended (and so allowed to be applied).
    appended: AtomicU64,
    /// Sequence of the last command durable at the journal's policy.
    durable: AtomicU64,
    /// A sync asked for by the applying thread: everything up to this sequence.
    sync_to: AtomicU64,
    /// Everything up to this sequence was forced to stable storage by such a sync.
    synced: AtomicU64,
    /// The journal thread failed or finished; it appends nothing more.
    journal_stopped: AtomicBool,
    /// The applying thread is done (or failed); the journal thread may stop.
    apply_stopped: AtomicBool,
}

impl Progress {
    fn new(last_seq: u64, durable: u64) -> Self {
        Progress {
            appended: AtomicU64::new(last_seq),
            durable: AtomicU64::new(durable),
            sync_to: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            journal_stopped: AtomicBool::new(false),
            apply_stopped: AtomicBool::new(false),
        }
    }

    /// Sequence of the last command the journal holds (at least; it is published in steps).
    pub fn appended_seq(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Sequence of the last command the journal holds at its configured durability: what may
    /// be reported as accepted.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Asks the journal thread to force everything up to `seq` (an applied command, so one the
    /// journal holds) to stable storage, whatever the durability policy, as
    /// [`JournalWriter::sync`] does; waits for it. Before a snapshot, say: a snapshot must
    /// never be ahead of the journal, also after a power loss. Returns `false` if the journal
    /// thread stopped first (its error is what [`journal_and_apply`] returns).
    pub fn sync_to(&self, seq: u64) -> bool {
        self.sync_to.fetch_max(seq, Ordering::AcqRel);
        let mut waits = 0u32;
        while self.synced.load(Ordering::Acquire) < seq {
            if self.journal_stopped.load(Ordering::Acquire) && self.synced.load(Ordering::Acquire) < seq {
                return false;
            }
            pause(&mut waits);
        }
        true
    }
}

/// Spins briefly, then yields, then sleeps: a waiting thread does not take a core from the
/// other for long.
fn pause(waits: &mut u32) {
    *waits = waits.saturating_add(1);
    match *waits {
        0..=64 => std::hint::spin_loop(),
        65..=256 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(20)),
    }
}

/// Why [`journal_and_apply`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E> {
    /// Appending or syncing failed; commands after the last appended one were not applied.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The caller's `apply` failed; the journal may hold commands after the one that failed
    /// (as after a crash, recovery replays them).
    #[error("{0}")]
    Apply(E),
}

/// Appends `commands` to `writer` on a second thread while `apply` runs on this one, command
/// by command in order, each only once the journal holds it. `apply` gets the command's
/// sequence number and the journal's [`Progress`] (for the durable sequence, and to ask for a
/// sync). Returns once every command is appended and applied, or at the first error of either
/// side. The writer is not synced or closed at the end: that is the caller's (as with
/// [`JournalWriter::append`]).
pub fn journal_and_apply<E, F>(
    writer: &mut JournalWriter,
    commands: &[Command],
    mut apply: F,
) -> Result<(), PipelineError<E>>
where
    F: FnMut(u64, &Command, &Progress) -> Result<(), E>,
{
    let first_seq = writer.last_seq() + 1;
    let progress = Progress::new(writer.last_seq(), writer.durable_seq());
    std::thread::scope(|scope| {
        let journal = std::thread::Builder::new()
            .name("cccx-journal".into())
            .spawn_scoped(scope, || {
                let result = append_all(writer, commands, &progress);
                progress.journal_stopped.store(true, Ordering::Release);
                result
            })
            .map_err(|e| JournalError::Config(format!("cannot start the journal thread: {e}")))?;
        let applied = {
            // Set when applying ends, also by a panic in `apply`: the journal thread waits for
            // it, and the scope waits for the journal thread.
            let _stopped = SetOnDrop(&progress.apply_stopped);
            apply_all(commands, first_seq, &progress, &mut apply)
        };
        let journaled = journal
            .join()
            .unwrap_or_else(|_| Err(JournalError::Config("the journal thread panicked".into())));
        journaled?;
        applied.map_err(PipelineError::Apply)
    })
}

/// Sets a flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The applying side: each command once the journal has published it. Stops early, without an
/// error of its own, when the journal thread stops short (its error is the one returned).
fn apply_all<E, F>(commands: &[Command], first_seq: u64, progress: &Progress, apply: &mut F) -> Result<(), E>
where
    F: FnMut(u64, &Command, &Progress) -> Result<(), E>,
{
    let mut next = 0usize;
    let mut waits = 0u32;
    while next < commands.len() {
        let appended = progress.appended_seq();
        let ready = usize::try_from(appended + 1 - first_seq).unwrap_or(usize::MAX).min(commands.len());
        if ready <= next {
            if progress.journal_stopped.load(Ordering::Acquire) && progress.appended_seq() == appended {
                return Ok(());
            }
            pause(&mut waits);
            continue;
        }
        waits = 0;
        for (i, cmd) in commands[next..ready].iter().enumerate() {
            apply(first_seq + (next + i) as u64, cmd, progress)?;
        }
        next = ready;
    }
    Ok(())
}

/// The journal side: appends every command, publishing progress every [`PUBLISH_EVERY`], then
/// serves sync requests until the applying side is done.
fn append_all(
    writer: &mut JournalWriter,
    commands: &[Command],
    progress: &Progress,
) -> Result<(), JournalError> {
    let publish = |writer: &JournalWriter| {
        progress.appended.store(writer.last_seq(), Ordering::Release);
        progress.durable.store(writer.durable_seq(), Ordering::Release);
    };
    let serve_sync = |writer: &mut JournalWriter| -> Result<(), JournalError> {
        let wanted = progress.sync_to.load(Ordering::Acquire);
        if wanted > progress.synced.load(Ordering::Acquire) {
            writer.sync()?;
            publish(writer);
            progress.synced.store(writer.last_seq(), Ordering::Release);
        }
        Ok(())
    };
    for chunk in commands.chunks(PUBLISH_EVERY) {
        if progress.apply_stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        for cmd in chunk {
            if let Err(e) = writer.append(cmd) {
                publish(writer);
                return Err(e);
            }
        }
        publish(writer);
        serve_sync(writer)?;
    }
    // Everything is appended: keep the durable sequence current (a batch sync may still be
    // running) and serve syncs until the applying side is done.
    let mut waits = 0u32;
    while !progress.apply_stopped.load(Ordering::Acquire) {
        serve_sync(writer)?;
        writer.sync_if_due()?;
        publish(writer);
        pause(&mut waits);
    }
    Ok(())
}
