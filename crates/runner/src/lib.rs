//! The runner protocol (`agynio.api.runner.v1.RunnerService`) as a Rust
//! trait, and the runner that runs workloads as local processes.
//!
//! The platform calls every runner through [`Runner`]: a runner built into
//! `agyn serve` is called directly, and a standalone runner is called over
//! gRPC with mutual TLS through a client that implements the same trait.

pub mod local;
pub mod protocol;

pub use local::LocalRunner;
pub use protocol::{LogStream, Runner, RunnerFuture};
