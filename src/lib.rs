//! The `cccx` binary's library: the workload generator, the workload reader and the benchmark
//! harness. `main.rs` only parses the command line and calls into these.

pub mod genflow;
