//! Hardening (issue 7), one test binary: no job escapes to the host, no job
//! runs twice, no token outlives its job, and abuse from the network meets a
//! clear limit. Each module is one part of that promise.

mod host_escape;
mod job_guard;
mod leases;
mod network;
mod tokens;
