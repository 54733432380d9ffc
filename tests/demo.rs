//! `cccx demo` end to end: the binary runs a whole call auction session against a registry
//! service and must print the expected auction result, remove the short seller's bids, settle
//! every trade and find no breaks.

use std::process::Command;

#[test]
fn the_demo_session_clears_settles_and_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_cccx"))
        .args(["demo", "--data-dir"])
        .arg(&data)
        .output()
        .expect("cccx demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    // Hand-computed from the bids (see src/demo.rs): without PAPERCO's 12,000 @ 1,000 the
    // volume is largest (23,000) between 1,180 and 1,200 with equal surplus; the midpoint rule
    // gives 1,190.
    for line in [
        "PAPERCO (IN-CCC-0005) found short: 1 of its 1 bids removed before the uncross",
        "market clearing price 1190, market clearing volume 23000",
        "STEELCO   sold    17000 @ 1190",
        "TEXCO     sold     6000 @ 1190",
        "PAPERCO   sold        0",
        "STEELCO   IN-CCC-0004:  33000",
        "ALUCO     IN-CCC-0001:   8000",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in\n{stdout}");
    }
    assert!(stdout.contains("\"confirmed\":5"), "{stdout}");
    assert!(!stdout.contains(" broken"), "{stdout}");
    // The data stays where asked, and a second run refuses to reuse it.
    assert!(data.join("registry.sqlite").exists());
    let again =
        Command::new(env!("CARGO_BIN_EXE_cccx")).args(["demo", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("needs an empty or new directory"));
}
