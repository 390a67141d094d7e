//! (filled in by the network work)
