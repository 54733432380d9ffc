//! The Rust port of the workload generator writes the same bytes as `shared/workloads/genflow.py`.
//!
//! Runs `python3 ../shared/workloads/genflow.py` (relative to the package) and
//! [`cccx::genflow::write_flow`] with the same options and compares the outputs byte for byte.
//! A missing script or `python3` fails the tests, unless `CCCX_SKIP_SHARED=1` is set.

use std::path::PathBuf;
use std::process::{Command, Output};

use cccx::genflow::{write_flow, GenFlowArgs, Profile};
use clap::ValueEnum;

/// `genflow.py`, beside the project in the `shared/` checkout.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/workloads/genflow.py")
}

/// Whether the run may skip the comparison when the script or `python3` is missing.
fn skip_allowed() -> bool {
    std::env::var_os("CCCX_SKIP_SHARED").is_some_and(|v| v == "1")
}

/// Fails (or, with `CCCX_SKIP_SHARED=1`, notes and returns `None`) because of `problem`.
fn unavailable(problem: String) -> Option<Output> {
    assert!(skip_allowed(), "{problem}; the Python comparison needs it (set CCCX_SKIP_SHARED=1 to skip)");
    eprintln!("note: skipping the comparison with genflow.py: {problem} (CCCX_SKIP_SHARED=1)");
    None
}

/// The command-line spelling of `args` for `genflow.py`; `--opt=value` keeps negatives values.
fn python_argv(args: &GenFlowArgs) -> Vec<String> {
    let profile = args.profile.to_possible_value().expect("profiles have names");
    vec![
        format!("--profile={}", profile.get_name()),
        format!("--ops={}", args.ops),
        format!("--seed={}", args.seed),
        format!("--participants={}", args.participants),
        format!("--instruments={}", args.instruments),
        format!("--mid={}", args.mid),
        format!("--prefill={}", args.prefill),
        format!("--max-live={}", args.max_live),
    ]
}

/// Runs `genflow.py` with `args`; `None` when skipped.
fn run_python(args: &GenFlowArgs) -> Option<Output> {
    let script = script();
    if !script.is_file() {
        return unavailable(format!("{} not found", script.display()));
    }
    match Command::new("python3").arg(&script).args(python_argv(args)).output() {
        Ok(output) => Some(output),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => unavailable("python3 not found".into()),
        Err(err) => panic!("cannot run python3 {}: {err}", script.display()),
    }
}

/// The bytes `genflow.py` writes for `args`; `None` when skipped.
fn python_flow(args: &GenFlowArgs) -> Option<Vec<u8>> {
    let output = run_python(args)?;
    assert!(
        output.status.success(),
        "genflow.py {} failed ({}): {}",
        python_argv(args).join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(output.stdout)
}

/// The bytes the Rust port writes for `args`.
fn rust_flow(args: &GenFlowArgs) -> Vec<u8> {
    let mut out = Vec::new();
    write_flow(args, &mut out).unwrap_or_else(|err| panic!("write_flow({args:?}): {err}"));
    out
}

/// Asserts that both generators write the same bytes, showing the first differing line if not.
fn assert_same(args: GenFlowArgs) {
    let Some(python) = python_flow(&args) else { return };
    let rust = rust_flow(&args);
    if python == rust {
        return;
    }
    let (py_text, rs_text) = (String::from_utf8_lossy(&python), String::from_utf8_lossy(&rust));
    let (mut py_lines, mut rs_lines) = (py_text.lines(), rs_text.lines());
    for number in 1.. {
        let (py_line, rs_line) = (py_lines.next(), rs_lines.next());
        assert_eq!(
            rs_line,
            py_line,
            "line {number} differs (left: Rust, right: Python) for genflow.py {}",
            python_argv(&args).join(" ")
        );
        if py_line.is_none() {
            break;
        }
    }
    panic!("outputs differ only in line endings for {args:?}");
}

fn small(profile: Profile) -> GenFlowArgs {
    GenFlowArgs { profile, ops: 3000, ..GenFlowArgs::default() }
}

#[test]
fn continuous_default_seed() {
    assert_same(small(Profile::Continuous));
}

#[test]
fn continuous_other_seed_few_participants_and_live_cap() {
    assert_same(GenFlowArgs {
        seed: 987_654_321,
        participants: 7,
        max_live: 25,
        ..small(Profile::Continuous)
    });
}

#[test]
fn continuous_negative_seed_and_low_mid() {
    // A mid near zero exercises the max(1, ...) clamps and the drift floor at 200.
    assert_same(GenFlowArgs { seed: -42, mid: 3, max_live: 40, ..small(Profile::Continuous) });
}

#[test]
fn continuous_huge_seeds() {
    assert_same(GenFlowArgs { seed: i128::MIN, ..small(Profile::Continuous) });
    assert_same(GenFlowArgs { seed: (1 << 100) + 12_345, ..small(Profile::Continuous) });
}

#[test]
fn continuous_zero_live_cap() {
    assert_same(GenFlowArgs { max_live: 0, ..small(Profile::Continuous) });
    assert_same(GenFlowArgs { max_live: -5, ops: 500, ..small(Profile::Continuous) });
}

#[test]
fn deep_book_with_prefill() {
    assert_same(GenFlowArgs { prefill: 500, ..small(Profile::DeepBook) });
    assert_same(GenFlowArgs {
        prefill: 500,
        seed: -3,
        instruments: 2,
        mid: 1000,
        ..small(Profile::DeepBook)
    });
}

#[test]
fn auction_several_instruments() {
    assert_same(GenFlowArgs { instruments: 3, ..small(Profile::Auction) });
    assert_same(GenFlowArgs {
        instruments: 3,
        seed: -77,
        prefill: 200,
        max_live: 30,
        ..small(Profile::Auction)
    });
}

#[test]
fn nothing_to_generate() {
    // No command draws a participant or an instrument, so Python accepts zero and negative counts.
    let none = GenFlowArgs { ops: -4, participants: 0, instruments: 0, ..GenFlowArgs::default() };
    assert_same(none.clone());
    assert_same(GenFlowArgs { profile: Profile::Auction, instruments: 4, ..none.clone() });
    assert_same(GenFlowArgs { profile: Profile::Auction, instruments: -1, ..none });
}

#[test]
fn invalid_counts_fail_where_python_crashes() {
    for args in [
        GenFlowArgs { ops: 10, participants: 0, ..GenFlowArgs::default() },
        GenFlowArgs { ops: 0, prefill: 3, instruments: 0, ..GenFlowArgs::default() },
        GenFlowArgs { ops: 10, instruments: -2, ..GenFlowArgs::default() },
    ] {
        let Some(output) = run_python(&args) else { return };
        assert!(!output.status.success(), "genflow.py {} succeeded", python_argv(&args).join(" "));
        let err = write_flow(&args, std::io::sink()).expect_err("invalid counts");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{args:?}: {err}");
    }
}

#[test]
fn continuous_long_run() {
    // Long enough for the live list and the mid drift to matter.
    assert_same(GenFlowArgs { ops: 200_000, ..GenFlowArgs::default() });
}
