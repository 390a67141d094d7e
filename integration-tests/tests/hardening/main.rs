//! Hardening (issue 7), one test binary: no job escapes to the host, no job
//! runs twice, no token outlives its job, and abuse from the network meets a
//! clear limit. Each module is one part of that promise.

mod host_escape;
mod job_guard;
mod leases;
mod network;
mod tokens;

/// The archive a job recorded, in the coordinator's default artifact store
/// (`DATA_DIR/artifacts/{job}/{attempt}-{uuid}.tar`: one file per recorded
/// upload).
fn stored_archive(data_dir: &std::path::Path, job: osprey_shared::JobId) -> std::path::PathBuf {
    let dir = data_dir.join("artifacts").join(job.to_string());
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one archive of job {job}: {files:?}");
    files.into_iter().next().unwrap()
}
