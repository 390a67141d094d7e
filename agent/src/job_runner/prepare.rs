//! Turning an assignment's `JobSpec` into the [`PreparedJob`] an executor
//! runs: the environment (the coordinator's variables, then the agent's own
//! `CI_PROJECT_DIR`, `CI_BUILDS_DIR`, `CI_RUNNER_*`), the files of its file
//! variables, image and services, the generated scripts, and the timeout
//! capped by the agent's maximum.

use super::RunnerContext;
use crate::executor::{PreparedJob, StopGrace};
use crate::file_variables::{FileVariableError, FileVariablesDir};
use crate::workspace::AttemptDirs;
use osprey_proto::v1::JobSpec;
use osprey_shared::pipeline::{ImageRef, ServiceRef, Variable};
use osprey_shared::JobId;
use std::time::Duration;

/// Writes the spec's file variables to the attempt's private tmp dir; `None`
/// when it has none. The files go when the returned dir is dropped.
pub(super) fn write_file_variables(
    spec: &JobSpec,
    dirs: &AttemptDirs,
) -> Result<Option<FileVariablesDir>, FileVariableError> {
    let mut files = None;
    for (index, variable) in spec.variables.iter().enumerate() {
        if variable.file {
            let dir = match &mut files {
                Some(dir) => dir,
                None => files.insert(FileVariablesDir::create(&dirs.tmp_dir)?),
            };
            dir.write(index, &variable.key, variable.value.as_bytes())?;
        }
    }
    Ok(files)
}

/// The job as the executor sees it; a file variable's value is its file's path.
pub(super) fn prepare<A>(
    ctx: &RunnerContext<A>,
    spec: &JobSpec,
    dirs: &AttemptDirs,
    stop_grace: StopGrace,
    files: Option<&FileVariablesDir>,
) -> PreparedJob {
    let mut env: Vec<(String, String)> = spec
        .variables
        .iter()
        .enumerate()
        .map(|(index, variable)| {
            let value = match files.and_then(|files| files.path_of(index)) {
                Some(path) => path.to_string_lossy().into_owned(),
                None => variable.value.clone(),
            };
            (variable.key.clone(), value)
        })
        .collect();
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    env.push(("CI_PROJECT_DIR".into(), path(&dirs.project_dir)));
    env.push(("CI_BUILDS_DIR".into(), path(&dirs.build_dir)));
    env.push(("CI_RUNNER_DESCRIPTION".into(), ctx.agent_name.clone()));
    env.push(("CI_RUNNER_TAGS".into(), ctx.tags.join(",")));
    let image = spec
        .image
        .as_ref()
        .filter(|image| !image.name.is_empty())
        .map(|image| ImageRef {
            name: image.name.clone(),
            entrypoint: non_empty(&image.entrypoint),
        });
    let services = spec
        .services
        .iter()
        .map(|service| ServiceRef {
            name: service.name.clone(),
            alias: Some(service.alias.clone()).filter(|alias| !alias.is_empty()),
            command: non_empty(&service.command),
            entrypoint: non_empty(&service.entrypoint),
            variables: service
                .variables
                .iter()
                .map(|v| Variable {
                    key: v.key.clone(),
                    value: v.value.clone(),
                })
                .collect(),
        })
        .collect();
    PreparedJob {
        job_id: JobId(spec.job_id),
        job_name: spec.name.clone(),
        project_name: dirs
            .project_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        project_dir: dirs.project_dir.clone(),
        env,
        files_dir: files.map(|files| files.path().to_owned()),
        main_script: crate::script::main_script(&spec.before_script, &spec.script),
        after_script: crate::script::after_script(&spec.after_script),
        image,
        services,
        timeout: job_timeout(spec.timeout_seconds, ctx.job_timeout, ctx.max_job_timeout),
        kill_grace: ctx.kill_grace,
        // A stop for a lost lease or a `CancelJob` asks for less here: the
        // shell job's group is then killed by the job runner, the Docker
        // executor stops its containers within it.
        stop_grace,
    }
}

fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

/// A job's timeout: its own `timeout:` (0 = none) or the agent's default,
/// never more than the agent's maximum.
fn job_timeout(own_seconds: u64, default: Duration, maximum: Option<Duration>) -> Duration {
    let wanted = match own_seconds {
        0 => default,
        seconds => Duration::from_secs(seconds),
    };
    maximum.map_or(wanted, |maximum| wanted.min(maximum))
}

#[cfg(test)]
mod timeout_tests {
    use super::job_timeout;
    use std::time::Duration;

    #[test]
    fn the_agent_maximum_caps_the_job_timeout() {
        let hour = Duration::from_secs(3600);
        assert_eq!(job_timeout(0, hour, None), hour);
        assert_eq!(job_timeout(60, hour, None), Duration::from_secs(60));
        assert_eq!(job_timeout(7200, hour, Some(hour)), hour);
        assert_eq!(
            job_timeout(0, hour, Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
    }
}
