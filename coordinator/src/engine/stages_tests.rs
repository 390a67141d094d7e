use super::*;

fn job(id: u64, stage_index: usize, status: JobStatus) -> JobState {
    JobState::new(JobId(id), format!("job{id}"), stage_index, status)
}

fn pending(effects: &[Decision]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Decision::MakePending(id) => Some(id.0),
            _ => None,
        })
        .collect()
}

fn skipped(effects: &[Decision]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Decision::Skip(id) => Some(id.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_pipeline_starts_its_first_stage_only() {
    let jobs = [
        job(1, 1, JobStatus::Created),
        job(2, 1, JobStatus::Created),
        job(3, 2, JobStatus::Created),
    ];
    let effects = advance(&jobs, PipelineStatus::Created);
    assert_eq!(pending(&effects), vec![1, 2]);
    assert!(effects.contains(&Decision::SetPipelineStatus(PipelineStatus::Pending)));
}

#[test]
fn the_next_stage_waits_for_every_job_of_the_previous_one() {
    let jobs = [
        job(1, 1, JobStatus::Success),
        job(2, 1, JobStatus::Running),
        job(3, 2, JobStatus::Created),
    ];
    assert!(pending(&advance(&jobs, PipelineStatus::Running)).is_empty());
    let jobs = [
        job(1, 1, JobStatus::Success),
        job(2, 1, JobStatus::Success),
        job(3, 2, JobStatus::Created),
    ];
    assert_eq!(pending(&advance(&jobs, PipelineStatus::Running)), vec![3]);
}

#[test]
fn a_failure_skips_later_on_success_jobs_and_runs_on_failure_and_always() {
    let mut on_failure = job(4, 2, JobStatus::Created);
    on_failure.when = When::OnFailure;
    let mut always = job(5, 3, JobStatus::Created);
    always.when = When::Always;
    let jobs = [
        job(1, 1, JobStatus::Failed),
        job(2, 1, JobStatus::Success),
        job(3, 2, JobStatus::Created),
        on_failure,
        always,
    ];
    let effects = advance(&jobs, PipelineStatus::Running);
    assert_eq!(skipped(&effects), vec![3]);
    assert_eq!(pending(&effects), vec![4]);
}

#[test]
fn on_failure_jobs_are_skipped_when_all_went_well() {
    let mut on_failure = job(2, 2, JobStatus::Created);
    on_failure.when = When::OnFailure;
    let jobs = [job(1, 1, JobStatus::Success), on_failure];
    let effects = advance(&jobs, PipelineStatus::Running);
    assert_eq!(skipped(&effects), vec![2]);
    assert!(effects.contains(&Decision::SetPipelineStatus(PipelineStatus::Success)));
}

#[test]
fn an_allowed_failure_lets_the_pipeline_go_on_and_succeed() {
    let mut allowed = job(1, 1, JobStatus::Failed);
    allowed.allow_failure = true;
    let jobs = [allowed.clone(), job(2, 2, JobStatus::Created)];
    assert_eq!(pending(&advance(&jobs, PipelineStatus::Running)), vec![2]);
    let jobs = [allowed, job(2, 2, JobStatus::Success)];
    assert_eq!(
        advance(&jobs, PipelineStatus::Running),
        vec![Decision::SetPipelineStatus(PipelineStatus::Success)]
    );
}

#[test]
fn a_failed_job_fails_the_pipeline_once_everything_ends() {
    let jobs = [job(1, 1, JobStatus::Failed), job(2, 2, JobStatus::Skipped)];
    assert_eq!(
        advance(&jobs, PipelineStatus::Running),
        vec![Decision::SetPipelineStatus(PipelineStatus::Failed)]
    );
}

#[test]
fn skipped_stages_cascade_in_one_step() {
    let jobs = [
        job(1, 1, JobStatus::Failed),
        job(2, 2, JobStatus::Created),
        job(3, 3, JobStatus::Created),
    ];
    let effects = advance(&jobs, PipelineStatus::Running);
    assert_eq!(skipped(&effects), vec![2, 3]);
    assert!(effects.contains(&Decision::SetPipelineStatus(PipelineStatus::Failed)));
}

#[test]
fn a_finished_pipeline_keeps_its_status() {
    let jobs = [job(1, 1, JobStatus::Success)];
    assert!(advance(&jobs, PipelineStatus::Canceled).is_empty());
}

fn with_needs(mut job: JobState, needs: &[u64]) -> JobState {
    job.needs = Some(needs.iter().map(|id| format!("job{id}")).collect());
    job
}

#[test]
fn needs_start_a_job_before_its_stage_and_ignore_unrelated_failures() {
    let jobs = [
        job(1, 1, JobStatus::Success),
        job(2, 1, JobStatus::Running),
        with_needs(job(3, 2, JobStatus::Created), &[1]),
        job(4, 2, JobStatus::Created),
        with_needs(job(5, 3, JobStatus::Created), &[]),
    ];
    let effects = advance(&jobs, PipelineStatus::Running);
    assert_eq!(pending(&effects), vec![3, 5], "job 4 waits for its stage");

    let jobs = [
        job(1, 1, JobStatus::Failed),
        job(2, 1, JobStatus::Success),
        with_needs(job(3, 2, JobStatus::Created), &[2]),
    ];
    assert_eq!(pending(&advance(&jobs, PipelineStatus::Running)), vec![3]);
}

#[test]
fn needs_chains_resolve_in_one_step_whatever_the_file_order() {
    let jobs = [
        with_needs(job(1, 1, JobStatus::Created), &[2]),
        with_needs(job(2, 1, JobStatus::Created), &[3]),
        job(3, 1, JobStatus::Failed),
    ];
    let effects = advance(&jobs, PipelineStatus::Running);
    assert_eq!(skipped(&effects), vec![2, 1]);
}

#[test]
fn optional_manual_jobs_wait_without_holding_up_the_pipeline() {
    let mut manual = job(2, 2, JobStatus::Created);
    manual.when = When::Manual;
    manual.allow_failure = true;
    let jobs = [
        job(1, 1, JobStatus::Success),
        manual.clone(),
        job(3, 3, JobStatus::Created),
    ];
    let effects = advance(&jobs, PipelineStatus::Running);
    assert!(effects.contains(&Decision::MakeManual(JobId(2))));
    assert_eq!(
        pending(&effects),
        vec![3],
        "a manual job that may fail blocks nothing"
    );

    manual.status = JobStatus::Manual;
    let jobs = [
        job(1, 1, JobStatus::Success),
        manual,
        job(3, 3, JobStatus::Success),
    ];
    assert_eq!(
        advance(&jobs, PipelineStatus::Running),
        vec![Decision::SetPipelineStatus(PipelineStatus::Success)]
    );
}

#[test]
fn a_blocking_manual_job_holds_later_stages_and_blocks_the_pipeline() {
    let mut manual = job(2, 2, JobStatus::Manual);
    manual.when = When::Manual;
    let jobs = [
        job(1, 1, JobStatus::Success),
        manual,
        job(3, 3, JobStatus::Created),
    ];
    assert_eq!(
        advance(&jobs, PipelineStatus::Running),
        vec![Decision::SetPipelineStatus(PipelineStatus::Manual)]
    );
}

#[test]
fn delayed_jobs_are_scheduled_and_skipped_after_a_failure() {
    let mut delayed = job(2, 2, JobStatus::Created);
    delayed.when = When::Delayed;
    let jobs = [job(1, 1, JobStatus::Success), delayed.clone()];
    assert!(advance(&jobs, PipelineStatus::Running).contains(&Decision::Schedule(JobId(2))));
    let jobs = [job(1, 1, JobStatus::Failed), delayed];
    assert_eq!(skipped(&advance(&jobs, PipelineStatus::Running)), vec![2]);
}
