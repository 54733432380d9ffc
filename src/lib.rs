//! The `cccx` binary's library: the workload generator, the workload reader, the canonical
//! outputs and the benchmark harness. `main.rs` only parses the command line and calls these.

pub mod bench;
pub mod canonical;
pub mod demo;
pub mod fixclient;
pub mod flow;
pub mod genflow;
pub mod journaled;
