//! Helpers the end-to-end tests of the `cccx` binary share.
// Each test crate uses its own subset.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `cccx` binary with `args` and waits for it.
pub fn cccx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cccx")).args(args).output().expect("the cccx binary runs")
}

/// What it printed on stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What it printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temporary path as an argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}
