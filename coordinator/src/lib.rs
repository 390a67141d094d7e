//! The Osprey coordinator: turns commits into pipelines, runs the pipeline
//! state machine, pushes jobs to connected agents over gRPC sessions, and keeps
//! logs, statuses and artifacts durable: state in SQLite (default) or
//! PostgreSQL behind [`storage::Store`], archives and caches in a directory
//! or an S3 bucket behind [`artifact_store::ArtifactStore`].

pub mod artifact_store;
pub mod auth;
pub mod config;
pub mod core;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod repo;
pub mod rotate;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod spec;
pub mod storage;
pub mod tasks;
pub mod throttle;
pub mod transfer;
pub mod web;
