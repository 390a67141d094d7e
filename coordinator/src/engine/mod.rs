//! The pipeline state machine: pure logic, no I/O. [`apply`] takes one
//! pipeline's state and an event (a job assigned, an attempt ended, a lease
//! expired, a cancel, a manual play, time passing, a resource group freed)
//! and returns the new state and the effects to carry out. Storage loads the
//! state, persists the change and hands the effects back, in one
//! transaction, so a crash never leaves a pipeline half-advanced and no rule
//! of a job's life is written twice.

pub mod matching;
mod stages;
mod state;
mod transition;

pub use stages::{advance, Decision};
pub use state::{
    AttemptEnd, Context, Effect, Event, JobRules, JobState, PipelineState, Refusal, Transition,
};
pub use transition::{apply, retries, AGENT_LOST, CANCEL_UNCONFIRMED};
