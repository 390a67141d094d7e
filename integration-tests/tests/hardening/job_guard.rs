//! (filled in by the job_guard work)
