//! Group commit off the engine thread: with `Batch` durability the writer hands "make the
//! segment durable up to sequence N" to this thread, which calls `fdatasync` and publishes the
//! durable sequence. The engine goes on applying commands meanwhile; what it may not do is
//! *report* a command before [`Syncer::durable`] covers it (the caller holds the replies back).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::JournalError;

/// Sync requests queued at most; a writer that gets further ahead waits (back-pressure).
const SYNC_REQUESTS_MAX: usize = 64;

struct Request {
    file: Arc<File>,
    path: PathBuf,
    segment: u64,
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

    /// Asks for `file` (segment `segment`) to be made durable; it then covers sequence `seq`.
    pub(super) fn request(
        &self,
        file: &Arc<File>,
        path: PathBuf,
        segment: u64,
        seq: u64,
    ) -> Result<(), JournalError> {
        self.check()?;
        let request = Request { file: file.clone(), path, segment, seq };
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
                Err(JournalError::Io { path: path.clone(), source: std::io::Error::other(message.clone()) })
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
        // One fdatasync per segment in the batch, in order: the last request of each segment
        // covers the earlier ones.
        let mut covered = None;
        for (i, request) in batch.iter().enumerate() {
            if batch.get(i + 1).is_some_and(|next| next.segment == request.segment) {
                continue;
            }
            if let Err(e) = request.file.sync_data() {
                let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Some((request.path.clone(), format!("fdatasync failed: {e}")));
                return;
            }
            covered = Some(request.seq);
        }
        if let Some(seq) = covered {
            durable.fetch_max(seq, Ordering::AcqRel);
        }
        batch.clear();
    }
}
