//! The Osprey coordinator: turns commits into pipelines, runs the pipeline
//! state machine, pushes jobs to connected agents over gRPC sessions, and keeps
//! logs, statuses and artifacts durable in SQLite under the data dir.

pub mod artifact_store;
pub mod auth;
pub mod config;
pub mod core;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod http;
pub mod repo;
pub mod server;
pub mod spec;
pub mod storage;
pub mod tasks;
pub mod throttle;
pub mod transfer;
