//! `CI_ENVIRONMENT_SLUG`: GitLab's `Gitlab::Slug::Environment`, byte for
//! byte, because users put the slug in URLs and DNS names.
//!
//! GitLab adds a suffix taken from the SHA-256 of the name when the slug is
//! not the name itself. SHA-256 is written out here (it is short and tested
//! against the standard vectors) so that `osprey-shared` stays free of I/O
//! and of crates beyond its parser's.

/// The slug of an environment name: lowercase letters, digits and `-`,
/// starting with a letter, at most 24 characters; when it differs from the
/// name, 17 characters of it, `-` and a 6-character suffix from the name's
/// SHA-256 (so that `review/a` and `review-a` get different slugs).
pub(crate) fn environment_slug(name: &str) -> String {
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

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// FIPS 180-4 SHA-256.
fn sha256(data: &[u8]) -> [u8; 32] {
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    let bit_length = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_length.to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let choice = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(choice)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(majority);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, value) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    /// GitLab's spec for `Gitlab::Slug::Environment`, whose stubbed digest
    /// `'a' * 64` gives the suffix `q517sa`.
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
