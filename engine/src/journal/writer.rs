//! Appending to a journal.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::{Advice, MmapMut, MmapRaw, UncheckedAdvice};
use zerocopy::little_endian::{U32, U64};
use zerocopy::IntoBytes;

use super::record::{
    command_words, crc_of, payload_words, seal_payload, SegmentHeader, FORMAT_VERSION, HEADER_BYTES,
    RECORD_BYTES, SEGMENT_MAGIC,
};
use super::scan::{chain_hash, scan_pipelined, ScanReport};
use super::syncer::Syncer;
use super::{
    segment_files, segment_name, Durability, JournalConfig, JournalError, SEAL_EVERY, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
};
use crate::message::Command;

/// The open end of a journal: appends commands, seals blocks, rolls segments, syncs.
pub struct JournalWriter {
    config: JournalConfig,
    map: MmapMut,
    /// The current segment's file.
    file: Arc<File>,
    /// A second mapping of the current segment, for the sync thread's `msync`s.
    raw: Arc<MmapRaw>,
    /// The last page boundary the writer crossed and the last command below it: a batch sync
    /// stops there, so that the page being written is never write-protected under the writer.
    page_boundary: (usize, u64),
    segment_no: u64,
    /// Where the next record goes in the current segment.
    offset: usize,
    /// Everything before this offset of the current segment is on stable storage (or, under
    /// `Batch`, asked of the sync thread).
    synced_offset: usize,
    block_start: usize,
    unsealed: u32,
    head: [u8; 32],
    last_seq: u64,
    durable_seq: u64,
    last_sync: Instant,
    /// With `Batch` durability: the thread that syncs, and the last sequence asked of it.
    syncer: Option<Syncer>,
    requested_seq: u64,
    /// With `None` durability: segments rolled over without a sync (their mapping and written
    /// length), for [`Self::sync`].
    unsynced: Vec<(Arc<MmapRaw>, usize)>,
}

impl JournalWriter {
    /// Opens (or creates) the journal in `config.dir`, replaying every command in it through
    /// `apply` (see [`scan`]). A torn last record is cut off; the report says so.
    pub fn open(
        config: JournalConfig,
        apply: impl FnMut(u64, &Command),
    ) -> Result<(JournalWriter, ScanReport), JournalError> {
        let seg = config.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&seg) || !seg.is_multiple_of(RECORD_BYTES as u64)
        {
            return Err(JournalError::Config(format!(
                "segment size {seg} must be a multiple of 64 in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            )));
        }
        let dir = &config.dir;
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        let report = scan_pipelined(dir, config.genesis, apply)?;
        let writer = match report.segments.last() {
            None => JournalWriter::create_first(config)?,
            Some(path) => JournalWriter::reopen(config, path.clone(), &report)?,
        };
        Ok((writer, report))
    }

    fn create_first(config: JournalConfig) -> Result<JournalWriter, JournalError> {
        let genesis = config.genesis;
        let (file, map) = create_segment(&config, 0, 1, genesis)?;
        let raw = map_raw(&file, &config.dir.join(segment_name(0)))?;
        let syncer = start_syncer(&config, 0)?;
        Ok(JournalWriter {
            config,
            map,
            file,
            raw,
            page_boundary: (HEADER_BYTES, 0),
            segment_no: 0,
            offset: HEADER_BYTES,
            synced_offset: HEADER_BYTES,
            block_start: HEADER_BYTES,
            unsealed: 0,
            head: genesis,
            last_seq: 0,
            durable_seq: 0,
            last_sync: Instant::now(),
            syncer,
            requested_seq: 0,
            unsynced: Vec::new(),
        })
    }

    fn reopen(
        config: JournalConfig,
        path: std::path::PathBuf,
        report: &ScanReport,
    ) -> Result<Self, JournalError> {
        let file =
            OpenOptions::new().read(true).write(true).open(&path).map_err(|e| JournalError::io(&path, e))?;
        let len = file.metadata().map_err(|e| JournalError::io(&path, e))?.len();
        // Room for what must still be written here: the seal of unsealed records (a full segment
        // ends with a seal and just rolls on the next append).
        let needed = report.end_offset + if report.unsealed > 0 { RECORD_BYTES as u64 } else { 0 };
        if len < needed || !len.is_multiple_of(RECORD_BYTES as u64) {
            // A segment cut short (inside its last record, say) gets a zeroed tail back.
            let fixed = len.next_multiple_of(RECORD_BYTES as u64).max(needed);
            file.set_len(fixed).and_then(|_| file.sync_all()).map_err(|e| JournalError::io(&path, e))?;
        }
        let mut map = map_segment(&file, &path, config.durability)?;
        let end = report.end_offset as usize;
        if let Some(torn) = &report.torn_tail {
            // Cut the torn record off: zero it and make the cut durable before writing on.
            let at = torn.offset as usize;
            let len = RECORD_BYTES.min(map.len() - at);
            map[at..at + len].fill(0);
            map.flush_range(at, len).map_err(|e| JournalError::io(&path, e))?;
        }
        let segment_no = segment_files(&config.dir)?.last().map_or(0, |(n, _)| *n);
        // What an earlier run wrote may still be only in the page cache (it may have run with
        // durability none): make it all durable before calling any of it durable.
        // (Only the written part: the rest may be dirty zeros from the pre-faulting.)
        for (i, segment) in report.segments.iter().enumerate() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment)
                .map_err(|e| JournalError::io(segment, e))?;
            let written = if i + 1 == report.segments.len() { end } else { usize::MAX };
            let raw = map_raw(&f, segment)?;
            raw.flush_range(0, written.min(raw.len())).map_err(|e| JournalError::io(segment, e))?;
        }
        sync_dir(&config.dir)?;
        let syncer = start_syncer(&config, report.last_seq)?;
        let raw = map_raw(&file, &path)?;
        Ok(JournalWriter {
            config,
            map,
            file: Arc::new(file),
            raw,
            page_boundary: (end, report.last_seq),
            segment_no,
            offset: end,
            synced_offset: end,
            block_start: report.block_start as usize,
            unsealed: report.unsealed,
            head: report.head,
            last_seq: report.last_seq,
            durable_seq: report.last_seq,
            last_sync: Instant::now(),
            syncer,
            requested_seq: report.last_seq,
            unsynced: Vec::new(),
        })
    }

    /// Sequence of the last command appended.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Sequence of the last command the journal holds at its configured durability: a command
    /// may be reported as accepted once this covers it.
    #[inline]
    pub fn durable_seq(&self) -> u64 {
        match &self.syncer {
            Some(syncer) => syncer.durable().max(self.durable_seq),
            None => self.durable_seq,
        }
    }

    /// Chain hash of the newest seal.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Appends a command and returns its sequence number. With `Every` durability the record
    /// is on stable storage when this returns; with `Batch`, once [`Self::durable_seq`] reaches it.
    #[inline]
    pub fn append(&mut self, cmd: &Command) -> Result<u64, JournalError> {
        if self.offset + 2 * RECORD_BYTES > self.map.len() {
            self.roll()?;
        }
        let seq = self.last_seq + 1;
        self.last_seq = seq;
        self.write_record(seq, &command_words(cmd));
        self.unsealed += 1;
        if self.unsealed >= SEAL_EVERY {
            self.seal();
        }
        match self.config.durability {
            Durability::None => self.durable_seq = seq,
            Durability::Every => self.sync()?,
            Durability::Batch { records, .. } => {
                // One sync in flight at most: while the disk is busy the next batch grows (group
                // commit) instead of queueing. The clock is read once per 64 commands.
                let idle = self.syncer.as_ref().is_some_and(|s| s.durable() >= self.requested_seq);
                if idle
                    && (seq - self.requested_seq >= u64::from(records)
                        || (seq.is_multiple_of(64) && self.batch_due()))
                {
                    self.request_sync()?;
                }
            }
        }
        Ok(seq)
    }

    fn batch_due(&self) -> bool {
        match self.config.durability {
            Durability::Batch { interval_us, .. } => {
                self.requested_seq < self.last_seq
                    && self.last_sync.elapsed() >= Duration::from_micros(interval_us)
            }
            _ => false,
        }
    }

    /// Asks the sync thread to make the records up to the last page boundary durable (`Batch`
    /// durability), so that the page being written is not write-protected under the writer;
    /// when no new record lies below that boundary, everything appended so far.
    fn request_sync(&mut self) -> Result<(), JournalError> {
        let (to, seq) = if self.page_boundary.1 > self.requested_seq {
            self.page_boundary
        } else {
            (self.offset, self.last_seq)
        };
        self.request_range(to, seq)
    }

    fn request_range(&mut self, to: usize, seq: u64) -> Result<(), JournalError> {
        if let Some(syncer) = &self.syncer {
            if to > self.synced_offset {
                let path = self.segment_path();
                // (Not the open block's pages: the seal reads them.)
                self.unmap_written_pages(self.synced_offset, to.min(self.block_start));
                syncer.request(&self.raw, path, self.segment_no, self.synced_offset, to, seq)?;
                self.synced_offset = to;
            }
            self.requested_seq = self.requested_seq.max(seq);
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Drops this writer's page-table entries for the whole pages of `from..to` before they
    /// are synced. `msync` write-protects every mapping of a page it writes back, and each
    /// write-protection flushes that page from the TLB of every CPU running this process: one
    /// inter-processor interrupt per page, which on a VM costs the interrupted threads more
    /// than the journal itself (measured: batch durability at 0.22 of the engine alone with the
    /// interrupts, 0.37-0.44 without). Unmapped pages have nothing to write-protect; the data
    /// stays in the page cache, dirty, for the sync to write. The writer never touches these
    /// pages again: they lie below both the page being written and the open block, which the
    /// seal hashes.
    fn unmap_written_pages(&self, from: usize, to: usize) {
        let start = from - from % SYNC_PAGE_BYTES;
        let end = to - to % SYNC_PAGE_BYTES;
        if end > start {
            // SAFETY: the range is inside the map and no reference into it is live. On a
            // shared file mapping MADV_DONTNEED only drops the page-table entries: the pages,
            // and their dirty state, stay in the page cache, and the next access maps them
            // again with the same contents. Failing is harmless (the sync still works, with
            // the interrupts), so the result is ignored.
            let _ = unsafe { self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// Starts a sync of a pending batch whose interval has passed (the server calls it when
    /// idle, so that a quiet market still gets its acknowledgements).
    pub fn sync_if_due(&mut self) -> Result<(), JournalError> {
        if self.batch_due() {
            self.request_sync()?;
        }
        Ok(())
    }

    /// Asks for everything appended so far to reach stable storage without waiting: under
    /// `Batch` the sync thread starts on it when it is idle (one sync in flight at most; call
    /// again to cover what was appended meanwhile) and [`Self::durable_seq`] says when it is
    /// done. Under the other policies the same as [`Self::sync`].
    pub fn sync_soon(&mut self) -> Result<(), JournalError> {
        let Some(syncer) = &self.syncer else { return self.sync() };
        if syncer.durable() >= self.requested_seq && self.last_seq > self.requested_seq {
            self.request_range(self.offset, self.last_seq)?;
        }
        Ok(())
    }

    /// Forces everything appended so far to stable storage, and waits for it.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.syncer.is_some() {
            self.request_range(self.offset, self.last_seq)?;
            if let Some(syncer) = &self.syncer {
                syncer.wait_for(self.last_seq)?;
            }
            self.durable_seq = self.last_seq;
            return Ok(());
        }
        for (raw, written) in self.unsynced.drain(..) {
            let path = self.config.dir.clone();
            raw.flush_range(0, written).map_err(|e| JournalError::io(&path, e))?;
        }
        if self.offset > self.synced_offset {
            let path = self.segment_path();
            self.map
                .flush_range(self.synced_offset, self.offset - self.synced_offset)
                .map_err(|e| JournalError::io(&path, e))?;
            self.synced_offset = self.offset;
        }
        self.durable_seq = self.last_seq;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the open block and, unless the durability is `None`, syncs: the end of a clean
    /// run. (With `None` the page cache is the configured level; call [`Self::sync`] first to
    /// force the data out anyway.)
    pub fn close(mut self) -> Result<(), JournalError> {
        if self.unsealed > 0 {
            self.seal();
        }
        match self.config.durability {
            Durability::None => Ok(()),
            _ => self.sync(),
        }
    }

    /// Writes a record straight into the map: CRC computed from the values (not read back from
    /// memory), each word stored once, the length word last.
    #[inline]
    fn write_record(&mut self, seq: u64, payload: &[u64; 6]) {
        let at = self.offset;
        let crc = crc_of(RECORD_BYTES as u32, seq, payload);
        let Some(slot) = self.map.get_mut(at..at + RECORD_BYTES) else {
            unreachable!("append rolls the segment before it is full")
        };
        slot[4..8].copy_from_slice(&crc.to_le_bytes());
        slot[8..16].copy_from_slice(&seq.to_le_bytes());
        for (bytes, word) in slot[16..].chunks_exact_mut(8).zip(payload) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        // The length word goes last: a reader that sees it sees the whole record.
        fence(Ordering::Release);
        slot[..4].copy_from_slice(&(RECORD_BYTES as u32).to_le_bytes());
        self.offset += RECORD_BYTES;
        if self.offset.is_multiple_of(SYNC_PAGE_BYTES) {
            self.page_boundary = (self.offset, self.last_seq);
        }
    }

    fn seal(&mut self) {
        self.head = chain_hash(&self.head, &self.map[self.block_start..self.offset]);
        self.write_record(self.last_seq, &payload_words(&seal_payload(self.unsealed, self.head)));
        self.block_start = self.offset;
        self.unsealed = 0;
    }

    /// Seals and closes the current segment and starts the next.
    #[cold]
    fn roll(&mut self) -> Result<(), JournalError> {
        if self.unsealed > 0 {
            self.seal();
        }
        match self.config.durability {
            // Synced if and when someone calls `sync` (before a snapshot, say).
            Durability::None => self.unsynced.push((self.raw.clone(), self.offset)),
            // The old segment must be durable before the next one exists: a journal whose
            // next segment survives a power loss while the end of this one does not is damaged.
            Durability::Every | Durability::Batch { .. } => self.sync()?,
        }
        let next = self.segment_no + 1;
        (self.file, self.map) = create_segment(&self.config, next, self.last_seq + 1, self.head)?;
        self.raw = map_raw(&self.file, &self.config.dir.join(segment_name(next)))?;
        self.page_boundary = (HEADER_BYTES, self.last_seq);
        self.segment_no = next;
        (self.offset, self.synced_offset, self.block_start) = (HEADER_BYTES, HEADER_BYTES, HEADER_BYTES);
        Ok(())
    }

    fn segment_path(&self) -> std::path::PathBuf {
        self.config.dir.join(segment_name(self.segment_no))
    }
}

/// Creates segment `number` atomically (temporary file with its header, synced, renamed, the
/// directory synced) and maps it, its pages faulted in ahead of the writes.
fn create_segment(
    config: &JournalConfig,
    number: u64,
    first_seq: u64,
    chain_start: [u8; 32],
) -> Result<(Arc<File>, MmapMut), JournalError> {
    let dir = &config.dir;
    let path = dir.join(segment_name(number));
    let tmp = dir.join(format!("{}.tmp", segment_name(number)));
    let header = SegmentHeader {
        magic: SEGMENT_MAGIC,
        version: U32::new(FORMAT_VERSION),
        header_bytes: U32::new(HEADER_BYTES as u32),
        segment_no: U64::new(number),
        first_seq: U64::new(first_seq),
        chain_start,
    };
    {
        use std::io::Write;
        let mut file = File::create(&tmp).map_err(|e| JournalError::io(&tmp, e))?;
        file.write_all(header.as_bytes()).map_err(|e| JournalError::io(&tmp, e))?;
        file.set_len(config.segment_bytes).map_err(|e| JournalError::io(&tmp, e))?;
        file.sync_all().map_err(|e| JournalError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    sync_dir(dir)?;
    let file =
        OpenOptions::new().read(true).write(true).open(&path).map_err(|e| JournalError::io(&path, e))?;
    let map = map_segment(&file, &path, config.durability)?;
    // Fault the pages in, writable, now rather than one per 64 commands later (an old kernel
    // without MADV_POPULATE_WRITE just faults them lazily). This marks the pages dirty; the
    // syncs are `msync`s of the written range only, so the zeros beyond are not waited for.
    let advice = Advice::PopulateWrite;
    let _ = map.advise_range(advice, 0, map.len().min(SEGMENT_POPULATE_BYTES));
    Ok((Arc::new(file), map))
}

/// Maps a segment for writing. When the journal syncs, the pages it faults in are single
/// pages: by default the kernel may cache a file in large folios (64 KiB and more), and the
/// writeback of a folio write-protects and locks all of it, so a batch sync of the records
/// just written would stall the writer on the folio it is still filling (measured: batch
/// durability at 0.17-0.24 of the engine alone with large folios, 0.40-0.46 without).
/// Random-access advice makes page faults read no more than the page. (Pages already cached
/// in large folios, from an earlier run, stay as they are.)
fn map_segment(file: &File, path: &Path, durability: Durability) -> Result<MmapMut, JournalError> {
    // SAFETY: the journal directory belongs to this writer; nothing else maps or writes its
    // segments while it is open.
    let map = unsafe { MmapMut::map_mut(file) }.map_err(|e| JournalError::io(path, e))?;
    if durability != Durability::None {
        // Only a hint: without it the journal is slower, not wrong.
        let _ = map.advise(Advice::Random);
    }
    Ok(map)
}

fn start_syncer(config: &JournalConfig, durable: u64) -> Result<Option<Syncer>, JournalError> {
    match config.durability {
        Durability::Batch { .. } => Syncer::start(durable).map(Some),
        _ => Ok(None),
    }
}

/// The page size batch syncs are aligned to.
const SYNC_PAGE_BYTES: usize = 4096;

/// A second, raw mapping of a segment: what the sync thread `msync`s.
fn map_raw(file: &File, path: &Path) -> Result<Arc<MmapRaw>, JournalError> {
    MmapRaw::map_raw(file).map(Arc::new).map_err(|e| JournalError::io(path, e))
}

/// The part of a new segment faulted in ahead of the writes (the rest faults in as it fills).
const SEGMENT_POPULATE_BYTES: usize = 64 << 20;

/// Makes a directory's entries (a created or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| JournalError::io(dir, e))
}
