//! The journal: round trips, restart-then-continue, segment rolls, and the documented outcome
//! of every kind of damage.

use std::path::{Path, PathBuf};

use cccx_engine::journal::{
    scan, scan_pipelined, Durability, JournalConfig, JournalError, JournalWriter, ScanReport,
};
use cccx_engine::{Command, CommandBody, InstrumentId, NewOrder, OrderId, ParticipantId, Side, TimeInForce};

const GENESIS: [u8; 32] = [9; 32];

fn config(dir: &Path, segment_bytes: u64, durability: Durability) -> JournalConfig {
    JournalConfig { dir: dir.to_path_buf(), segment_bytes, durability, genesis: GENESIS }
}

/// Command `i` of a deterministic stream.
fn command(i: u64) -> Command {
    let body = match i % 3 {
        0 => CommandBody::Cancel {
            instrument: InstrumentId(0),
            order_id: OrderId(i - 2),
            participant: ParticipantId((i % 7) as u32),
        },
        _ => CommandBody::New(NewOrder::limit(
            i,
            (i % 7) as u32,
            0,
            if i.is_multiple_of(2) { Side::Buy } else { Side::Sell },
            TimeInForce::Gtc,
            1000 + (i % 13) as i64,
            1 + i % 50,
        )),
    };
    Command { ts_ns: 1_000 + i, body }
}

fn write(dir: &Path, segment_bytes: u64, range: std::ops::Range<u64>, close: bool) -> JournalWriter {
    let (mut writer, report) =
        JournalWriter::open(config(dir, segment_bytes, Durability::None), |_, _| {}).unwrap();
    assert_eq!(report.last_seq + 1, range.start, "the journal continues where it ended");
    for i in range {
        assert_eq!(writer.append(&command(i)).unwrap(), i);
    }
    if close {
        writer.close().unwrap();
        JournalWriter::open(config(dir, segment_bytes, Durability::None), |_, _| {}).unwrap().0
    } else {
        writer
    }
}

/// Scans `dir` both ways, [`scan`] and [`scan_pipelined`], and checks that they make the same
/// calls and end the same way.
fn read(dir: &Path) -> Result<(Vec<(u64, Command)>, ScanReport), JournalError> {
    let mut seen = Vec::new();
    let result = scan(dir, GENESIS, |seq, cmd| seen.push((seq, *cmd)));
    let mut piped = Vec::new();
    let piped_result = scan_pipelined(dir, GENESIS, |seq, cmd| piped.push((seq, *cmd)));
    assert_eq!(piped, seen, "the pipelined scan applies the same commands");
    match (&result, &piped_result) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("scan gave {a:?}, the pipelined scan {b:?}"),
    }
    Ok((seen, result?))
}

fn expect_commands(dir: &Path, n: u64) -> ScanReport {
    let (seen, report) = read(dir).unwrap();
    assert_eq!(seen, (1..=n).map(|i| (i, command(i))).collect::<Vec<_>>());
    report
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(cccx_engine::journal::segment_name(n))
}

/// Offset of record `i` (0-based, seals included) in a segment.
fn at(i: usize) -> usize {
    64 + 64 * i
}

#[test]
fn round_trip_with_seals_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    // 40 records per segment: rolls every 39 commands or so, with a seal at every roll.
    let writer = write(dir.path(), 64 * 41, 1..1001, true);
    let report = expect_commands(dir.path(), 1000);
    assert!(report.segments.len() > 20, "{} segments", report.segments.len());
    assert_eq!(report.unsealed, 0);
    assert_eq!(report.head, writer.head());
    assert!(report.torn_tail.is_none());
}

#[test]
fn restart_then_continue_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    // Dropped without close: like a process killed after these appends.
    drop(write(dir.path(), 64 * 100, 1..151, false));
    drop(write(dir.path(), 64 * 100, 151..152, false));
    let writer = write(dir.path(), 64 * 100, 152..400, true);
    let report = expect_commands(dir.path(), 399);
    assert_eq!(report.head, writer.head());
}

#[test]
fn durability_levels_report_what_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Durability::Batch { records: 10, interval_us: 60_000_000 };
    let (mut w, _) = JournalWriter::open(config(dir.path(), 1 << 16, policy), |_, _| {}).unwrap();
    for i in 1..=25 {
        w.append(&command(i)).unwrap();
    }
    // The sync thread serves the request made at 10 (and at 20, if it was idle by then); it
    // never reports more than was appended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.durable_seq() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!([10, 20].contains(&w.durable_seq()), "durable {}", w.durable_seq());
    w.sync().unwrap();
    assert_eq!(w.durable_seq(), 25);
    drop(w);
    let (mut w, _) = JournalWriter::open(config(dir.path(), 1 << 16, Durability::Every), |_, _| {}).unwrap();
    w.append(&command(26)).unwrap();
    assert_eq!(w.durable_seq(), 26);
    w.close().unwrap();
    expect_commands(dir.path(), 26);
}

#[test]
fn batch_syncs_while_writing_keep_every_record() {
    // Many small group commits over several blocks and segments: each sync drops the writer's
    // mapping of the sealed pages it covers, so this reads back through the page cache what the
    // writer no longer maps.
    let dir = tempfile::tempdir().unwrap();
    let policy = Durability::Batch { records: 16, interval_us: 60_000_000 };
    let segment_bytes = 64 * 4096;
    let (mut w, _) = JournalWriter::open(config(dir.path(), segment_bytes, policy), |_, _| {}).unwrap();
    let n = 10_000;
    for i in 1..=n {
        w.append(&command(i)).unwrap();
        assert!(w.durable_seq() <= i);
        if i % 500 == 0 {
            // Let the sync thread catch up now and then, so that syncs also end mid-block and
            // mid-page.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while w.durable_seq() < i && std::time::Instant::now() < deadline {
                w.sync_soon().unwrap();
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            assert_eq!(w.durable_seq(), i);
        }
    }
    w.sync().unwrap();
    assert_eq!(w.durable_seq(), n);
    let head = w.head();
    // Dropped without close, like a process killed after the sync: nothing is lost.
    drop(w);
    let report = expect_commands(dir.path(), n);
    assert!(report.segments.len() >= 3, "{} segments", report.segments.len());
    // Reopened under batch durability, the journal goes on from there.
    let (mut w, report) = JournalWriter::open(config(dir.path(), segment_bytes, policy), |_, _| {}).unwrap();
    assert_eq!(report.last_seq, n);
    assert!(report.unsealed > 0 || report.head == head);
    w.append(&command(n + 1)).unwrap();
    w.close().unwrap();
    expect_commands(dir.path(), n + 1);
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn corrupt_at(result: Result<(Vec<(u64, Command)>, ScanReport), JournalError>) -> (PathBuf, u64, String) {
    match result {
        Err(JournalError::Corrupt { segment, offset, reason }) => (segment, offset, reason),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok((seen, _)) => panic!("damage not detected ({} commands read)", seen.len()),
    }
}

#[test]
fn a_flipped_byte_before_the_tail_is_refused_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 16, 1..201, true);
    for (record, byte) in [(10, 20), (63, 30), (70, 0), (70, 9)] {
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(segment(dir.path(), 0), segment(copy.path(), 0)).unwrap();
        flip(&segment(copy.path(), 0), at(record) + byte);
        let (seg, offset, reason) = corrupt_at(read(copy.path()));
        assert_eq!((seg, offset), (segment(copy.path(), 0), at(record) as u64), "{reason}");
    }
}

#[test]
fn an_edited_record_with_a_good_crc_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 16, 1..201, true);
    let path = segment(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let r = at(5);
    bytes[r + 48] ^= 1; // the quantity
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[r..r + 4]), &bytes[r + 8..r + 64]);
    bytes[r + 4..r + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (_, offset, reason) = corrupt_at(read(dir.path()));
    assert_eq!(offset, at(200) as u64, "the seal after the edit (written on close)");
    assert!(reason.contains("seal"), "{reason}");
}

#[test]
fn damage_after_many_batches_applies_the_same_commands_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    // Several segments of thousands of records: the pipelined scan hands over many batches.
    write(dir.path(), 64 * 3000, 1..30_001, true);
    let expected = expect_commands(dir.path(), 30_000);
    assert_eq!(expected.last_seq, 30_000);
    // A flipped byte in the middle of the ninth segment (after some 25,000 commands, several
    // batches): `read` checks that both scans apply the commands before it and fail alike.
    flip(&segment(dir.path(), 8), at(1500) + 20);
    let (path, offset, reason) = corrupt_at(read(dir.path()));
    assert_eq!((path, offset), (segment(dir.path(), 8), at(1500) as u64));
    assert!(reason.contains("CRC"), "{reason}");
}

#[test]
fn swapped_or_removed_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 16, 1..201, true);
    let path = segment(dir.path(), 0);
    let original = std::fs::read(&path).unwrap();
    let mut swapped = original.clone();
    let (a, b) = (at(3), at(4));
    let (ra, rb) = (original[a..a + 64].to_vec(), original[b..b + 64].to_vec());
    swapped[a..a + 64].copy_from_slice(&rb);
    swapped[b..b + 64].copy_from_slice(&ra);
    std::fs::write(&path, &swapped).unwrap();
    let (_, offset, reason) = corrupt_at(read(dir.path()));
    assert_eq!(offset, a as u64);
    assert!(reason.contains("sequence 5 where 4 was expected"), "{reason}");
    let mut removed = original.clone();
    removed.drain(at(7)..at(8));
    removed.extend([0u8; 64]);
    std::fs::write(&path, &removed).unwrap();
    let (_, offset, reason) = corrupt_at(read(dir.path()));
    assert_eq!(offset, at(7) as u64, "{reason}");
}

#[test]
fn a_missing_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 64 * 20, 1..100, true);
    std::fs::remove_file(segment(dir.path(), 1)).unwrap();
    let (seg, _, reason) = corrupt_at(read(dir.path()));
    assert_eq!(seg, segment(dir.path(), 2));
    assert!(reason.contains("missing"), "{reason}");
}

/// Truncating the file at every offset inside the last record: recovery cuts the torn record
/// off, reports it, and the journal continues from the command before it.
#[test]
fn truncation_inside_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 1 << 16, 1..11, false));
    let path = segment(dir.path(), 0);
    let full = std::fs::read(&path).unwrap();
    let last = at(9); // command 10: no seal yet
    for cut in last..last + 64 {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(segment(copy.path(), 0), &full[..cut]).unwrap();
        let (seen, report) = read(copy.path()).unwrap();
        assert_eq!(seen.len(), 9, "cut at {cut}");
        assert_eq!(report.torn_tail.is_some(), cut > last, "cut at {cut}");
        // The writer reopens, cuts the tail and goes on from sequence 10.
        let w = write(copy.path(), 1 << 16, 10..20, true);
        assert_eq!(w.last_seq(), 19);
        expect_commands(copy.path(), 19);
    }
}

#[test]
fn a_torn_record_at_the_end_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 1 << 16, 1..11, false));
    flip(&segment(dir.path(), 0), at(9) + 30); // the last record, as a crash mid-write leaves it
    let (seen, report) = read(dir.path()).unwrap();
    assert_eq!(seen.len(), 9);
    let torn = report.torn_tail.expect("reported");
    assert_eq!(torn.offset, at(9) as u64);
    assert!(torn.reason.contains("CRC"), "{}", torn.reason);
    write(dir.path(), 1 << 16, 10..12, true);
    expect_commands(dir.path(), 11);
}

#[test]
fn garbage_after_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 16, 1..11, true);
    let path = segment(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    // Appended past the end of the segment file, and written into the free space.
    let mut appended = bytes.clone();
    appended.extend(b"garbage");
    std::fs::write(&path, &appended).unwrap();
    let (_, offset, reason) = corrupt_at(read(dir.path()));
    assert_eq!(offset, at(11) as u64, "{reason}");
    bytes[at(20)..at(20) + 7].copy_from_slice(b"garbage");
    std::fs::write(&path, &bytes).unwrap();
    let (_, offset, _) = corrupt_at(read(dir.path()));
    assert_eq!(offset, at(11) as u64);
}

#[test]
fn an_unknown_format_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 16, 1..5, true);
    let path = segment(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 9;
    std::fs::write(&path, bytes).unwrap();
    let (_, offset, reason) = corrupt_at(read(dir.path()));
    assert_eq!(offset, 0);
    assert!(reason.contains("format version 9 is not supported"), "{reason}");
}

#[test]
fn a_different_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1 << 16, 1..100, true);
    let result = scan(dir.path(), [0; 32], |_, _| {});
    assert!(matches!(result, Err(JournalError::Corrupt { offset: 0, .. })), "{result:?}");
}

mod damage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever bytes a journal holds, reading it never panics and never yields a command
        /// out of sequence: it gives the commands of an intact prefix, or an error.
        #[test]
        fn arbitrary_damage_never_panics(
            flips in prop::collection::vec((0usize..64 * 300, any::<u8>()), 1..8),
            cut in prop::option::of(64usize..64 * 300),
        ) {
            let dir = tempfile::tempdir().unwrap();
            drop(write(dir.path(), 64 * 300, 1..250, false));
            let path = segment(dir.path(), 0);
            let mut bytes = std::fs::read(&path).unwrap();
            for (at, value) in flips {
                bytes[at] ^= value | 1;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            std::fs::write(&path, &bytes).unwrap();
            if let Ok((seen, report)) = read(dir.path()) {
                prop_assert_eq!(seen.len() as u64, report.last_seq);
                for (i, (seq, cmd)) in seen.iter().enumerate() {
                    prop_assert_eq!(*seq, i as u64 + 1);
                    prop_assert_eq!(*cmd, command(*seq));
                }
            }
        }
    }
}

/// Regressions from the review of the journal (each once a confirmed bug).
mod review {
    use super::*;
    use cccx_engine::journal::SEAL_EVERY;

    fn zero(path: &Path, from: usize, to: usize) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[from..to].fill(0);
        std::fs::write(path, bytes).unwrap();
    }

    /// A crash between the 1023rd command of a block and its seal must not switch sealing off.
    #[test]
    fn sealing_resumes_after_a_crash_before_a_seal() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1 << 20, 1..u64::from(SEAL_EVERY) + 1, false));
        let seal = at(SEAL_EVERY as usize);
        zero(&segment(dir.path(), 0), seal, seal + 64);
        drop(write(dir.path(), 1 << 20, u64::from(SEAL_EVERY) + 1..5001, false));
        let report = expect_commands(dir.path(), 5000);
        assert!(report.unsealed <= SEAL_EVERY, "{} commands after the last seal", report.unsealed);
    }

    /// Lost pages in the middle of the last segment, with records after them: refused, not
    /// taken for the end of the journal.
    #[test]
    fn a_hole_before_later_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1 << 20, 1..1001, true);
        zero(&segment(dir.path(), 0), at(100), at(100) + 8192);
        let (_, offset, _) = corrupt_at(read(dir.path()));
        assert_eq!(offset, at(100) as u64);
    }

    /// Restarting on a full segment rolls on; it never grows the segment.
    #[test]
    fn a_full_segment_is_not_extended_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let size = 64 * 5; // the header and four records
        for i in 1..=40u64 {
            drop(write(dir.path(), size, i..i + 1, false));
        }
        expect_commands(dir.path(), 40);
        for (_, path) in cccx_engine::journal::segment_files(dir.path()).unwrap() {
            assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "{}", path.display());
        }
    }

    /// Under batch durability a segment is durable before the next one is created.
    #[test]
    fn batch_durability_syncs_a_segment_before_rolling() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Durability::Batch { records: 1_000_000, interval_us: 1_000_000_000 };
        let (mut w, _) = JournalWriter::open(config(dir.path(), 16384, policy), |_, _| {}).unwrap();
        for i in 1..=300 {
            w.append(&command(i)).unwrap();
        }
        assert!(w.durable_seq() >= 254, "the first segment's commands are durable ({})", w.durable_seq());
        w.close().unwrap();
        expect_commands(dir.path(), 300);
    }
}
