//! Why a job failed, as a type: GitLab's failure reasons, which `retry:when`
//! names. The agent classifies a failure where it happens and sends the
//! reason beside its human text, so retry never depends on a message's
//! wording.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// GitLab's failure reasons (those `retry:when` accepts, `always` aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    UnknownFailure,
    /// The script exited non-zero.
    ScriptFailure,
    /// A call to the coordinator failed.
    ApiFailure,
    /// The job waited or ran too long on the coordinator's side.
    StuckOrTimeoutFailure,
    /// The agent or its host failed: checkout, image, service, upload, a
    /// lost agent.
    RunnerSystemFailure,
    RunnerUnsupported,
    StaleSchedule,
    /// The job's own `timeout` ran out.
    JobExecutionTimeout,
    ArchivedFailure,
    /// What the job needs before its script could not be had (an upstream
    /// artifact download).
    UnmetPrerequisites,
    SchedulerFailure,
    DataIntegrityFailure,
    /// A deploy job older than the environment's latest deployment: it
    /// does not run (GitLab's "prevent outdated deployment jobs").
    ForwardDeploymentFailure,
}

impl FailureReason {
    pub const ALL: [FailureReason; 13] = [
        FailureReason::UnknownFailure,
        FailureReason::ScriptFailure,
        FailureReason::ApiFailure,
        FailureReason::StuckOrTimeoutFailure,
        FailureReason::RunnerSystemFailure,
        FailureReason::RunnerUnsupported,
        FailureReason::StaleSchedule,
        FailureReason::JobExecutionTimeout,
        FailureReason::ArchivedFailure,
        FailureReason::UnmetPrerequisites,
        FailureReason::SchedulerFailure,
        FailureReason::DataIntegrityFailure,
        FailureReason::ForwardDeploymentFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::ApiFailure => "api_failure",
            FailureReason::StuckOrTimeoutFailure => "stuck_or_timeout_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::RunnerUnsupported => "runner_unsupported",
            FailureReason::StaleSchedule => "stale_schedule",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ArchivedFailure => "archived_failure",
            FailureReason::UnmetPrerequisites => "unmet_prerequisites",
            FailureReason::SchedulerFailure => "scheduler_failure",
            FailureReason::DataIntegrityFailure => "data_integrity_failure",
            FailureReason::ForwardDeploymentFailure => "forward_deployment_failure",
        }
    }

    /// Whether `retry:when: [name]` covers this reason (`always` covers all;
    /// GitLab counts a job timeout as `stuck_or_timeout_failure` too).
    pub fn matches_retry_when(self, name: &str) -> bool {
        name == "always"
            || name == self.as_str()
            || (name == "stuck_or_timeout_failure" && self == FailureReason::JobExecutionTimeout)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure reason name that GitLab does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown failure reason {0:?}")]
pub struct UnknownFailureReason(pub String);

impl FromStr for FailureReason {
    type Err = UnknownFailureReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownFailureReason(s.to_owned()))
    }
}

/// A failure: its reason, and the human text beside it ("image alpine:3
/// not found").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: FailureReason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_name() {
        for reason in FailureReason::ALL {
            assert_eq!(reason.as_str().parse::<FailureReason>().unwrap(), reason);
        }
        assert!("script failure".parse::<FailureReason>().is_err());
    }

    #[test]
    fn a_timeout_is_also_a_stuck_or_timeout_failure() {
        let timeout = FailureReason::JobExecutionTimeout;
        assert!(timeout.matches_retry_when("stuck_or_timeout_failure"));
        assert!(timeout.matches_retry_when("job_execution_timeout"));
        assert!(timeout.matches_retry_when("always"));
        assert!(!timeout.matches_retry_when("script_failure"));
        assert!(!FailureReason::ScriptFailure.matches_retry_when("stuck_or_timeout_failure"));
    }
}
