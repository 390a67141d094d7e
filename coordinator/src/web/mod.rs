//! The web UI: server-rendered pages (askama) on the coordinator's own
//! port, live updates over Server-Sent Events, sign-in with an API token in
//! an HttpOnly cookie and CSRF tokens on every form.

pub mod ansi;
pub mod graph;
