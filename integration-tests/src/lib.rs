//! Harness for Osprey's end-to-end tests: real `osprey-coordinator`,
//! `osprey-agent` and `osprey` processes on loopback (so they can be killed
//! with SIGKILL), real git repositories in temp dirs, a typed client over the
//! HTTP API, helpers that wait for states instead of sleeping, and one-call
//! pipeline runs with status assertions ([`pipeline`]).
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

pub mod api;
pub mod bins;
mod child;
pub mod cli;
pub mod cluster;
pub mod fake_agent;
pub mod git;
pub mod pipeline;
pub mod procs;
pub mod proxy;
pub mod wait;

pub use api::{ApiClient, ApiError, JobTimes};
pub use cluster::{Agent, AgentOpts, Coordinator, CoordinatorOpts, TestCluster};
pub use git::TestRepo;
pub use pipeline::{PipelineExt, PIPELINE_TIMEOUT};
pub use proxy::FreezingProxy;
pub use wait::wait_for;
