//! Osprey coordinator.
