//! Golden replay logs (`replay-logs/*/`): each recorded journal verifies and replays to the
//! expected state hash, and replaying its `commands.txt` rebuilds it byte for byte, so that any
//! change of the journal, snapshot or state-hash format shows up here (and must bump that
//! format's version and regenerate the logs with `replay-logs/regenerate.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cccx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cccx")).args(args).output().expect("the cccx binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn goldens() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-logs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("replay-logs/ exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.join("commands.txt").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "golden logs missing in {}", root.display());
    dirs
}

/// The `state ...` and `last seq=...` lines of a run or replay.
fn state_lines(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| l.starts_with("state ") || l.starts_with("last seq="))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn golden_journals_verify_and_replay_to_their_state() {
    for dir in goldens() {
        let journal = dir.join("journal");
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        let verify = cccx(&["journal", "verify", journal.to_str().unwrap()]);
        assert!(verify.status.success(), "{}: {}", dir.display(), text(&verify.stderr));
        let replay = cccx(&["replay", journal.to_str().unwrap()]);
        assert!(replay.status.success(), "{}: {}", dir.display(), text(&replay.stderr));
        assert_eq!(state_lines(&text(&replay.stdout)), expected.trim(), "{}", dir.display());
    }
}

#[test]
fn golden_journals_are_rebuilt_byte_for_byte() {
    for dir in goldens() {
        let work = tempfile::tempdir().unwrap();
        let (flow, journal) = (work.path().join("flow.csv"), work.path().join("journal"));
        let commands = std::fs::read_to_string(dir.join("commands.txt")).unwrap();
        let mut last = String::new();
        for line in commands.lines().filter(|l| !l.trim().is_empty()) {
            let line = line
                .replace("$FLOW", flow.to_str().unwrap())
                .replace("$JOURNAL", journal.to_str().unwrap())
                .replace("$HERE", dir.to_str().unwrap());
            let args: Vec<&str> = line.split_whitespace().collect();
            let out = cccx(&args);
            assert!(out.status.success(), "{line}: {}", text(&out.stderr));
            last = text(&out.stdout);
        }
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        assert_eq!(state_lines(&last), expected.trim(), "{}", dir.display());
        let (golden, rebuilt) = (files(&dir.join("journal")), files(&journal));
        let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&golden), names(&rebuilt), "{}", dir.display());
        for ((name, a), (_, b)) in golden.iter().zip(&rebuilt) {
            assert!(
                a == b,
                "{}/journal/{name} differs from a fresh recording: the on-disk format changed. \
                 Bump its version and run replay-logs/regenerate.sh",
                dir.display()
            );
        }
    }
}

#[test]
fn a_journal_of_another_format_version_is_refused_clearly() {
    let golden = &goldens()[0];
    let copy = tempfile::tempdir().unwrap();
    for (name, bytes) in files(&golden.join("journal")) {
        std::fs::write(copy.path().join(name), bytes).unwrap();
    }
    let first = copy.path().join("0000000000.cccxj");
    let mut bytes = std::fs::read(&first).unwrap();
    // Version 3 is the format before FUNDS, HOLDINGS and SHORTFALL records: an older file
    // this build refuses.
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&first, bytes).unwrap();
    let out = cccx(&["replay", copy.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("journal format version 3 is not supported (this build reads version 4)"), "{err}");
    assert!(err.contains("0000000000.cccxj"), "{err}");
}
