//! Job and pipeline statuses, spelled as GitLab spells them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Status of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for earlier stages.
    Created,
    /// Ready to run, waiting for an agent.
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    /// Not run because of an earlier stage's result.
    Skipped,
    /// Waits for a person to start it.
    Manual,
    /// A `when: delayed` job waiting for its `start_in`.
    Scheduled,
    /// Ready, but another job of its `resource_group` is running.
    WaitingForResource,
}

impl JobStatus {
    pub const ALL: [JobStatus; 10] = [
        JobStatus::Created,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::Skipped,
        JobStatus::Manual,
        JobStatus::Scheduled,
        JobStatus::WaitingForResource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Scheduled => "scheduled",
            JobStatus::WaitingForResource => "waiting_for_resource",
        }
    }

    /// A finished job never changes status again.
    pub fn is_finished(self) -> bool {
        match self {
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped => {
                true
            }
            JobStatus::Created
            | JobStatus::Pending
            | JobStatus::Running
            | JobStatus::Manual
            | JobStatus::Scheduled
            | JobStatus::WaitingForResource => false,
        }
    }
}

/// Status of a whole pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    /// Held up by a manual job that must run before the rest can
    /// (`allow_failure: false`); GitLab's blocked pipeline.
    Manual,
}

impl PipelineStatus {
    pub const ALL: [PipelineStatus; 7] = [
        PipelineStatus::Created,
        PipelineStatus::Pending,
        PipelineStatus::Running,
        PipelineStatus::Success,
        PipelineStatus::Failed,
        PipelineStatus::Canceled,
        PipelineStatus::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Created => "created",
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
            PipelineStatus::Manual => "manual",
        }
    }

    pub fn is_finished(self) -> bool {
        match self {
            PipelineStatus::Success | PipelineStatus::Failed | PipelineStatus::Canceled => true,
            PipelineStatus::Created
            | PipelineStatus::Pending
            | PipelineStatus::Running
            | PipelineStatus::Manual => false,
        }
    }
}

/// A status string that names no status.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

macro_rules! status_text {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|status| status.as_str() == s)
                    .ok_or_else(|| UnknownStatus(s.to_owned()))
            }
        }
    };
}
status_text!(JobStatus);
status_text!(PipelineStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
        for status in PipelineStatus::ALL {
            assert_eq!(status.as_str().parse::<PipelineStatus>().unwrap(), status);
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
