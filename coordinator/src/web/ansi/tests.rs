//! Unit tests of the log renderer: styles, escaping, `\r`, sections,
//! offsets, long lines and chunking invariance.

use super::*;

/// Renders a whole log in one push, plus the partial last line.
fn render(log: &[u8]) -> Vec<RenderedLine> {
    let mut renderer = LogRenderer::new(0);
    let mut lines = renderer.push(log);
    lines.extend(renderer.finish());
    lines
}

fn htmls(log: &[u8]) -> Vec<String> {
    render(log).into_iter().map(|l| l.html).collect()
}

fn plain(html: &str) -> RenderedLine {
    RenderedLine {
        offset: 0,
        html: html.to_owned(),
        section: None,
    }
}

#[test]
fn plain_lines_and_offsets() {
    let mut r = LogRenderer::new(0);
    assert_eq!(r.offset(), 0);
    let lines = r.push(b"one\ntwo\nthr");
    assert_eq!(
        lines,
        vec![
            RenderedLine {
                offset: 0,
                ..plain("one")
            },
            RenderedLine {
                offset: 4,
                ..plain("two")
            },
        ]
    );
    assert_eq!(r.offset(), 8);
    assert_eq!(
        r.finish(),
        Some(RenderedLine {
            offset: 8,
            ..plain("thr")
        })
    );
    // finish is a snapshot: the line continues and keeps its offset.
    assert_eq!(r.offset(), 8);
    assert_eq!(
        r.push(b"ee\n"),
        vec![RenderedLine {
            offset: 8,
            ..plain("three")
        }]
    );
    assert_eq!(r.offset(), 14);
    assert_eq!(r.finish(), None);
}

#[test]
fn offsets_start_where_the_renderer_starts() {
    let mut r = LogRenderer::new(1000);
    let lines = r.push(b"\x1b[31ma\n\nb\n");
    let offsets: Vec<u64> = lines.iter().map(|l| l.offset).collect();
    assert_eq!(offsets, vec![1000, 1007, 1008]);
    assert_eq!(r.offset(), 1010);
}

#[test]
fn empty_lines_are_lines() {
    assert_eq!(htmls(b"\n\n"), vec!["", ""]);
}

#[test]
fn colours_carry_across_lines_until_reset() {
    assert_eq!(
        htmls(b"\x1b[1;31mred\nstill\x1b[0m plain\nplain\n"),
        vec![
            "<span class=\"b f1\">red</span>",
            "<span class=\"b f1\">still</span> plain",
            "plain",
        ]
    );
}

#[test]
fn style_changes_split_spans_and_defaults_get_none() {
    assert_eq!(
        htmls(b"a\x1b[32mb\x1b[1mc\x1b[22mdd\x1b[39me\x1b[4;3;2mf\x1b[23;24mg\x1b[mh\n"),
        vec![
            "a<span class=\"f2\">b</span><span class=\"b f2\">c</span>\
             <span class=\"f2\">dd</span>e<span class=\"d i u\">f</span>\
             <span class=\"d\">g</span>h"
        ]
    );
}

#[test]
fn sixteen_colours_bright_and_backgrounds() {
    assert_eq!(
        htmls(b"\x1b[97;100mx\x1b[49;37;41my\x1b[0m\n"),
        vec!["<span class=\"f15 g8\">x</span><span class=\"f7 g1\">y</span>"]
    );
}

#[test]
fn style_without_text_makes_no_span() {
    assert_eq!(htmls(b"\x1b[31m\x1b[0mx\n\x1b[1m\n"), vec!["x", ""]);
}

#[test]
fn colours_256_and_truecolour() {
    assert_eq!(
        htmls(b"\x1b[38;5;196ma\x1b[48;5;244mb\x1b[38;5;3mc\x1b[0m\x1b[38;2;1;2;255;48:2::16:32:48md\n"),
        vec![
            "<span style=\"color:#ff0000\">a</span>\
             <span style=\"color:#ff0000;background:#808080\">b</span>\
             <span class=\"f3\" style=\"background:#808080\">c</span>\
             <span style=\"color:#0102ff;background:#102030\">d</span>"
        ]
    );
}

#[test]
fn text_is_escaped() {
    assert_eq!(
        htmls(b"<a href=\"x\">&'</a>\n"),
        vec!["&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"]
    );
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(htmls(b"a\xffb\xe2\x82c\n"), vec!["a\u{fffd}b\u{fffd}c"]);
    assert_eq!(htmls("é✓\n".as_bytes()), vec!["é✓"]);
}

#[test]
fn carriage_return_keeps_the_last_state() {
    assert_eq!(htmls(b"10%\r50%\r100%\n"), vec!["100%"]);
    assert_eq!(
        htmls(b"10%\r\x1b[0K\x1b[32m50%\n"),
        vec!["<span class=\"f2\">50%</span>"]
    );
}

#[test]
fn carriage_return_then_erase_clears_the_line() {
    assert_eq!(htmls(b"50%\r\x1b[0K\n"), vec![""]);
    assert_eq!(htmls(b"50%\r\x1b[K100%\n"), vec!["100%"]);
    // A style change alone does not: only text or an erase does.
    assert_eq!(htmls(b"50%\r\x1b[1m\n"), vec!["50%"]);
    // Without a `\r`, `\e[K` (erase to the end) has nothing to erase.
    assert_eq!(htmls(b"kept\x1b[K\n"), vec!["kept"]);
}

#[test]
fn crlf_is_a_line_end() {
    assert_eq!(htmls(b"dos\r\nline\r\n"), vec!["dos", "line"]);
    let mut r = LogRenderer::new(0);
    assert!(r.push(b"dos\r").is_empty());
    assert_eq!(r.push(b"\nx"), vec![plain("dos")]);
}

#[test]
fn a_trailing_carriage_return_keeps_the_text() {
    // Nothing has overwritten it yet.
    assert_eq!(htmls(b"50%\r"), vec!["50%"]);
}

#[test]
fn tabs_stay_other_controls_go() {
    assert_eq!(htmls(b"a\tb\x07c\x08d\x00e\n"), vec!["a\tbcde"]);
}

#[test]
fn other_escapes_are_stripped() {
    let log = b"\x1b[0Ka\x1b[2Jb\x1b[3;4Hc\x1b[1Ad\x1b]0;title\x07e\x1b]8;;http://x\x1b\\f\x1b(Bg\x1b7h\x1b[?25li\n";
    assert_eq!(htmls(log), vec!["abcdefghi"]);
}

#[test]
fn an_unterminated_osc_ends_at_the_newline() {
    assert_eq!(htmls(b"a\x1b]0;never ends\nb\n"), vec!["a", "b"]);
}

#[test]
fn masked_secrets_are_marked() {
    assert_eq!(
        htmls(b"token=[MASKED] \x1b[31m[MASKED]<\x1b[0m\n"),
        vec![
            "token=<span class=\"masked\">[MASKED]</span> \
             <span class=\"f1\"><span class=\"masked\">[MASKED]</span>&lt;</span>"
        ]
    );
}

#[test]
fn section_start_and_end() {
    let log = b"\x1b[0Ksection_start:1700000000:build_step[collapsed=true]\r\x1b[0K\x1b[36;1mStep 1: build\x1b[0;m\n\
                make\n\
                \x1b[0Ksection_end:1700000009:build_step\r\x1b[0K\n";
    let lines = render(log);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0].section,
        Some(Section::Start {
            name: "build_step".into(),
            collapsed: true,
            at: 1_700_000_000
        })
    );
    assert_eq!(lines[0].html, "<span class=\"b f6\">Step 1: build</span>");
    assert_eq!(lines[1].section, None);
    assert_eq!(
        lines[2].section,
        Some(Section::End {
            name: "build_step".into(),
            at: 1_700_000_009
        })
    );
    assert_eq!(lines[2].html, "");
}

#[test]
fn section_options_are_optional() {
    let lines = render(b"section_start:5:a.b-c_D\r\x1b[0Kheader\nsection_start:6:x[foo=1,collapsed=false]\r\x1b[0K\n");
    assert_eq!(
        lines[0].section,
        Some(Section::Start {
            name: "a.b-c_D".into(),
            collapsed: false,
            at: 5
        })
    );
    assert_eq!(lines[0].html, "header");
    assert_eq!(
        lines[1].section,
        Some(Section::Start {
            name: "x".into(),
            collapsed: false,
            at: 6
        })
    );
}

#[test]
fn malformed_markers_are_plain_text() {
    for (log, shown) in [
        (
            &b"section_start:abc:name\r\x1b[0Kx\n"[..],
            "section_start:abc:namex",
        ),
        (
            b"section_start:1:bad name\r\x1b[0K\n",
            "section_start:1:bad name",
        ),
        (b"section_start:1:\r\x1b[0K\n", "section_start:1:"),
        (
            b"section_start:1:n[unclosed\r\x1b[0K\n",
            "section_start:1:n[unclosed",
        ),
        (
            b"section_end:1:n[collapsed=true]\r\x1b[0K\n",
            "section_end:1:n[collapsed=true]",
        ),
        (
            b"section_start:99999999999999999999999:n\r\x1b[0K\n",
            "section_start:99999999999999999999999:n",
        ),
        // A well-formed marker needs `\e[0K` right after its `\r`.
        (b"section_start:1:n\r\n", "section_start:1:n"),
        (b"section_start:1:n\rtext\n", "section_start:1:ntext"),
        (b"section_start:1:n", "section_start:1:n"),
    ] {
        let lines = render(log);
        assert_eq!(lines.len(), 1, "{log:?}");
        assert_eq!(lines[0].section, None, "{log:?}");
        assert_eq!(lines[0].html, shown, "{log:?}");
    }
}

#[test]
fn a_marker_after_a_progress_line_still_counts() {
    let lines = render(b"junk\rsection_end:3:s\r\x1b[0K\n");
    assert_eq!(
        lines[0].section,
        Some(Section::End {
            name: "s".into(),
            at: 3
        })
    );
    assert_eq!(lines[0].html, "");
}

#[test]
fn a_long_line_is_cut_and_keeps_its_style() {
    let mut log = b"\x1b[31m".to_vec();
    let total = MAX_LINE_BYTES as usize * 2 + 10;
    log.extend(std::iter::repeat_n(b'x', total - log.len()));
    log.push(b'\n');
    let mut r = LogRenderer::new(0);
    let lines = r.push(&log);
    let offsets: Vec<u64> = lines.iter().map(|l| l.offset).collect();
    assert_eq!(offsets, vec![0, MAX_LINE_BYTES, 2 * MAX_LINE_BYTES]);
    let first_len = MAX_LINE_BYTES as usize - 5;
    assert_eq!(
        lines[0].html,
        format!("<span class=\"f1\">{}</span>", "x".repeat(first_len))
    );
    assert_eq!(
        lines[1].html,
        format!(
            "<span class=\"f1\">{}</span>",
            "x".repeat(MAX_LINE_BYTES as usize)
        )
    );
    assert_eq!(lines[2].html, "<span class=\"f1\">xxxxxxxxxx</span>");
    assert_eq!(r.offset(), total as u64 + 1);
}

#[test]
fn a_huge_unterminated_string_is_dropped_not_buffered() {
    let mut log = b"\x1b]0;".to_vec();
    log.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES as usize * 2));
    log.extend(b"after\n");
    let lines = render(&log);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].html, "");
    // The parser restarts at the cut: what follows is text again.
    assert_eq!(lines[2].html.trim_start_matches('y'), "after");
}

#[test]
fn line_markup() {
    assert_eq!(
        line_html(&RenderedLine { offset: 42, ..plain("a &amp; b") }),
        "<div class=\"l\" id=\"o42\"><a class=\"n\" href=\"#o42\"></a><span class=\"t\">a &amp; b</span></div>"
    );
    let start = RenderedLine {
        offset: 7,
        html: "Step".into(),
        section: Some(Section::Start {
            name: "s1".into(),
            collapsed: true,
            at: 1,
        }),
    };
    assert_eq!(
        line_html(&start),
        "<div class=\"l sh\" id=\"o7\" data-s=\"s1\" data-c=\"1\"><a class=\"n\" href=\"#o7\"></a><span class=\"t\">Step</span></div>"
    );
    let open = RenderedLine {
        section: Some(Section::Start {
            name: "s1".into(),
            collapsed: false,
            at: 1,
        }),
        ..start
    };
    assert_eq!(
        line_html(&open),
        "<div class=\"l sh\" id=\"o7\" data-s=\"s1\"><a class=\"n\" href=\"#o7\"></a><span class=\"t\">Step</span></div>"
    );
    let end = RenderedLine {
        offset: 9,
        html: String::new(),
        section: Some(Section::End {
            name: "a\"b".into(),
            at: 2,
        }),
    };
    assert_eq!(
        line_html(&end),
        "<div class=\"l se\" id=\"o9\" data-e=\"a&quot;b\"><a class=\"n\" href=\"#o9\"></a><span class=\"t\"></span></div>"
    );
}

/// A log with every feature whose bytes can be split inside escapes,
/// markers, `\r\n` and multi-byte characters.
const SAMPLE: &[u8] = b"\x1b[0Ksection_start:1700000000:prepare[collapsed=true]\r\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n\
    plain \xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x90\xa6 & <tag>\r\n\
    \x1b[38;5;208morange\x1b[48;2;1;2;3m on rgb\nstill orange\x1b[0m\n\
    10%\r\x1b[0K50%\r\x1b[0K100%\n\
    bad \xff\xe2\x82 utf8\x1b]0;title\x07 osc \x1b[2J\x1b[1;1H cursor\n\
    secret=[MASKED]\tdone\r\n\
    section_start:1:broken name\r\x1b[0K\n\
    \x1b[0Ksection_end:1700000005:prepare\r\x1b[0K\n\
    tail \x1b[1mbold";

fn render_chunks(chunks: &[&[u8]]) -> (Vec<RenderedLine>, u64) {
    let mut r = LogRenderer::new(3);
    let mut lines = Vec::new();
    for chunk in chunks {
        lines.extend(r.push(chunk));
    }
    let offset = r.offset();
    lines.extend(r.finish());
    (lines, offset)
}

#[test]
fn chunking_never_changes_the_output() {
    let whole = render_chunks(&[SAMPLE]);
    assert_eq!(whole.0.len(), 10);
    for split in 0..=SAMPLE.len() {
        let (a, b) = SAMPLE.split_at(split);
        assert_eq!(render_chunks(&[a, b]), whole, "split at {split}");
    }
    for (i, j) in (0..SAMPLE.len()).flat_map(|i| (i..SAMPLE.len()).step_by(7).map(move |j| (i, j)))
    {
        let chunks = [&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]];
        assert_eq!(render_chunks(&chunks), whole, "split at {i} and {j}");
    }
    let bytes: Vec<&[u8]> = SAMPLE.chunks(1).collect();
    assert_eq!(render_chunks(&bytes), whole, "byte by byte");
}

#[test]
fn the_sample_renders_as_expected() {
    let (lines, offset) = render_chunks(&[SAMPLE]);
    let html: Vec<&str> = lines.iter().map(|l| l.html.as_str()).collect();
    assert_eq!(
        html,
        vec![
            "<span class=\"b f6\">Preparing</span>",
            "plain été ✓ 🐦 &amp; &lt;tag&gt;",
            "<span style=\"color:#ff8700\">orange</span><span style=\"color:#ff8700;background:#010203\"> on rgb</span>",
            "<span style=\"color:#ff8700;background:#010203\">still orange</span>",
            "100%",
            "bad \u{fffd}\u{fffd} utf8 osc  cursor",
            "secret=<span class=\"masked\">[MASKED]</span>\tdone",
            "section_start:1:broken name",
            "",
            "tail <span class=\"b\">bold</span>",
        ]
    );
    assert!(matches!(
        lines[0].section,
        Some(Section::Start {
            collapsed: true,
            ..
        })
    ));
    assert!(matches!(lines[8].section, Some(Section::End { .. })));
    assert_eq!(lines[0].offset, 3);
    assert_eq!(
        offset,
        3 + SAMPLE.len() as u64 - b"tail \x1b[1mbold".len() as u64
    );
}

#[test]
fn a_cut_never_splits_a_character() {
    // "é" (2 bytes) straddles the 64 KiB limit: the line is cut before it.
    let limit = MAX_LINE_BYTES as usize;
    let mut log = vec![b'x'; limit - 1];
    log.extend("é tail\n".as_bytes());
    let whole = render_chunks(&[&log]);
    assert_eq!(whole.0.len(), 2);
    assert_eq!(whole.0[1].offset, 3 + limit as u64 - 1);
    assert_eq!(whole.0[1].html, "é tail");
    for split in limit - 4..limit + 4 {
        let (a, b) = log.split_at(split);
        assert_eq!(render_chunks(&[a, b]), whole, "split at {split}");
    }
}

#[test]
fn a_character_split_between_pushes_loses_nothing() {
    // vte 0.15 alone would drop the `t` after the split `é`.
    let (lines, _) = render_chunks(&[b"\xc3", b"\xa9t\xe2\x9c", b"\x93!\n"]);
    assert_eq!(lines[0].html, "ét✓!");
    let mut r = LogRenderer::new(0);
    assert!(r.push(b"\xe2\x82").is_empty());
    assert_eq!(r.finish(), Some(plain("")));
    assert_eq!(r.push(b"\xac\n"), vec![plain("€")]);
}
