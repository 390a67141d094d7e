//! (filled in by the host_escape work)
