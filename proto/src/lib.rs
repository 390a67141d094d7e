//! The wire format between coordinator and agents: generated prost/tonic types
//! for `osprey.v1`. Nothing else lives here; domain types are in `osprey-shared`
//! and handlers convert at the edge.

#![allow(clippy::all, clippy::pedantic)]

/// Version of the session protocol this build speaks (sent in `Hello`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Generated types of package `osprey.v1`.
pub mod v1 {
    tonic::include_proto!("osprey.v1");
}

mod convert;
