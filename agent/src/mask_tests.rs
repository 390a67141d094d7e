//! Tests of the masker: examples of each form a value is printed in, and
//! properties over random values, texts and splits (any split gives the
//! output of masking the whole input, and that output holds no needle).

use super::*;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

/// Masks `pieces` written one after the other, then finishes.
fn mask_pieces<'a>(values: &[&str], pieces: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut masker = Masker::new(values.iter().map(|v| (*v).to_owned()).collect());
    let mut out = Vec::new();
    for piece in pieces {
        out.extend(masker.push(piece));
    }
    out.extend(masker.finish());
    String::from_utf8(out).expect("utf-8 in, utf-8 out")
}

fn mask_whole(values: &[&str], input: &str) -> String {
    mask_pieces(values, [input.as_bytes()])
}

#[test]
fn the_longest_value_wins_and_a_partial_prefix_is_flushed_at_the_end() {
    let out = mask_pieces(
        &["abc", "abcdef", ""],
        [b"xxabcdefyyab".as_slice(), b"c!ab".as_slice()],
    );
    assert_eq!(out, "xx[MASKED]yy[MASKED]!ab");
}

#[test]
fn a_value_whose_start_repeats_inside_it_is_masked_across_writes() {
    assert_eq!(
        mask_pieces(&["aab"], [b"aa".as_slice(), b"ab".as_slice()]),
        "a[MASKED]"
    );
    assert_eq!(
        mask_pieces(&["abcabd"], [b"xabcab".as_slice(), b"cabd".as_slice()]),
        "xabc[MASKED]"
    );
}

#[test]
fn a_value_written_one_byte_at_a_time_with_pauses_is_masked() {
    let text = "token=supersecret!";
    let mut masker = Masker::new(vec!["supersecret".into()]);
    let mut out = Vec::new();
    for byte in text.bytes() {
        out.extend(masker.push(&[byte]));
        // A pause: the job printed nothing for a while.
        out.extend(masker.push(b""));
    }
    out.extend(masker.finish());
    assert_eq!(String::from_utf8(out).unwrap(), "token=[MASKED]!");
}

#[test]
fn only_what_could_begin_a_value_is_held_back() {
    let mut masker = Masker::new(vec!["secret".into()]);
    assert_eq!(masker.push(b"a line\nsec"), b"a line\n");
    assert_eq!(masker.push(b"ond line\n"), b"second line\n");
    assert_eq!(masker.push(b"no prefix here"), b"no prefix here");
    assert!(masker.finish().is_empty());
}

#[test]
fn a_base64_encoded_value_is_masked_at_every_alignment() {
    let value = "hunter2-is-my-password";
    // `echo -n "$SECRET" | base64`, and the same value after 1 and 2 other bytes.
    for prefix in ["", "u:", "user:"] {
        let encoded = STANDARD.encode(format!("{prefix}{value}"));
        let log = format!("Authorization: Basic {encoded}\n");
        let out = mask_whole(&[value], &log);
        assert!(out.contains(MASK), "{prefix:?}: {out}");
        for needle in needles(value.as_bytes()) {
            let needle = String::from_utf8(needle).unwrap();
            assert!(!out.contains(&needle), "{prefix:?}: {needle} in {out}");
        }
        // What is left of the encoding: at most the quartets shared with the
        // neighbours, 4 chars on each side.
        let left = out
            .trim_start_matches("Authorization: Basic ")
            .trim_end()
            .replace(MASK, "");
        assert!(left.len() <= 8, "{prefix:?}: {out}");
    }
}

#[test]
fn base64_needles_keep_only_quartets_the_value_decides() {
    // 9 bytes at alignment 0: three whole groups.
    let all = needles(b"abcdefghi");
    assert!(all.contains(&b"YWJjZGVmZ2hp".to_vec()), "{all:?}");
    // After one other byte: `x` + value, groups 1 and 2 are the value's own.
    let shifted = STANDARD.encode(b"xabcdefghi");
    assert!(all.contains(&shifted.as_bytes()[4..12].to_vec()), "{all:?}");
    // A value too short for an 8-char needle at an alignment has none there.
    let short = needles(b"abcdef");
    assert_eq!(short, vec![b"YWJjZGVm".to_vec(), b"abcdef".to_vec()]);
    assert_eq!(needles(b"ab"), vec![b"ab".to_vec()]);
    assert!(needles(b"").is_empty());
}

#[test]
fn a_url_encoded_value_is_masked() {
    let value = "p@ss w/rd!";
    assert!(needles(value.as_bytes()).contains(&b"p%40ss%20w%2Frd%21".to_vec()));
    let log = "cloning https://deploy:p%40ss%20w%2Frd%21@git.example.com/app.git\n";
    assert_eq!(
        mask_whole(&[value], log),
        "cloning https://deploy:[MASKED]@git.example.com/app.git\n"
    );
    // The unreserved characters stay as they are: no second needle then.
    let unreserved = needles(b"a-b.c_d~e");
    assert!(
        unreserved.iter().all(|n| !n.contains(&b'%')),
        "{unreserved:?}"
    );
}

#[test]
fn redact_masks_a_whole_text_without_touching_the_stream() {
    let mut masker = Masker::new(vec!["hunter22".into()]);
    assert_eq!(masker.push(b"x hunt"), b"x ");
    assert_eq!(
        masker.redact("image registry/hunter22:1 not found"),
        "image registry/[MASKED]:1 not found"
    );
    assert_eq!(masker.push(b"er22"), b"[MASKED]");
    assert!(Masker::new(Vec::new()).redact("plain") == "plain");
}

#[test]
fn debug_names_no_value() {
    let masker = Masker::new(vec!["hunter22".into()]);
    let debug = format!("{masker:?}");
    assert!(
        !debug.contains("hunter22") && !debug.contains("aHVudGVy"),
        "{debug}"
    );
}

/// Leftmost-longest masking by brute force: the reference.
fn reference(values: &[String], input: &[u8]) -> Vec<u8> {
    let all: Vec<Vec<u8>> = values.iter().flat_map(|v| needles(v.as_bytes())).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let longest = all
            .iter()
            .filter(|needle| input[i..].starts_with(needle))
            .map(Vec::len)
            .max();
        match longest {
            Some(len) => {
                out.extend_from_slice(MASK.as_bytes());
                i += len;
            }
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Values: self-overlapping ones from 2-3 letters, plain ones, and ones whose
/// URL-encoded form differs. None holds a character of [`MASK`], so a needle
/// in the output can only be one the masker missed.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{1,6}",
        "[abc]{1,9}",
        "[a-z0-9]{1,14}",
        "[a-z0-9@:/ ]{1,10}",
    ]
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Raw(usize),
    /// The value between two bits of text, all base64-encoded.
    Base64(usize, String, String),
    Url(usize),
}

fn piece() -> impl Strategy<Value = Piece> {
    let text = "[a-z \n]{0,12}";
    prop_oneof![
        text.prop_map(Piece::Text),
        any::<usize>().prop_map(Piece::Raw),
        (any::<usize>(), "[a-z]{0,4}", "[a-z]{0,4}").prop_map(|(v, a, b)| Piece::Base64(v, a, b)),
        any::<usize>().prop_map(Piece::Url),
    ]
}

fn render(values: &[String], pieces: &[Piece]) -> Vec<u8> {
    let pick = |index: &usize| &values[index % values.len()];
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
            Piece::Raw(v) => out.extend_from_slice(pick(v).as_bytes()),
            Piece::Base64(v, before, after) => {
                let encoded = STANDARD.encode(format!("{before}{}{after}", pick(v)));
                out.extend_from_slice(encoded.as_bytes());
            }
            Piece::Url(v) => {
                let encoded: String =
                    percent_encoding::percent_encode(pick(v).as_bytes(), URL_UNRESERVED).collect();
                out.extend_from_slice(encoded.as_bytes());
            }
        }
    }
    out
}

fn masked_in_pieces(values: &[String], input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut masker = Masker::new(values.to_vec());
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts {
        // Equal cuts are empty writes.
        out.extend(masker.push(&input[start..cut]));
        start = cut;
    }
    out.extend(masker.push(&input[start..]));
    out.extend(masker.finish());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_gives_the_output_of_the_whole_and_no_needle(
        values in prop::collection::vec(value(), 1..4),
        pieces in prop::collection::vec(piece(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let input = render(&values, &pieces);
        let whole = masked_in_pieces(&values, &input, &[]);
        prop_assert_eq!(&whole, &reference(&values, &input));
        prop_assert_eq!(&masked_in_pieces(&values, &input, &cuts), &whole);
        for value in &values {
            for needle in needles(value.as_bytes()) {
                prop_assert!(
                    !contains(&whole, &needle),
                    "needle {:?} in {:?}",
                    String::from_utf8_lossy(&needle),
                    String::from_utf8_lossy(&whole)
                );
            }
        }
    }

    #[test]
    fn one_byte_per_write_gives_the_output_of_the_whole(
        values in prop::collection::vec(value(), 1..4),
        pieces in prop::collection::vec(piece(), 0..12),
    ) {
        let input = render(&values, &pieces);
        let whole = masked_in_pieces(&values, &input, &[]);
        let every_byte: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(masked_in_pieces(&values, &input, &every_byte), whole);
    }

    #[test]
    fn text_without_a_value_passes_unchanged(
        values in prop::collection::vec("[ab]{2,6}", 1..3),
        text in "[c-z \n]{0,64}",
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let input = text.as_bytes();
        prop_assert_eq!(masked_in_pieces(&values, input, &cuts), input.to_vec());
    }
}
