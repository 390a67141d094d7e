//! `CI_ENVIRONMENT_SLUG`: GitLab's `Gitlab::Slug::Environment`, byte for
//! byte, because users put the slug in URLs and DNS names.
//!
//! GitLab adds a suffix taken from the SHA-256 of the name when the slug is
//! not the name itself.

/// The slug of an environment name: lowercase letters, digits and `-`,
/// starting with a letter, at most 24 characters; when it differs from the
/// name, 17 characters of it, `-` and a 6-character suffix from the name's
/// SHA-256 (so that `review/a` and `review-a` get different slugs).
pub fn environment_slug(name: &str) -> String {
    slug_with_suffix(name, || base36_tail(&sha256(name.as_bytes())))
}

/// [`environment_slug`] with the suffix given, so tests can use GitLab's
/// own table (which stubs the hash).
fn slug_with_suffix(name: &str, suffix: impl FnOnce() -> String) -> String {
    let lowered = name.to_lowercase();
    let mut slug: String = lowered
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert_str(0, "env-");
    }
    // Ruby's `squeeze('-')`: runs of dashes become one.
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&suffix());
        short
    } else {
        squeezed.trim_end_matches('-').to_owned()
    }
}

/// Ruby's `hexdigest.to_i(16).to_s(36).last(6)`: the digest as a number
/// modulo 36^6, in base 36.
fn base36_tail(digest: &[u8]) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const MODULUS: u64 = 36u64.pow(6);
    let remainder = digest
        .iter()
        .fold(0u64, |acc, byte| (acc * 256 + u64::from(*byte)) % MODULUS);
    let mut out = [b'0'; 6];
    let mut rest = remainder;
    for slot in out.iter_mut().rev() {
        // `rest % 36` is below 36, so the index is in bounds.
        *slot = DIGITS[usize::try_from(rest % 36).unwrap_or(0)];
        rest /= 36;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_slug_table() {
        assert_eq!(base36_tail(&[0xaa; 32]), "q517sa");
        let q = || "q517sa".to_owned();
        for (name, slug) in [
            ("staging-12345678901234567", "staging-123456789-q517sa"),
            ("9-staging-123456789012345", "env-9-staging-123-q517sa"),
            ("staging-1234567890123456", "staging-1234567890123456"),
            ("staging-1234567890123456-", "staging-123456789-q517sa"),
            ("production", "production"),
            ("PRODUCTION", "production-q517sa"),
            ("review/1-foo", "review-1-foo-q517sa"),
        ] {
            assert_eq!(slug_with_suffix(name, q), slug, "{name}");
        }
    }

    #[test]
    fn slugs_follow_gitlab() {
        assert_eq!(environment_slug("production"), "production");
        assert_eq!(environment_slug("staging-2"), "staging-2");
        // Differs from the name: shortened and suffixed.
        let review = environment_slug("review/feature-x");
        assert!(review.starts_with("review-feature-x-"), "{review}");
        assert_eq!(review.len(), 17 + 6);
        assert_ne!(review, environment_slug("review-feature/x"));
        let digits = environment_slug("123");
        assert!(digits.starts_with("env-123-"), "{digits}");
        let long = environment_slug("a-very-long-environment-name-indeed");
        assert_eq!(long.len(), 24);
        assert!(long.starts_with("a-very-long-envir-"), "{long}");
    }
}
