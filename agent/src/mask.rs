//! Masking of secret values in a byte stream (a job's log): every form in
//! which a value is likely to be printed is replaced by [`MASK`], even when the
//! stream's chunks split it anywhere.
//!
//! The forms ("needles") of one value, as GitHub's runner masks them: the raw
//! value; its standard base64 encoding at each of the three alignments it can
//! have inside a longer encoded text, keeping only the quartets its own bytes
//! decide; and its URL-encoded form. All needles are matched at once by one
//! Aho-Corasick automaton, leftmost-longest.
//!
//! Streaming: a chunk is emitted up to the longest suffix that could still
//! start a needle, which is held back until the next chunk or [`Masker::finish`]
//! decides. Matches that start before that suffix cannot change with more input
//! (a longer or earlier match would have to run past the end of what was read,
//! so it would start inside the held-back suffix), which makes the output of
//! any split of the input the same as that of masking it whole.
//!
//! This module owns no I/O and logs nothing about the values it holds.

use aho_corasick::{AhoCorasick, Input, MatchKind};
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// What replaces a masked value in the log.
pub const MASK: &str = "[MASKED]";

/// A base64 needle shorter than this would mask common text, and would hide
/// at most a few bytes of the value anyway.
const MIN_BASE64_NEEDLE: usize = 8;

/// Bytes a URL-encoder leaves alone (RFC 3986 unreserved); every other byte is
/// percent-encoded.
const URL_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The forms of `value` that are masked in the log: raw, base64 at the three
/// alignments (quartets fully decided by the value only, at least 8 chars) and
/// URL-encoded (when that differs). Deduplicated; empty for an empty value.
pub fn needles(value: &[u8]) -> Vec<Vec<u8>> {
    if value.is_empty() {
        return Vec::new();
    }
    let mut needles = vec![value.to_vec()];
    needles.extend(base64_needles(value));
    let url: String = percent_encoding::percent_encode(value, URL_UNRESERVED).collect();
    if url.as_bytes() != value {
        needles.push(url.into_bytes());
    }
    needles.sort();
    needles.dedup();
    needles
}

/// `value` base64-encoded after 0, 1 and 2 bytes of something else: the
/// quartets that depend on the neighbours (the first one when the value does
/// not start a 3-byte group, the last one when it does not end one) are
/// dropped, so the needle matches wherever the value sits in an encoded text.
fn base64_needles(value: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..3usize).filter_map(move |shift| {
        let mut shifted = vec![b'x'; shift];
        shifted.extend_from_slice(value);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&shifted);
        // Groups of 3 input bytes made of the value's bytes only.
        let first = shift.div_ceil(3);
        let end = (shift + value.len()) / 3;
        let needle = encoded.as_bytes().get(4 * first..4 * end)?;
        (needle.len() >= MIN_BASE64_NEEDLE).then(|| needle.to_vec())
    })
}

/// One needle with its KMP failure table, to find how much of a tail could
/// still begin it.
struct Prefixes {
    needle: Vec<u8>,
    /// `failure[i]`: length of the longest proper border of `needle[..=i]`.
    failure: Vec<usize>,
}

impl Prefixes {
    fn new(needle: Vec<u8>) -> Self {
        let mut failure = vec![0; needle.len()];
        let mut border = 0;
        for i in 1..needle.len() {
            while border > 0 && needle[i] != needle[border] {
                border = failure[border - 1];
            }
            if needle[i] == needle[border] {
                border += 1;
            }
            failure[i] = border;
        }
        Self { needle, failure }
    }

    /// Length of the longest suffix of `data` that is a proper prefix of the
    /// needle. Reads only the last `needle.len() - 1` bytes of `data`.
    fn longest_in(&self, data: &[u8]) -> usize {
        let tail = &data[data.len().saturating_sub(self.needle.len() - 1)..];
        let mut state = 0;
        for &byte in tail {
            // `state < tail.len() < needle.len()`: always a valid index.
            while state > 0 && self.needle[state] != byte {
                state = self.failure[state - 1];
            }
            if self.needle[state] == byte {
                state += 1;
            }
        }
        state
    }
}

/// The automaton and the prefix tables of all needles.
struct Needles {
    automaton: AhoCorasick,
    prefixes: Vec<Prefixes>,
}

impl Needles {
    /// Length of the longest suffix of `data` that is a proper prefix of some needle.
    fn held_back(&self, data: &[u8]) -> usize {
        self.prefixes
            .iter()
            .map(|prefixes| prefixes.longest_in(data))
            .max()
            .unwrap_or(0)
    }

    /// Appends `data`, masked, to `out`, except the tail that could still
    /// begin a needle (none when `last`); returns where that tail starts.
    fn mask(&self, data: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
        let cut_of = |from: usize| {
            if last {
                data.len()
            } else {
                data.len() - self.held_back(&data[from..])
            }
        };
        let mut pos = 0;
        let mut cut = cut_of(0);
        loop {
            // A match that ended inside the held-back tail: what is left of
            // the tail may no longer begin a needle.
            if pos > cut {
                cut = cut_of(pos);
            }
            match self.automaton.find(Input::new(data).range(pos..)) {
                Some(found) if found.start() < cut => {
                    out.extend_from_slice(&data[pos..found.start()]);
                    out.extend_from_slice(MASK.as_bytes());
                    pos = found.end();
                }
                _ => break,
            }
        }
        let cut = cut.max(pos);
        out.extend_from_slice(&data[pos..cut]);
        cut
    }
}

/// What the masker does when its automaton cannot be built (far too many or
/// too long values): nothing of the stream is safe to write.
const WITHHELD: &str = "[MASKED: output withheld, the masked values could not be prepared]\n";

/// Replaces masked values with [`MASK`] in a byte stream whose chunks may
/// split a value: the tail that could start a value is held back until the
/// next chunk (or [`Masker::finish`]) decides.
pub struct Masker {
    needles: Option<Needles>,
    pending: Vec<u8>,
    /// The automaton could not be built: output is withheld.
    withheld: bool,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field(
                "needles",
                &self.needles.as_ref().map_or(0, |n| n.prefixes.len()),
            )
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// A masker of `values` (empty ones are ignored) in all their forms.
    pub fn new(values: Vec<String>) -> Self {
        let mut all: Vec<Vec<u8>> = values
            .iter()
            .flat_map(|value| needles(value.as_bytes()))
            .collect();
        all.sort();
        all.dedup();
        if all.is_empty() {
            return Self {
                needles: None,
                pending: Vec::new(),
                withheld: false,
            };
        }
        let built = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&all);
        match built {
            Ok(automaton) => Self {
                needles: Some(Needles {
                    automaton,
                    prefixes: all.into_iter().map(Prefixes::new).collect(),
                }),
                pending: Vec::new(),
                withheld: false,
            },
            Err(err) => {
                // The error names sizes, never the patterns.
                tracing::error!(error = %err, values = values.len(), "cannot build the log masker; job output withheld");
                Self {
                    needles: None,
                    pending: Vec::new(),
                    withheld: true,
                }
            }
        }
    }

    /// Masks `chunk` (after what was held back); returns what is safe to write.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.withheld {
            return Vec::new();
        }
        let Some(needles) = &self.needles else {
            return chunk.to_vec();
        };
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let cut = needles.mask(&self.pending, false, &mut out);
        self.pending.drain(..cut);
        out
    }

    /// Everything still held back, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.withheld {
            return WITHHELD.as_bytes().to_vec();
        }
        let pending = std::mem::take(&mut self.pending);
        self.redact_bytes(&pending)
    }

    /// `text` masked as a whole, independently of the stream (a failure
    /// reason, a message about the job).
    pub fn redact(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes())).into_owned()
    }

    fn redact_bytes(&self, data: &[u8]) -> Vec<u8> {
        if self.withheld {
            return MASK.as_bytes().to_vec();
        }
        let Some(needles) = &self.needles else {
            return data.to_vec();
        };
        let mut out = Vec::with_capacity(data.len());
        needles.mask(data, true, &mut out);
        out
    }
}

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
