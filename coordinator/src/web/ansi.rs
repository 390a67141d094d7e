//! A job log as HTML: a stateful ANSI renderer (vte) that keeps the style
//! across chunks and lines, understands GitLab's collapsible sections and
//! handles `\r` progress lines. Pure: bytes in, lines out.
//!
//! Chunking never changes the output: vte carries partial escapes and
//! partial UTF-8 across `advance` calls, and every decision this module
//! takes on its own (where a line ends, where a long line is cut) is made at
//! an absolute byte position, never at a chunk boundary. The `\r` rule is a
//! pending state resolved by the next event, so `\r` and `\n` may arrive in
//! different chunks.
//!
//! vte 0.15 loses the character after a UTF-8 sequence split between two
//! `advance` calls (its partial-character path reports too many bytes
//! consumed; alacritty/vte#159), so vte is never handed a buffer that ends
//! inside a character: an incomplete tail is held back until the rest of it
//! arrives.

mod style;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use self::style::Style;

/// A line is cut after this many bytes without a newline, so a runaway
/// line (or a progress bar redrawn with `\r` forever) keeps memory bounded.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// Section markers are short; longer text that starts like one is shown as
/// plain text instead of being parsed.
const MAX_MARKER_LEN: usize = 1024;

/// A collapsible section marker of GitLab's log format:
/// `section_start:UNIX_TS:NAME[collapsed=true]\r\e[0K` and
/// `section_end:UNIX_TS:NAME\r\e[0K`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    Start {
        name: String,
        collapsed: bool,
        at: u64,
    },
    End {
        name: String,
        at: u64,
    },
}

/// One rendered line of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedLine {
    /// Byte offset of the line's first byte in the whole log: the line's
    /// stable anchor (`#o{offset}`).
    pub offset: u64,
    /// The line's text as HTML: escaped, styled with `<span class=…>`.
    pub html: String,
    /// The section marker the line carried, if any (its text is dropped).
    pub section: Option<Section>,
}

/// Renders a log incrementally. Feed it bytes as they arrive; it returns the
/// lines they complete and keeps the partial last line and the SGR style.
pub struct LogRenderer {
    parser: vte::Parser,
    line: LineBuilder,
    /// Offset just past the last byte handed to the parser.
    pos: u64,
    /// The incomplete UTF-8 character at the end of the last push (at most
    /// 3 bytes), not yet handed to the parser.
    carry: Vec<u8>,
    /// Offset of the first byte of the current (partial) line.
    line_start: u64,
}

impl fmt::Debug for LogRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogRenderer")
            .field("pos", &self.pos)
            .field("line_start", &self.line_start)
            .field("style", &self.line.style)
            .finish_non_exhaustive()
    }
}

impl LogRenderer {
    /// A renderer for the log from byte `offset` (0 for the start).
    pub fn new(offset: u64) -> Self {
        Self {
            parser: vte::Parser::new(),
            line: LineBuilder::default(),
            pos: offset,
            carry: Vec::new(),
            line_start: offset,
        }
    }

    /// Feeds `bytes`; returns the lines they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<RenderedLine> {
        let data: Cow<'_, [u8]> = if self.carry.is_empty() {
            Cow::Borrowed(bytes)
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(bytes);
            Cow::Owned(joined)
        };
        let complete = data.len() - incomplete_utf8_tail(&data);
        let mut lines = Vec::new();
        let mut rest = &data[..complete];
        while !rest.is_empty() {
            // Segments end at a newline or at the long-line cut, so both are
            // seen at their exact position whatever the chunking.
            let room = usize::try_from(MAX_LINE_BYTES - (self.pos - self.line_start))
                .unwrap_or(usize::MAX);
            let through_newline = rest.iter().position(|&b| b == b'\n').map(|i| i + 1);
            let mut len = through_newline.unwrap_or(rest.len()).min(room);
            let cut = len == room && rest[len - 1] != b'\n';
            if cut {
                // Cut before a character that straddles the limit, not in it.
                len -= incomplete_utf8_tail(&rest[..len]);
            }
            let (segment, tail) = rest.split_at(len);
            self.parser.advance(&mut self.line, segment);
            self.pos += len as u64;
            if segment.last() == Some(&b'\n') {
                if !std::mem::take(&mut self.line.newline_seen) {
                    // The parser swallowed the newline inside an OSC, DCS or
                    // similar string: a log line never spans it, so start
                    // the next line from a clean parser.
                    self.parser = vte::Parser::new();
                }
                lines.push(self.end_line());
            } else if cut {
                if !self.line.active {
                    // 64 KiB without a single action: the parser is inside
                    // an unterminated string, which vte would buffer forever.
                    self.parser = vte::Parser::new();
                }
                lines.push(self.end_line());
            }
            rest = tail;
        }
        self.carry = data[complete..].to_vec();
        lines
    }

    /// The partial last line, if any, rendered as it stands (the log ended
    /// without a newline).
    ///
    /// This is a snapshot, not a flush: the line stays pending, `offset()`
    /// stays at its start and further `push`es continue it, so a live view
    /// can later replace it by its complete version (same `offset`, same
    /// anchor). An incomplete UTF-8 character at the very end is not shown
    /// until its remaining bytes arrive.
    pub fn finish(&mut self) -> Option<RenderedLine> {
        if self.pos == self.line_start && self.carry.is_empty() {
            return None;
        }
        Some(RenderedLine {
            offset: self.line_start,
            html: self.line.html(),
            section: self.line.section.clone(),
        })
    }

    /// Offset just past the last complete line returned so far.
    pub fn offset(&self) -> u64 {
        self.line_start
    }

    fn end_line(&mut self) -> RenderedLine {
        let line = RenderedLine {
            offset: self.line_start,
            html: self.line.html(),
            section: self.line.section.take(),
        };
        self.line.clear_line();
        self.line_start = self.pos;
        line
    }
}

/// The markup of one line, the same on the page and in the live stream:
/// `<div class="l" id="o{offset}" …><a class="n" href="#o{offset}"></a><span class="t">…</span></div>`
/// with `data-s="NAME"` (and class `sh`, plus `data-c="1"` when collapsed)
/// on a section start and `data-e="NAME"` on a section end.
pub fn line_html(line: &RenderedLine) -> String {
    let offset = line.offset;
    let open = match &line.section {
        None => format!("<div class=\"l\" id=\"o{offset}\">"),
        Some(Section::Start {
            name, collapsed, ..
        }) => format!(
            "<div class=\"l sh\" id=\"o{offset}\" data-s=\"{}\"{}>",
            escape_html(name),
            if *collapsed { " data-c=\"1\"" } else { "" }
        ),
        Some(Section::End { name, .. }) => format!(
            "<div class=\"l se\" id=\"o{offset}\" data-e=\"{}\">",
            escape_html(name)
        ),
    };
    format!(
        "{open}<a class=\"n\" href=\"#o{offset}\"></a><span class=\"t\">{}</span></div>",
        line.html
    )
}

/// How many bytes at the end of `bytes` start a UTF-8 character that is not
/// complete yet (0 when it ends on a character boundary).
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let needed = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

/// What a `\r` left to decide: it is resolved by the next event.
#[derive(Debug, Default)]
enum PendingReturn {
    #[default]
    None,
    /// A bare `\r`: the next printed character (or `\e[K`) starts the line
    /// over; a `\n` keeps the text (`\r\n` is a plain line end).
    Bare,
    /// The line so far is a well-formed section marker: `\e[0K` next makes
    /// it one; anything else leaves the text as plain text.
    Marker(Section),
}

/// A run of text in one style.
#[derive(Debug)]
struct Run {
    style: Style,
    text: String,
}

/// The vte performer: the current line as styled runs, plus the state that
/// outlives a line (the style).
#[derive(Debug, Default)]
struct LineBuilder {
    style: Style,
    runs: Vec<Run>,
    section: Option<Section>,
    pending: PendingReturn,
    /// vte executed the `\n` that ended the current segment.
    newline_seen: bool,
    /// vte called us at all since the line started.
    active: bool,
}

impl LineBuilder {
    fn clear_line(&mut self) {
        self.runs.clear();
        self.section = None;
        self.pending = PendingReturn::None;
        self.active = false;
    }

    fn put_char(&mut self, c: char) {
        match std::mem::take(&mut self.pending) {
            PendingReturn::Bare => self.runs.clear(),
            PendingReturn::Marker(_) | PendingReturn::None => {}
        }
        match self.runs.last_mut() {
            Some(run) if run.style == self.style => run.text.push(c),
            _ => self.runs.push(Run {
                style: self.style,
                text: c.to_string(),
            }),
        }
    }

    /// An event that is neither text nor `\e[0K`: a marker candidate fails
    /// (its text stays), a bare `\r` keeps waiting for text.
    fn other_event(&mut self) {
        if matches!(self.pending, PendingReturn::Marker(_)) {
            self.pending = PendingReturn::None;
        }
    }

    fn carriage_return(&mut self) {
        self.pending = match marker_candidate(&self.runs) {
            Candidate::NotMarker => PendingReturn::Bare,
            // Shown as plain text: the `\r` must not hide a broken marker.
            Candidate::Malformed => PendingReturn::None,
            Candidate::Valid(section) => PendingReturn::Marker(section),
        };
    }

    fn erase_in_line(&mut self) {
        match std::mem::take(&mut self.pending) {
            PendingReturn::Marker(section) => {
                self.runs.clear();
                self.section = Some(section);
            }
            // `\r\e[K` erases the whole line, as on a terminal: even a
            // `\n` right after it leaves an empty line.
            PendingReturn::Bare => self.runs.clear(),
            PendingReturn::None => {}
        }
    }

    fn html(&self) -> String {
        let mut out = String::new();
        for run in &self.runs {
            match run.style.open_tag() {
                Some(tag) => {
                    out.push_str(&tag);
                    escape_masked(&mut out, &run.text);
                    out.push_str("</span>");
                }
                None => escape_masked(&mut out, &run.text),
            }
        }
        out
    }
}

/// Escapes `text`, wrapping each `[MASKED]` the masker wrote.
fn escape_masked(out: &mut String, text: &str) {
    const MASK: &str = "[MASKED]";
    let mut parts = text.split(MASK);
    if let Some(first) = parts.next() {
        escape_into(out, first);
    }
    for part in parts {
        out.push_str("<span class=\"masked\">[MASKED]</span>");
        escape_into(out, part);
    }
}

impl vte::Perform for LineBuilder {
    fn print(&mut self, c: char) {
        self.active = true;
        self.put_char(c);
    }

    fn execute(&mut self, byte: u8) {
        self.active = true;
        match byte {
            b'\n' => {
                self.pending = PendingReturn::None;
                self.newline_seen = true;
            }
            b'\r' => self.carriage_return(),
            b'\t' => self.put_char('\t'),
            _ => self.other_event(),
        }
    }

    fn csi_dispatch(
        &mut self,
        params: &vte::Params,
        intermediates: &[u8],
        _ignore: bool,
        action: char,
    ) {
        self.active = true;
        let private = !intermediates.is_empty();
        match action {
            'K' if !private && params.iter().all(|p| p == [0]) => self.erase_in_line(),
            'm' if !private => {
                let groups: Vec<&[u16]> = params.iter().collect();
                self.style.apply_sgr(&groups);
                self.other_event();
            }
            _ => self.other_event(),
        }
    }

    fn esc_dispatch(&mut self, _intermediates: &[u8], _ignore: bool, _byte: u8) {
        self.active = true;
        self.other_event();
    }

    fn osc_dispatch(&mut self, _params: &[&[u8]], _bell_terminated: bool) {
        self.active = true;
        self.other_event();
    }

    fn hook(&mut self, _params: &vte::Params, _intermediates: &[u8], _ignore: bool, _c: char) {
        self.active = true;
        self.other_event();
    }

    fn put(&mut self, _byte: u8) {
        self.active = true;
    }

    fn unhook(&mut self) {
        self.active = true;
    }
}

/// What the text of a line before a `\r` says about section markers.
#[derive(Debug)]
enum Candidate {
    NotMarker,
    Malformed,
    Valid(Section),
}

fn marker_candidate(runs: &[Run]) -> Candidate {
    let mut text = String::new();
    for run in runs {
        text.push_str(&run.text);
        if text.len() > MAX_MARKER_LEN {
            break;
        }
    }
    if !(text.starts_with("section_start:") || text.starts_with("section_end:")) {
        return Candidate::NotMarker;
    }
    if text.len() > MAX_MARKER_LEN {
        return Candidate::Malformed;
    }
    match parse_marker(&text) {
        Some(section) => Candidate::Valid(section),
        None => Candidate::Malformed,
    }
}

/// Parses `section_start:TS:NAME[OPTIONS]` or `section_end:TS:NAME` (the
/// whole text, nothing after it).
fn parse_marker(text: &str) -> Option<Section> {
    let (start, rest) = match text.strip_prefix("section_start:") {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix("section_end:")?),
    };
    let (ts, rest) = rest.split_once(':')?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at: u64 = ts.parse().ok()?;
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .unwrap_or(rest.len());
    let (name, options) = rest.split_at(name_len);
    if name.is_empty() {
        return None;
    }
    let name = name.to_owned();
    if !start {
        return options.is_empty().then_some(Section::End { name, at });
    }
    let collapsed = if options.is_empty() {
        false
    } else {
        let inner = options.strip_prefix('[')?.strip_suffix(']')?;
        if inner.contains(['[', ']']) {
            return None;
        }
        inner
            .split(',')
            .any(|option| option.trim() == "collapsed=true")
    };
    Some(Section::Start {
        name,
        collapsed,
        at,
    })
}
