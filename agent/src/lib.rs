//! Osprey agent.
