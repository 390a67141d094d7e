//! (filled in by the leases work)
