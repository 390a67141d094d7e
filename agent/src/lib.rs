//! The Osprey agent: registers with a coordinator, holds a session open to
//! receive jobs, runs each with an [`executor::Executor`] (shell or Docker),
//! streams its log through an on-disk spool, uploads its artifacts and reports
//! its status. Entry points: [`agent::run`] and [`agent::register`]; the binary
//! in `main.rs` only parses flags and wires signals.

pub mod agent;
pub mod archive;
pub mod artifacts;
pub mod cache;
pub mod client;
pub mod config;
pub mod credentials;
pub mod exec;
pub mod executor;
pub mod file_variables;
pub mod git_cache;
pub mod guard;
pub mod job_runner;
pub mod lease;
pub mod log_stream;
pub mod mask;
pub mod metrics;
pub mod registry;
pub mod retry;
pub mod script;
pub mod session;
pub mod tasks;
pub mod workspace;
