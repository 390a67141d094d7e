//! The end of a fenced shell job (its lease lost, or abandoned by the
//! coordinator): the job runner has dropped the executor's future, so no
//! `after_script` starts; what is left of the script's process group is
//! stopped here within the lease-loss grace.

use super::RunnerContext;
use crate::registry::{RunningJob, StopCause};
use crate::workspace;
use nix::sys::signal::{killpg, Signal};
use std::time::Duration;

/// SIGTERM to the fenced job's last process group, SIGKILL if it is still
/// there once the grace is over (a group gone sooner is not signalled again:
/// its id may be reused).
pub(super) async fn stop_group<A>(ctx: &RunnerContext<A>, job: &RunningJob) {
    let Some(pgid) = job.pgid().filter(|pgid| *pgid > 1) else {
        return;
    };
    let grace = match job.stop_cause() {
        Some(StopCause::Canceled { grace }) => grace,
        _ => ctx
            .leases
            .terms()
            .map_or(ctx.kill_grace, |terms| terms.stop_grace(ctx.kill_grace)),
    };
    let group = nix::unistd::Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while killpg(group, None).is_ok() {
        if tokio::time::Instant::now() >= deadline {
            workspace::kill_group(pgid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(pgid, ?grace, "fenced job's process group stopped");
}
