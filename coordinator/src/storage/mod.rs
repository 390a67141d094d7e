//! Durable state: SQLite under the data dir, the single source of truth.
//! In-memory state (connected agents, the pending queue, leases) is a cache
//! rebuilt from here at start.
//!
//! Every write that changes a job's status runs the pipeline state machine
//! ([`crate::engine::advance`]) inside the same transaction, so a crash never
//! leaves a pipeline half-advanced.

mod idempotency;
mod lifecycle;
/// Copying a stopped coordinator's state between databases (`migrate-store`).
pub mod migrate;
mod records;
mod rows;
mod sqlite;

pub use idempotency::{IdempotencyKey, Keyed};
pub use lifecycle::{retry_reason, FinishResult};
pub(crate) use records::ended;
pub use records::{AppendResult, Fence};
pub use rows::{AgentRow, JobRow, PipelineRow};
pub use sqlite::{CommitDetails, NewAgent, NewPipeline, Store};

#[cfg(test)]
mod tests;
