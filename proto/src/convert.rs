//! Conversions between wire enums and the domain types of `osprey-shared`,
//! written once for both sides.

use crate::v1::FailureKind;
use osprey_shared::FailureReason;

impl From<FailureReason> for FailureKind {
    fn from(reason: FailureReason) -> Self {
        match reason {
            FailureReason::UnknownFailure => FailureKind::UnknownFailure,
            FailureReason::ScriptFailure => FailureKind::ScriptFailure,
            FailureReason::ApiFailure => FailureKind::ApiFailure,
            FailureReason::StuckOrTimeoutFailure => FailureKind::StuckOrTimeoutFailure,
            FailureReason::RunnerSystemFailure => FailureKind::RunnerSystemFailure,
            FailureReason::RunnerUnsupported => FailureKind::RunnerUnsupported,
            FailureReason::StaleSchedule => FailureKind::StaleSchedule,
            FailureReason::JobExecutionTimeout => FailureKind::JobExecutionTimeout,
            FailureReason::ArchivedFailure => FailureKind::ArchivedFailure,
            FailureReason::UnmetPrerequisites => FailureKind::UnmetPrerequisites,
            FailureReason::SchedulerFailure => FailureKind::SchedulerFailure,
            FailureReason::DataIntegrityFailure => FailureKind::DataIntegrityFailure,
            FailureReason::ForwardDeploymentFailure => FailureKind::ForwardDeploymentFailure,
        }
    }
}

impl From<FailureKind> for FailureReason {
    /// An unspecified kind (an agent that predates the field) is unknown.
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Unspecified | FailureKind::UnknownFailure => FailureReason::UnknownFailure,
            FailureKind::ScriptFailure => FailureReason::ScriptFailure,
            FailureKind::ApiFailure => FailureReason::ApiFailure,
            FailureKind::StuckOrTimeoutFailure => FailureReason::StuckOrTimeoutFailure,
            FailureKind::RunnerSystemFailure => FailureReason::RunnerSystemFailure,
            FailureKind::RunnerUnsupported => FailureReason::RunnerUnsupported,
            FailureKind::StaleSchedule => FailureReason::StaleSchedule,
            FailureKind::JobExecutionTimeout => FailureReason::JobExecutionTimeout,
            FailureKind::ArchivedFailure => FailureReason::ArchivedFailure,
            FailureKind::UnmetPrerequisites => FailureReason::UnmetPrerequisites,
            FailureKind::SchedulerFailure => FailureReason::SchedulerFailure,
            FailureKind::DataIntegrityFailure => FailureReason::DataIntegrityFailure,
            FailureKind::ForwardDeploymentFailure => FailureReason::ForwardDeploymentFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_wire() {
        for reason in FailureReason::ALL {
            assert_eq!(FailureReason::from(FailureKind::from(reason)), reason);
        }
        assert_eq!(
            FailureReason::from(FailureKind::Unspecified),
            FailureReason::UnknownFailure
        );
    }
}
