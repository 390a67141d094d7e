//! Checks that a hook request comes from the forge holding the project's
//! webhook secret, on the raw body and in constant time, before anything
//! parses the body. Reasons name the header that is missing or wrong, never
//! the secret or the expected value.

use super::{Forge, HookError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks timestamp may be from our clock, either way.
const TIMESTAMP_TOLERANCE_SECONDS: u64 = 5 * 60;
/// The Standard Webhooks form of a secret: `whsec_` + base64 of the key.
const STANDARD_SECRET_PREFIX: &str = "whsec_";

fn unauthorized(reason: impl Into<String>) -> HookError {
    HookError::Unauthorized(reason.into())
}

/// A header's value as text; `Ok(None)` when absent.
pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, HookError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim()))
            .map_err(|_| unauthorized(format!("the {name} header is not ASCII text"))),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, HookError> {
    header(headers, name)?.ok_or_else(|| unauthorized(format!("missing {name} header")))
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

/// Compares a hex HMAC-SHA256 of `body` from header `name` in constant time.
fn check_hex_hmac(name: &str, given_hex: &str, secret: &str, body: &[u8]) -> Result<(), HookError> {
    let given = hex::decode(given_hex)
        .map_err(|_| unauthorized(format!("the {name} header is not a hex HMAC-SHA256")))?;
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| unauthorized(format!("the {name} header does not match the body")))
}

/// Gitea and Forgejo: bare lower hex HMAC-SHA256 of the body. Forgejo sends
/// both its own header and Gitea's; either is accepted.
pub(super) fn verify_gitea(
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<(), HookError> {
    let mut names = Vec::with_capacity(2);
    if forge == Forge::Forgejo {
        names.push("X-Forgejo-Signature");
    }
    names.push("X-Gitea-Signature");
    for name in &names {
        if let Some(given) = header(headers, name)? {
            return check_hex_hmac(name, given, secret, body);
        }
    }
    Err(unauthorized(format!(
        "missing {} header",
        names.join(" or ")
    )))
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
pub(super) fn verify_github(
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<(), HookError> {
    const NAME: &str = "X-Hub-Signature-256";
    let given = required(headers, NAME)?;
    let hex = given
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized(format!("the {NAME} header does not start with sha256=")))?;
    check_hex_hmac(NAME, hex, secret, body)
}

/// GitLab: the Standard Webhooks signature when GitLab signs (a signing
/// token is set), else `X-Gitlab-Token` equal to the secret.
pub(super) fn verify_gitlab(
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    now: OffsetDateTime,
) -> Result<(), HookError> {
    let signed = ["webhook-signature", "webhook-id", "webhook-timestamp"]
        .iter()
        .any(|name| headers.contains_key(*name));
    if signed {
        return verify_standard_webhook(headers, body, secret, now);
    }
    let given = required(headers, "X-Gitlab-Token")?;
    // Equal-length digests, so the comparison leaks neither content nor length.
    let given_digest = Sha256::digest(given.as_bytes());
    let secret_digest = Sha256::digest(secret.as_bytes());
    if bool::from(given_digest.ct_eq(&secret_digest)) {
        Ok(())
    } else {
        Err(unauthorized(
            "the X-Gitlab-Token header is not the project's webhook secret",
        ))
    }
}

/// The HMAC key of a Standard Webhooks secret: the bytes after `whsec_`
/// (base64), or the secret's own bytes when it has no such prefix.
fn standard_key(secret: &str) -> Zeroizing<Vec<u8>> {
    secret
        .strip_prefix(STANDARD_SECRET_PREFIX)
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .map(Zeroizing::new)
        .unwrap_or_else(|| Zeroizing::new(secret.as_bytes().to_vec()))
}

fn standard_mac(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let key = standard_key(secret);
    let mut mac = mac(&key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256 of
/// "{id}.{timestamp}.{body}">` (one or more, space separated), with a
/// timestamp within five minutes of `now`.
fn verify_standard_webhook(
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    now: OffsetDateTime,
) -> Result<(), HookError> {
    let id = required(headers, "webhook-id")?;
    let timestamp = required(headers, "webhook-timestamp")?;
    let signatures = required(headers, "webhook-signature")?;
    let sent_at: i64 = timestamp
        .parse()
        .map_err(|_| unauthorized("the webhook-timestamp header is not a Unix time in seconds"))?;
    if now.unix_timestamp().abs_diff(sent_at) > TIMESTAMP_TOLERANCE_SECONDS {
        return Err(unauthorized(
            "the webhook-timestamp header is more than 5 minutes away from the coordinator's clock",
        ));
    }
    let expected = standard_mac(secret, id, timestamp, body);
    let mut saw_v1 = false;
    for signature in signatures.split_whitespace() {
        let Some(encoded) = signature.strip_prefix("v1,") else {
            continue;
        };
        saw_v1 = true;
        let Ok(given) = BASE64.decode(encoded) else {
            continue;
        };
        if expected.clone().verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    if saw_v1 {
        Err(unauthorized(
            "the webhook-signature header does not match the body",
        ))
    } else {
        Err(unauthorized(
            "the webhook-signature header holds no v1,<base64> signature",
        ))
    }
}

/// `sha256=<hex>`, the `X-Hub-Signature-256` GitHub sends.
pub fn sign_github(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", sign_gitea(secret, body))
}

/// Bare lower hex HMAC-SHA256, the `X-Gitea-Signature` (and
/// `X-Forgejo-Signature`) Gitea and Forgejo send.
pub fn sign_gitea(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `v1,<base64>`, the `webhook-signature` GitLab sends with
/// `webhook-id: {id}` and `webhook-timestamp: {timestamp}`.
pub fn sign_standard_webhook(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = standard_mac(secret, id, &timestamp.to_string(), body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}
