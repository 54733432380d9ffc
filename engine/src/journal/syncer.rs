//! Group commit off the engine thread: with `Batch` durability the writer hands "make this
//! byte range of the segment durable; it ends with sequence N" to this thread, which `msync`s
//! the range and publishes the durable sequence. The engine goes on applying commands meanwhile; what it may not do is
//! *report* a command before [`Syncer::durable`] covers it (the caller holds the replies back).

use std::path::PathBuf;

use memmap2::MmapRaw;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::JournalError;

/// Sync requests queued at most; a writer that gets further ahead waits (back-pressure).
const SYNC_REQUESTS_MAX: usize = 64;

struct Request {
    map: Arc<MmapRaw>,
    path: PathBuf,
    segment: u64,
    from: usize,
    to: usize,
    seq: u64,
}

/// The sync thread and what it publishes.
pub(super) struct Syncer {
    tx: Option<SyncSender<Request>>,
    durable: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<(PathBuf, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; everything up to `durable` is already on stable storage.
    pub(super) fn start(durable: u64) -> Result<Self, JournalError> {
        let (tx, rx) = sync_channel(SYNC_REQUESTS_MAX);
        let durable = Arc::new(AtomicU64::new(durable));
        let failure = Arc::new(Mutex::new(None));
        let (d, f) = (durable.clone(), failure.clone());
        let thread = std::thread::Builder::new()
            .name("cccx-journal-sync".into())
            .spawn(move || run(rx, d, f))
            .map_err(|e| JournalError::Config(format!("cannot start the journal sync thread: {e}")))?;
        Ok(Syncer { tx: Some(tx), durable, failure, thread: Some(thread) })
    }

    /// Asks for bytes `from..to` of segment `segment` to be made durable; they end with
    /// sequence `seq`.
    pub(super) fn request(
        &self,
        map: &Arc<MmapRaw>,
        path: PathBuf,
        segment: u64,
        from: usize,
        to: usize,
        seq: u64,
    ) -> Result<(), JournalError> {
        self.check()?;
        let request = Request { map: map.clone(), path, segment, from, to, seq };
        match &self.tx {
            Some(tx) if tx.send(request).is_ok() => Ok(()),
            _ => Err(JournalError::Config("the journal sync thread has stopped".into())),
        }
    }

    /// The highest sequence known to be on stable storage.
    #[inline]
    pub(super) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Waits until everything up to `seq` is durable (after a request that covers it).
    pub(super) fn wait_for(&self, seq: u64) -> Result<(), JournalError> {
        while self.durable() < seq {
            self.check()?;
            std::thread::sleep(Duration::from_micros(20));
        }
        Ok(())
    }

    /// A failed sync is fatal for the journal: after `fdatasync` fails, what reached the disk
    /// is unknown, so the writer refuses to go on.
    pub(super) fn check(&self) -> Result<(), JournalError> {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match &*failure {
            Some((path, message)) => {
                Err(JournalError::Io { path: path.clone(), error: std::io::Error::other(message.clone()) })
            }
            None => Ok(()),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(rx: Receiver<Request>, durable: Arc<AtomicU64>, failure: Arc<Mutex<Option<(PathBuf, String)>>>) {
    let mut batch: Vec<Request> = Vec::with_capacity(SYNC_REQUESTS_MAX);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // One msync per run of requests for the same segment, over the union of their ranges,
        // in order.
        let mut covered = None;
        let mut i = 0;
        while i < batch.len() {
            let (segment, mut from, mut to) = (batch[i].segment, batch[i].from, batch[i].to);
            let mut j = i;
            while j + 1 < batch.len() && batch[j + 1].segment == segment {
                j += 1;
                (from, to) = (from.min(batch[j].from), to.max(batch[j].to));
            }
            if let Err(e) = batch[j].map.flush_range(from, to - from) {
                let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Some((batch[j].path.clone(), format!("msync failed: {e}")));
                return;
            }
            covered = Some(batch[j].seq);
            i = j + 1;
        }
        if let Some(seq) = covered {
            durable.fetch_max(seq, Ordering::AcqRel);
        }
        batch.clear();
    }
}
