//! The coordinator's encryption keys and the envelopes they seal.
//!
//! A key file holds one key a line, `osprey-key-v1:<key id>:<base64 of 32
//! bytes>`: the first line is the current key (new values are sealed with
//! it), the lines after it are older keys that still open values sealed
//! before a rotation. Values are sealed with XChaCha20-Poly1305 under a
//! random 24-byte nonce and an AAD naming what the value belongs to, so a
//! ciphertext copied onto another row does not open. This module never
//! logs, prints or formats a key or a plaintext.

use super::SecretsError;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const KEY_PREFIX: &str = "osprey-key-v1";
const ENVELOPE_VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const KEY_ID_LEN: usize = 8;

/// One key: its public id and its secret bytes (wiped on drop).
struct Key {
    id: String,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl Key {
    fn generate(taken: &[Key]) -> Key {
        let mut rng = rand::rng();
        let id = loop {
            let mut id_bytes = [0u8; KEY_ID_LEN / 2];
            rng.fill_bytes(&mut id_bytes);
            let id = hex::encode(id_bytes);
            if !taken.iter().any(|key| key.id == id) {
                break id;
            }
        };
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(bytes.as_mut());
        Key { id, bytes }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_ref().into())
    }

    /// The key's line in the key file (with its secret: written to the file
    /// only).
    fn line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{KEY_PREFIX}:{}:{}\n",
            self.id,
            BASE64.encode(self.bytes.as_ref())
        ))
    }
}

/// The current key and the older ones, loaded from the key file.
pub struct Keyring {
    /// Never empty; `keys[0]` is the current key.
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|key| key.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// Loads the key file at `path`, or creates it (mode 0600) with one fresh
    /// key when there is none. A file readable by others or with a line that
    /// is not a key is refused.
    pub fn load_or_create(path: &Path) -> Result<Keyring, SecretsError> {
        match Self::load(path) {
            Err(SecretsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Self::create(path)
            }
            other => other,
        }
    }

    /// Loads an existing key file.
    pub fn load(path: &Path) -> Result<Keyring, SecretsError> {
        let io_error = |source| SecretsError::Io {
            path: path.to_owned(),
            source,
        };
        let metadata = fs::metadata(path).map_err(io_error)?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_error)?);
        Self::parse(path, &text)
    }

    fn create(path: &Path) -> Result<Keyring, SecretsError> {
        let io_error = |source| SecretsError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error)?;
        }
        let key = Key::generate(&[]);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match created {
            Ok(file) => file,
            // Another process created it between our read and our create.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Self::load(path),
            Err(error) => return Err(io_error(error)),
        };
        file.write_all(key.line().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error)?;
        tracing::info!(path = %path.display(), key_id = %key.id, "created a new secrets key file");
        Ok(Keyring { keys: vec![key] })
    }

    fn parse(path: &Path, text: &str) -> Result<Keyring, SecretsError> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &'static str| SecretsError::BadKeyFile {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let mut parts = line.splitn(3, ':');
            let (Some(prefix), Some(id), Some(encoded)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected osprey-key-v1:<key id>:<base64 key>"));
            };
            if prefix != KEY_PREFIX {
                return Err(bad("expected osprey-key-v1:<key id>:<base64 key>"));
            }
            if !is_key_id(id) {
                return Err(bad("the key id must be 8 lowercase hex characters"));
            }
            if keys.iter().any(|key| key.id == id) {
                return Err(bad("the key id appears twice"));
            }
            let decoded = Zeroizing::new(
                BASE64
                    .decode(encoded)
                    .map_err(|_| bad("the key is not valid base64"))?,
            );
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            if decoded.len() != KEY_LEN {
                return Err(bad("the key must be 32 bytes"));
            }
            bytes.copy_from_slice(&decoded);
            keys.push(Key {
                id: id.to_owned(),
                bytes,
            });
        }
        if keys.is_empty() {
            return Err(SecretsError::EmptyKeyFile {
                path: path.to_owned(),
            });
        }
        Ok(Keyring { keys })
    }

    /// Id of the current key (not secret).
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext` with the current key: `v1:<key id>:<b64 nonce>:<b64 ciphertext>`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // Only fails for messages beyond 256 GiB.
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        format!(
            "{ENVELOPE_VERSION}:{}:{}:{}",
            key.id,
            BASE64.encode(nonce),
            BASE64.encode(sealed)
        )
    }

    /// Opens an envelope made by [`Keyring::encrypt`] with the same `aad`.
    pub fn decrypt(&self, envelope: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let parsed = Envelope::parse(envelope)?;
        let key = self
            .keys
            .iter()
            .find(|key| key.id == parsed.key_id)
            .ok_or_else(|| SecretsError::UnknownKey {
                key_id: parsed.key_id.to_owned(),
            })?;
        let nonce = BASE64
            .decode(parsed.nonce)
            .map_err(|_| SecretsError::BadEnvelope("the nonce is not valid base64"))?;
        if nonce.len() != NONCE_LEN {
            return Err(SecretsError::BadEnvelope("the nonce must be 24 bytes"));
        }
        let sealed = BASE64
            .decode(parsed.ciphertext)
            .map_err(|_| SecretsError::BadEnvelope("the ciphertext is not valid base64"))?;
        key.cipher()
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::Decrypt)
    }

    /// Whether `envelope` is sealed with the current key (no need to
    /// re-encrypt it after a rotation).
    pub fn is_current(&self, envelope: &str) -> bool {
        Envelope::parse(envelope).is_ok_and(|parsed| parsed.key_id == self.keys[0].id)
    }

    /// Puts a fresh current key at the top of the key file at `path`,
    /// keeping the older keys. The file is replaced atomically (a 0600
    /// temporary file renamed over it).
    pub fn rotate_file(path: &Path) -> Result<(), SecretsError> {
        let mut keyring = Self::load(path)?;
        let key = Key::generate(&keyring.keys);
        let new_id = key.id.clone();
        keyring.keys.insert(0, key);
        keyring.write_atomically(path)?;
        tracing::info!(path = %path.display(), key_id = %new_id, "rotated the secrets key");
        Ok(())
    }

    fn write_atomically(&self, path: &Path) -> Result<(), SecretsError> {
        let temp = temp_path(path);
        let io_error = |source| SecretsError::Io {
            path: temp.clone(),
            source,
        };
        let mut contents = Zeroizing::new(String::new());
        for key in &self.keys {
            contents.push_str(&key.line());
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_error)?;
        let written = file
            .write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&temp, path));
        if let Err(error) = written {
            // Best effort: the temporary file holds keys; do not leave it behind.
            let _ = fs::remove_file(&temp);
            return Err(io_error(error));
        }
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename durable; failing here loses nothing already written.
            if let Ok(dir) = fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

/// A sibling of `path` no other process picks by chance.
fn temp_path(path: &Path) -> PathBuf {
    let mut suffix = [0u8; 6];
    rand::rng().fill_bytes(&mut suffix);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keys".to_owned());
    path.with_file_name(format!(".{name}.{}.tmp", hex::encode(suffix)))
}

fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The parts of `v1:<key id>:<nonce>:<ciphertext>`, still encoded.
struct Envelope<'a> {
    key_id: &'a str,
    nonce: &'a str,
    ciphertext: &'a str,
}

impl<'a> Envelope<'a> {
    fn parse(envelope: &'a str) -> Result<Envelope<'a>, SecretsError> {
        let mut parts = envelope.split(':');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(ENVELOPE_VERSION), Some(key_id), Some(nonce), Some(ciphertext), None)
                if is_key_id(key_id) =>
            {
                Ok(Envelope {
                    key_id,
                    nonce,
                    ciphertext,
                })
            }
            _ => Err(SecretsError::BadEnvelope(
                "expected v1:<key id>:<base64 nonce>:<base64 ciphertext>",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{variable_aad, webhook_aad};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_file_is_created_0600_with_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys");
        let keyring = Keyring::load_or_create(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let line = text.lines().next().unwrap();
        assert!(line.starts_with(&format!("osprey-key-v1:{}:", keyring.current_key_id())));
        // Loading again gives the same key.
        let again = Keyring::load_or_create(&path).unwrap();
        assert_eq!(again.current_key_id(), keyring.current_key_id());
        let sealed = keyring.encrypt(b"hunter22", b"aad");
        assert_eq!(&**again.decrypt(&sealed, b"aad").unwrap(), b"hunter22");
    }

    #[test]
    fn round_trip_and_envelope_shape() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::load_or_create(&dir.path().join("keys")).unwrap();
        let aad = variable_aad(7, "TOKEN", "*");
        let sealed = keyring.encrypt(b"s3cr3t-value", &aad);
        let parts: Vec<&str> = sealed.split(':').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "v1");
        assert_eq!(parts[1], keyring.current_key_id());
        assert_eq!(BASE64.decode(parts[2]).unwrap().len(), 24);
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(&**keyring.decrypt(&sealed, &aad).unwrap(), b"s3cr3t-value");
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, keyring.encrypt(b"s3cr3t-value", &aad));
        assert!(keyring.is_current(&sealed));
    }

    #[test]
    fn wrong_aad_tampering_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::load_or_create(&dir.path().join("keys")).unwrap();
        let sealed = keyring.encrypt(b"value-1234", &variable_aad(1, "A", "*"));

        let error = keyring
            .decrypt(&sealed, &variable_aad(2, "A", "*"))
            .unwrap_err();
        assert!(matches!(error, SecretsError::Decrypt));
        assert!(!error.to_string().contains("value-1234"));
        assert!(keyring.decrypt(&sealed, &webhook_aad(1)).is_err());

        // Flip one character of the ciphertext.
        let (head, tail) = sealed.rsplit_once(':').unwrap();
        let mut bytes = BASE64.decode(tail).unwrap();
        bytes[0] ^= 1;
        let tampered = format!("{head}:{}", BASE64.encode(bytes));
        assert!(matches!(
            keyring.decrypt(&tampered, &variable_aad(1, "A", "*")),
            Err(SecretsError::Decrypt)
        ));

        let other_dir = tempfile::tempdir().unwrap();
        let other = Keyring::load_or_create(&other_dir.path().join("keys")).unwrap();
        let error = other
            .decrypt(&sealed, &variable_aad(1, "A", "*"))
            .unwrap_err();
        assert!(matches!(error, SecretsError::UnknownKey { .. }));
        assert!(!other.is_current(&sealed));

        for garbage in ["", "v1:zz", "v2:0011aabb:AAAA:AAAA", "plain text"] {
            assert!(matches!(
                keyring.decrypt(garbage, b""),
                Err(SecretsError::BadEnvelope(_))
            ));
            assert!(!keyring.is_current(garbage));
        }
    }

    #[test]
    fn rotation_keeps_old_keys_for_decryption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let before = Keyring::load_or_create(&path).unwrap();
        let sealed = before.encrypt(b"old-secret", b"x");
        Keyring::rotate_file(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);

        let after = Keyring::load(&path).unwrap();
        assert_ne!(after.current_key_id(), before.current_key_id());
        assert_eq!(after.keys.len(), 2);
        assert_eq!(after.keys[1].id, before.current_key_id());
        assert!(!after.is_current(&sealed));
        assert_eq!(&**after.decrypt(&sealed, b"x").unwrap(), b"old-secret");
        assert!(after.is_current(&after.encrypt(b"new", b"x")));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        Keyring::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = Keyring::load_or_create(&path).unwrap_err();
        assert!(matches!(
            error,
            SecretsError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(error.to_string().contains("0600"), "{error}");
    }

    #[test]
    fn unparsable_lines_are_refused_without_printing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let cases = [
            "not-a-key-line-SECRETSTUFF\n",
            "osprey-key-v1:0011aabb:SECRETSTUFF!!\n",
            "osprey-key-v1:0011aabb:c2hvcnQ=\n",
            "osprey-key-v1:XYZ:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "",
        ];
        for contents in cases {
            fs::write(&path, contents).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let error = Keyring::load(&path).unwrap_err();
            let text = error.to_string();
            assert!(!text.contains("SECRETSTUFF"), "{text}");
            assert!(!text.contains("c2hvcnQ"), "{text}");
            assert!(
                matches!(
                    error,
                    SecretsError::BadKeyFile { line: 1, .. } | SecretsError::EmptyKeyFile { .. }
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let keyring = Keyring::load_or_create(&path).unwrap();
        let file = fs::read_to_string(&path).unwrap();
        let secret = file.trim().rsplit(':').next().unwrap();
        let debug = format!("{keyring:?}");
        assert!(debug.contains(keyring.current_key_id()));
        assert!(!debug.contains(secret));
    }
}
