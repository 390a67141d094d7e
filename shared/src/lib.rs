//! Vocabulary both sides of Osprey use: id newtypes, job and pipeline statuses,
//! the validated pipeline model, the `.gitlab-ci.yml` front end that builds it,
//! and the JSON shapes of the coordinator's HTTP API. No I/O lives here.

pub mod api;
pub mod failure;
pub mod ids;
pub mod pipeline;
pub mod plan;
pub mod redact;
pub mod status;
pub mod variables;
pub mod yaml;

pub use failure::{Failure, FailureReason};
pub use ids::{AgentId, AttemptId, JobId, PipelineId};
pub use status::{JobStatus, PipelineStatus};
