//! The runner protocol (`agynio.api.runner.v1.RunnerService`) as a Rust
//! trait, and the runner that runs workloads as local processes.
//!
//! The platform calls every runner through [`Runner`]: a runner built into
//! `agyn serve` is called directly, and a standalone runner is called over
//! gRPC with mutual TLS through [`RemoteRunner`], which implements the same
//! trait. [`serve_tls`] puts any [`Runner`] on the network as
//! `RunnerService`, through [`RunnerRpc`].
#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub mod local;
pub mod protocol;
mod remote;
mod rpc;
mod serve;
mod tls;

pub use local::LocalRunner;
pub use protocol::{LogStream, Runner, RunnerFuture};
pub use remote::RemoteRunner;
pub use rpc::RunnerRpc;
pub use serve::serve_tls;
