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

/// A masked variable's value never reaches a Debug print (a log line of a
/// `JobSpec`, a test failure).
impl std::fmt::Debug for v1::Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value: &dyn std::fmt::Debug = if self.masked {
            &"[MASKED]"
        } else {
            &self.value
        };
        f.debug_struct("Variable")
            .field("key", &self.key)
            .field("value", value)
            .field("masked", &self.masked)
            .field("file", &self.file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_of_a_masked_variable_hides_its_value() {
        let variable = super::v1::Variable {
            key: "TOKEN".into(),
            value: "hunter22".into(),
            masked: true,
            file: false,
        };
        let debug = format!(
            "{:?}",
            super::v1::JobSpec {
                variables: vec![variable.clone()],
                ..Default::default()
            }
        );
        assert!(
            !debug.contains("hunter22") && debug.contains("TOKEN"),
            "{debug}"
        );
        let plain = super::v1::Variable {
            masked: false,
            ..variable
        };
        assert!(format!("{plain:?}").contains("hunter22"));
    }
}
