//! The journal on a second thread (`journal::pipeline`): every command is applied in order,
//! only once the journal holds it, and the journal ends up holding exactly what a one-thread
//! run would have written.

use std::path::Path;

use cccx_engine::journal::pipeline::{journal_and_apply, PipelineError};
use cccx_engine::journal::{scan, Durability, JournalConfig, JournalWriter};
use cccx_engine::{Command, CommandBody, InstrumentId, NewOrder, OrderId, ParticipantId, Side, TimeInForce};
use proptest::prelude::*;

const GENESIS: [u8; 32] = [3; 32];

fn config(dir: &Path, segment_bytes: u64, durability: Durability) -> JournalConfig {
    JournalConfig { dir: dir.to_path_buf(), segment_bytes, durability, genesis: GENESIS }
}

fn command(i: u64) -> Command {
    let body = if i.is_multiple_of(4) {
        CommandBody::Cancel {
            instrument: InstrumentId(0),
            order_id: OrderId(i - 1),
            participant: ParticipantId(1),
        }
    } else {
        let side = if i.is_multiple_of(2) { Side::Buy } else { Side::Sell };
        CommandBody::New(NewOrder::limit(i, 1, 0, side, TimeInForce::Gtc, 1000 + (i % 9) as i64, 1 + i % 20))
    };
    Command { ts_ns: i, body }
}

fn journaled(dir: &Path) -> Vec<(u64, Command)> {
    let mut seen = Vec::new();
    scan(dir, GENESIS, |seq, cmd| seen.push((seq, *cmd))).unwrap();
    seen
}

fn durability(kind: u8) -> Durability {
    match kind {
        0 => Durability::None,
        1 => Durability::Batch { records: 7, interval_us: 200 },
        _ => Durability::Every,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the sizes, policy and sync requests: commands are applied in order, each after
    /// the journal published it; a requested sync is durable when `sync_to` returns; and the
    /// journal holds exactly the commands, continuing an existing journal's sequence.
    #[test]
    fn applies_in_order_after_the_journal(
        before in 0u64..100,
        n in 0u64..1500,
        records_per_segment in 3u64..400,
        kind in 0u8..3,
        sync_every in 1u64..600,
    ) {
        let n = if kind == 2 { n.min(150) } else { n };
        let dir = tempfile::tempdir().unwrap();
        let cfg = || config(dir.path(), 64 * (records_per_segment + 1), durability(kind));
        let (mut writer, _) = JournalWriter::open(cfg(), |_, _| {}).unwrap();
        for i in 1..=before {
            writer.append(&command(i)).unwrap();
        }
        let commands: Vec<Command> = (before + 1..=before + n).map(command).collect();
        let mut applied = Vec::new();
        let result = journal_and_apply(&mut writer, &commands, |seq, cmd, progress| {
            prop_assert!(progress.appended_seq() >= seq, "seq {} applied before it was journaled", seq);
            prop_assert!(progress.durable_seq() <= progress.appended_seq());
            if seq % sync_every == 0 {
                prop_assert!(progress.sync_to(seq));
                prop_assert!(progress.durable_seq() >= seq);
            }
            applied.push((seq, *cmd));
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(PipelineError::Apply(e)) => return Err(e),
            Err(PipelineError::Journal(e)) => panic!("journal failed: {e}"),
        }
        let expected: Vec<(u64, Command)> = (before + 1..=before + n).map(|i| (i, command(i))).collect();
        prop_assert_eq!(&applied, &expected);
        prop_assert_eq!(writer.last_seq(), before + n);
        writer.close().unwrap();
        let all: Vec<(u64, Command)> = (1..=before + n).map(|i| (i, command(i))).collect();
        prop_assert_eq!(journaled(dir.path()), all);
    }
}

#[test]
fn an_apply_error_stops_both_threads_and_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, _) =
        JournalWriter::open(config(dir.path(), 64 * 1000, Durability::None), |_, _| {}).unwrap();
    let commands: Vec<Command> = (1..=20_000).map(command).collect();
    let mut applied = 0;
    let result = journal_and_apply(&mut writer, &commands, |seq, _, _| {
        if seq == 777 {
            return Err(format!("refused {seq}"));
        }
        applied += 1;
        Ok(())
    });
    match result {
        Err(PipelineError::Apply(message)) => assert_eq!(message, "refused 777"),
        other => panic!("expected the apply error, got {other:?}"),
    }
    assert_eq!(applied, 776);
    // The journal thread ran ahead, but stopped: it holds at least what was applied and the
    // failed command, and not necessarily the rest.
    let last = writer.last_seq();
    assert!((777..=20_000).contains(&last), "journal holds {last}");
    writer.close().unwrap();
    assert_eq!(journaled(dir.path()).len() as u64, last);
}

#[test]
fn a_panic_in_apply_reaches_the_caller_instead_of_hanging() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) =
            JournalWriter::open(config(dir.path(), 64 * 1000, Durability::None), |_, _| {}).unwrap();
        let commands: Vec<Command> = (1..=100).map(command).collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = journal_and_apply(&mut writer, &commands, |seq, _, _| {
                assert!(seq < 50, "apply gave up at {seq}");
                Ok::<(), String>(())
            });
        }));
        let _ = done_tx.send(result.is_err());
    });
    match done_rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(panicked) => assert!(panicked, "the panic is passed on"),
        Err(_) => panic!("journal_and_apply hung after a panic in apply"),
    }
}
