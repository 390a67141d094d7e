//! Secret project data at rest: the [`Keyring`] that seals variable values
//! and webhook secrets, the AADs that bind each ciphertext to its row, and
//! the rules a variable must follow ([`rules`]). No I/O but the key file.
//!
//! Errors here name files, lines and key ids, never a key or a value.

mod keyring;
pub mod rules;

pub use keyring::Keyring;

use std::path::PathBuf;

/// What can go wrong loading keys or opening a sealed value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secrets key file {} has mode {mode:04o}: it must be 0600 (readable by its owner only); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("secrets key file {}, line {line}: {reason}", path.display())]
    BadKeyFile {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("secrets key file {} holds no key", path.display())]
    EmptyKeyFile { path: PathBuf },
    #[error("not an encrypted value: {0}")]
    BadEnvelope(&'static str),
    #[error("the value is encrypted with key {key_id}, which the key file does not hold")]
    UnknownKey { key_id: String },
    #[error("the value does not decrypt: wrong key, wrong owner or altered ciphertext")]
    Decrypt,
}

/// The AAD of a project variable's value: binds it to its project, key and
/// environment scope.
pub fn variable_aad(project_id: i64, key: &str, env_scope: &str) -> Vec<u8> {
    let mut aad = tagged_aad(b"osprey-variable-v1", project_id);
    push_field(&mut aad, key.as_bytes());
    push_field(&mut aad, env_scope.as_bytes());
    aad
}

/// The AAD of a project's webhook secret.
pub fn webhook_aad(project_id: i64) -> Vec<u8> {
    tagged_aad(b"osprey-webhook-secret-v1", project_id)
}

/// The AAD of a notification rule's signing secret: binds it to its
/// project and receiver URL (known before the rule has an id).
pub fn notify_rule_aad(project_id: i64, url: &str) -> Vec<u8> {
    let mut aad = tagged_aad(b"osprey-notify-secret-v1", project_id);
    push_field(&mut aad, url.as_bytes());
    aad
}

/// A purpose tag and a project id, both of fixed or prefixed length, so no
/// two (purpose, id, fields...) tuples encode alike.
fn tagged_aad(tag: &[u8], project_id: i64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    push_field(&mut aad, tag);
    aad.extend_from_slice(&project_id.to_be_bytes());
    aad
}

fn push_field(aad: &mut Vec<u8>, field: &[u8]) {
    // Keys and scopes are at most 255 characters; u32 covers any input anyway.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    aad.extend_from_slice(&len.to_be_bytes());
    aad.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aads_are_unambiguous() {
        assert_ne!(variable_aad(1, "AB", "C"), variable_aad(1, "A", "BC"));
        assert_ne!(variable_aad(1, "A", "*"), variable_aad(2, "A", "*"));
        assert_ne!(variable_aad(1, "A", "*"), variable_aad(1, "A", "prod"));
        assert_ne!(webhook_aad(1), webhook_aad(2));
        assert!(!variable_aad(1, "", "").starts_with(&webhook_aad(1)));
        assert_eq!(variable_aad(3, "K", "*"), variable_aad(3, "K", "*"));
    }

    #[test]
    fn errors_say_what_to_do() {
        let error = SecretsError::InsecurePermissions {
            path: "/etc/osprey/keys".into(),
            mode: 0o644,
        };
        let text = error.to_string();
        assert!(text.contains("0644"), "{text}");
        assert!(text.contains("chmod 600 /etc/osprey/keys"), "{text}");
    }
}
