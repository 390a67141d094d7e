//! The coordinator's web-facing surface: its metrics endpoint and logs.

mod metrics;
