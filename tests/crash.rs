//! Process-level crash test: `cccx run` is killed with SIGKILL at seeded random points, restarted
//! (recovering from its snapshots and journal) and continued, many times. No acknowledged
//! command may be lost, none applied twice: the final state hash must equal an uninterrupted
//! run's, and the journal must hold every command exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn cccx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cccx"))
}

/// A small deterministic random source (splitmix64), so that any failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// What one run of `cccx run` printed before it ended or was killed.
#[derive(Default, Debug)]
struct RunOutput {
    recovered: Option<u64>,
    max_ack: u64,
    state: Option<String>,
    last_seq: Option<u64>,
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok())
}

/// Runs `cccx run` and kills it once it has acknowledged `kill_after` commands (never, if
/// `None`).
fn run(flow: &Path, journal: &Path, extra: &[&str], kill_after: Option<u64>) -> RunOutput {
    let mut child = cccx()
        .args(["run", "--flow", flow.to_str().unwrap(), "--journal", journal.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cccx runs");
    let stdout = child.stdout.take().unwrap();
    let mut out = RunOutput::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("recovered") {
            out.recovered = field(&line, "seq=");
        } else if let Some(seq) = line.strip_prefix("ack ") {
            out.max_ack = out.max_ack.max(seq.trim().parse().unwrap());
            if kill_after.is_some_and(|k| out.max_ack >= k) {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        } else if let Some(hash) = line.strip_prefix("state ") {
            out.state = Some(hash.trim().to_string());
        } else if line.starts_with("last") {
            out.last_seq = field(&line, "seq=");
        }
    }
    let status = child.wait().unwrap();
    if kill_after.is_none() || out.recovered.is_none() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            out.recovered.is_some() && (kill_after.is_some() || status.success()),
            "cccx run failed: {err}"
        );
    }
    out
}

#[test]
fn killed_at_random_points_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.csv");
    let gen = cccx()
        .args(["gen-flow", "--ops", "6000", "--seed", "11", "--instruments", "2", "--participants", "20"])
        .args(["--max-live", "300", "--out", flow.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(gen.success());
    let total = 6000;

    let whole = run(&flow, &dir.path().join("whole"), &["--durability", "every"], None);
    let expected = whole.state.expect("an uninterrupted run prints its state hash");
    assert_eq!(whole.last_seq, Some(total));
    let piped = run(&flow, &dir.path().join("piped"), &["--durability", "batch", "--journal-thread"], None);
    assert_eq!(piped.state.as_deref(), Some(expected.as_str()), "the journal thread changes the state");
    assert_eq!(piped.max_ack, total, "every command acknowledged");

    let journal = dir.path().join("crashy");
    let mut rng = Rng(20261129);
    let (mut acked, mut kills) = (0, 0);
    for round in 0..12 {
        let options: &[&str] = match round % 4 {
            0 => &["--durability", "every"],
            1 => &["--durability", "every", "--snapshot-every", "700"],
            2 => &["--durability", "batch", "--batch-records", "16", "--snapshot-every", "1100"],
            _ => &[
                "--durability",
                "batch",
                "--batch-records",
                "16",
                "--snapshot-every",
                "900",
                "--journal-thread",
            ],
        };
        let kill_after = acked + 1 + rng.below(900);
        let out = run(&flow, &journal, options, Some(kill_after));
        let recovered = out.recovered.expect("every run reports what it recovered");
        assert!(recovered >= acked, "round {round}: recovered {recovered} but {acked} were acknowledged");
        acked = acked.max(out.max_ack);
        if out.max_ack >= total {
            break;
        }
        kills += 1;
    }
    assert!(kills >= 6, "only {kills} runs were killed before the end");
    let last = run(&flow, &journal, &["--durability", "every"], None);
    assert!(last.recovered.unwrap() >= acked);
    assert_eq!(last.last_seq, Some(total), "every command journaled exactly once");
    assert_eq!(last.state.as_deref(), Some(expected.as_str()), "the state after crashes differs");

    let verify = cccx().args(["journal", "verify", journal.to_str().unwrap()]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let replay = cccx().args(["replay", journal.to_str().unwrap()]).output().unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let printed = String::from_utf8_lossy(&replay.stdout);
    assert!(printed.contains(&expected), "replay prints the same state hash: {printed}");
}
