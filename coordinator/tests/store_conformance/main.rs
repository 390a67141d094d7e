//! The store's conformance suite: one set of behaviours, run against every
//! backend — SQLite in a temp dir and PostgreSQL in a server this binary
//! starts (`osprey_test_support::postgres`). Time is a [`ManualClock`], so
//! delays and expiry are tested without sleeping.

mod deployments;
mod lifecycle;
mod pipelines;
mod projects;
mod records;
mod stats;
mod web;

use osprey_coordinator::storage::{
    Assignment, AttemptEnd, Fence, ManualClock, SharedStore, SqlStore,
};
use osprey_shared::pipeline::{JobDef, Pipeline};
use osprey_shared::{Failure, FailureReason, JobId};
use std::sync::Arc;

pub struct Harness {
    pub store: SharedStore,
    pub sql: SqlStore,
    pub clock: ManualClock,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = osprey_coordinator::storage::sqlite_url(dir.path());
        Harness::open(url, Some(dir)).await
    }

    async fn postgres() -> Harness {
        let url = osprey_test_support::postgres::TempPostgres::shared()
            .fresh_database("conformance")
            .unwrap();
        Harness::open(url, None).await
    }

    async fn open(url: String, dir: Option<tempfile::TempDir>) -> Harness {
        let clock = ManualClock::new(time::macros::datetime!(2026-12-01 12:00 UTC));
        let sql = SqlStore::open_with_clock(&url, Arc::new(clock.clone()))
            .await
            .unwrap();
        Harness {
            store: Arc::new(sql.clone()),
            sql,
            clock,
            url,
            _dir: dir,
        }
    }
}

/// Runs each named test on each backend.
macro_rules! conformance {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$module::$name(super::Harness::sqlite().await).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$module::$name(super::Harness::postgres().await).await
            })*
        }
    };
}

conformance!(
    pipelines::migrations_apply_to_an_empty_database_and_reopen,
    pipelines::a_status_that_does_not_parse_is_an_error,
    pipelines::a_key_creates_one_pipeline_and_refuses_another_request,
    pipelines::racing_keyed_creates_make_one_pipeline,
    lifecycle::finishing_a_job_is_fenced_and_advances_the_pipeline,
    lifecycle::an_expired_lease_fails_the_job_as_a_system_failure_and_fences_it,
    lifecycle::cancel_ends_waiting_jobs_and_marks_running_ones,
    lifecycle::a_retried_failure_becomes_a_new_attempt_with_its_own_log,
    lifecycle::retry_when_reads_the_typed_reason_not_the_message,
    lifecycle::a_job_stored_before_rules_follows_its_definition,
    lifecycle::one_job_of_a_resource_group_runs_at_a_time_across_pipelines,
    lifecycle::concurrent_finishes_of_one_pipeline_start_the_next_stage_once,
    lifecycle::a_delayed_job_starts_when_the_clock_says_so,
    lifecycle::a_manual_job_played_reopens_the_finished_pipeline,
    lifecycle::an_exit_code_in_allow_failure_exit_codes_lets_the_pipeline_go_on,
    records::log_appends_are_offset_checked_and_stored_once,
    records::a_long_log_reads_in_pieces,
    records::a_sealed_log_takes_no_bytes_and_a_seal_is_repeatable_only_as_it_was,
    records::an_ended_attempt_writes_nothing_and_an_archive_is_recorded_once,
    records::expired_artifacts_are_forgotten_and_kept_ones_stay,
    projects::projects_are_unique_by_name_and_number_their_pipelines,
    projects::variables_are_one_per_key_and_scope_and_go_with_their_project,
    projects::a_push_is_recorded_once_and_its_pipeline_closes_it,
    projects::a_schedule_tick_is_claimed_once,
    projects::tokens_are_found_by_hash_and_revoked,
    projects::a_retry_reruns_failed_jobs_and_what_was_skipped_after_them,
    deployments::a_deploy_job_records_a_deployment_that_follows_it,
    deployments::an_outdated_deploy_job_fails_and_a_rollback_runs,
    deployments::a_fixed_pipeline_is_notified_and_deliveries_keep_their_tries,
    web::the_newest_pipeline_of_each_ref_and_of_all_are_listed,
    web::an_agent_is_seen_when_its_session_opens_and_closes,
    stats::status_counts_group_jobs_and_pipelines_by_status,
    stats::commits_report_finished_jobs_once_and_stored_log_bytes,
);

// ------------------------------------------------------------- helpers

pub fn job(name: &str, stage: &str) -> JobDef {
    JobDef {
        name: name.into(),
        stage: stage.into(),
        script: vec!["true".into()],
        ..JobDef::default()
    }
}

pub fn pipeline() -> Pipeline {
    Pipeline {
        stages: vec![".pre".into(), "build".into(), "test".into(), ".post".into()],
        variables: vec![],
        jobs: vec![job("compile", "build"), job("unit", "test")],
    }
}

/// The attempt [`running_job`] assigns.
pub const FENCE: Fence<'static> = Fence {
    attempt_id: "attempt-1",
    lease_epoch: 1,
};

pub fn assignment(attempt_id: &str, lease_epoch: u64) -> Assignment<'_> {
    Assignment {
        agent_id: "agent",
        agent_name: "agent-1",
        attempt_id,
        lease_epoch,
        job_token_sha256: "hash",
    }
}

pub fn fence(attempt_id: &str, lease_epoch: u64) -> Fence<'_> {
    Fence {
        attempt_id,
        lease_epoch,
    }
}

pub fn script_failure(code: i32) -> AttemptEnd {
    AttemptEnd::Failed {
        exit_code: Some(code),
        failure: Failure::new(FailureReason::ScriptFailure, "script failure"),
    }
}

/// A pipeline of two stages with its first job running under [`FENCE`].
pub async fn running_job(store: &SharedStore) -> JobId {
    let (_, pending) = store
        .create_pipeline("/repo", "master", false, "abc", &pipeline())
        .await
        .unwrap();
    assert_eq!(pending, vec![JobId(1)], "only the first stage starts");
    assert!(store
        .assign_job(JobId(1), assignment("attempt-1", 1))
        .await
        .unwrap());
    JobId(1)
}

/// SQLite runs in WAL with `synchronous = NORMAL` on every pooled
/// connection: durable across kill -9, one fsync per checkpoint rather than
/// per commit.
#[tokio::test]
async fn sqlite_connections_are_wal_with_synchronous_normal() {
    let harness = Harness::sqlite().await;
    for _ in 0..3 {
        let mut connection = harness.sql.pool().acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        assert_eq!((mode.as_str(), synchronous, foreign_keys), ("wal", 1, 1));
    }
}
