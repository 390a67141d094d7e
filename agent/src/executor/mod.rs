//! Executors run one prepared job: the main script (`before_script` + `script`)
//! and then, whatever its result, the `after_script`. They own processes or
//! containers and nothing else: source checkout, artifacts and log shipping are
//! the job runner's.

pub mod docker;
pub mod shell;
pub mod user;

use futures::future::BoxFuture;
use osprey_shared::pipeline::{ImageRef, ServiceRef};
use osprey_shared::JobId;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where job output goes: raw bytes in the order they were written, stdout
/// and stderr interleaved. The receiver appends them to the job's log spool.
pub type OutputSink = tokio::sync::mpsc::Sender<bytes::Bytes>;

/// A job ready to run: source checked out, artifacts of dependencies extracted,
/// variables resolved, scripts generated. Its Debug names the variables'
/// keys, never their values.
#[derive(Clone)]
pub struct PreparedJob {
    pub job_id: JobId,
    pub job_name: String,
    /// Project name (last path segment of the repository), e.g. for `/builds/<project>`.
    pub project_name: String,
    /// Host directory holding the source at the job's commit. The shell
    /// executor runs there; the Docker executor makes it `CI_PROJECT_DIR`.
    pub project_dir: PathBuf,
    /// Environment of the scripts, predefined variables first; later entries win.
    /// `CI_PROJECT_DIR` here is the host path; the Docker executor overrides it.
    /// A file variable's value is the path of its file in `files_dir`.
    pub env: Vec<(String, String)>,
    /// The host directory (private, outside `project_dir`) holding the job's
    /// file variables, if it has any. The shell executor hands it to the job
    /// guard, which removes it if the agent dies; the Docker executor mounts
    /// it read-only and gives the variables their in-container paths.
    pub files_dir: Option<PathBuf>,
    /// `before_script` + `script`, from [`crate::script::main_script`].
    pub main_script: String,
    /// `after_script`, from [`crate::script::after_script`]; `None` when empty.
    pub after_script: Option<String>,
    /// Docker executor only.
    pub image: Option<ImageRef>,
    pub services: Vec<ServiceRef>,
    /// The job is stopped and fails with reason `job timeout` after this.
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL on cancel or timeout.
    pub kill_grace: Duration,
    /// A shorter grace a stop may ask for (a `CancelJob` grace, a lost lease).
    pub stop_grace: StopGrace,
}

impl std::fmt::Debug for PreparedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.env.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("PreparedJob")
            .field("job_id", &self.job_id)
            .field("job_name", &self.job_name)
            .field("project_dir", &self.project_dir)
            .field("env_keys", &keys)
            .field("files_dir", &self.files_dir)
            .field("image", &self.image)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The grace the stop of a running job asks for, set before its cancel
/// fires and read by the executor when it stops the job: a lost lease must
/// end the job within part of the lease margin, while a plain cancel keeps
/// the agent's whole `kill_grace`. Shared by the job runner and the executor.
#[derive(Debug, Clone, Default)]
pub struct StopGrace(Arc<Mutex<Option<Duration>>>);

impl StopGrace {
    /// Asks for `grace`; the shortest asked for wins.
    pub fn request(&self, grace: Duration) {
        let mut asked = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *asked = Some(asked.map_or(grace, |earlier| earlier.min(grace)));
    }

    /// The grace to stop with: `default`, or less if a stop asked for less.
    pub fn within(&self, default: Duration) -> Duration {
        let asked = *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        asked.map_or(default, |grace| grace.min(default))
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// `exit_code` is the script's exit status when it exited; `reason` is
    /// `script failure` then, else what went wrong ("image alpine:3 not found", ...).
    Failed {
        exit_code: Option<i32>,
        reason: String,
    },
    /// Stopped by a cancellation.
    Canceled,
    /// Stopped by `timeout`.
    TimedOut,
}

impl Outcome {
    /// `CI_JOB_STATUS` as GitLab gives it to `after_script`.
    pub fn ci_job_status(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed { .. } | Outcome::TimedOut => "failed",
            Outcome::Canceled => "canceled",
        }
    }

    /// The `after_script` text with `CI_JOB_STATUS` set for this outcome.
    pub fn after_script(&self, script: &str) -> String {
        format!("export CI_JOB_STATUS={}\n{script}", self.ci_job_status())
    }
}

/// Runs prepared jobs. Implementations: [`shell::ShellExecutor`], [`docker::DockerExecutor`].
pub trait Executor: Send + Sync {
    /// Runs the job to its end. Output goes to `output` as it is produced.
    /// When `cancel` fires, the job is stopped (SIGTERM, SIGKILL after
    /// `kill_grace`) and everything it started is removed before this returns
    /// [`Outcome::Canceled`]. Never panics on bad input; errors become `Failed`.
    fn run<'a>(
        &'a self,
        job: &'a PreparedJob,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Outcome>;
}
