//! A job log as HTML: a stateful ANSI renderer (vte) that keeps the style
//! across chunks and lines, understands GitLab's collapsible sections and
//! handles `\r` progress lines. Pure: bytes in, lines out.

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
#[derive(Debug)]
pub struct LogRenderer {}

impl LogRenderer {
    /// A renderer for the log from byte `offset` (0 for the start).
    pub fn new(offset: u64) -> Self {
        let _ = offset;
        todo!("helper: web/ansi.rs")
    }

    /// Feeds `bytes`; returns the lines they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<RenderedLine> {
        let _ = bytes;
        todo!("helper: web/ansi.rs")
    }

    /// The partial last line, if any, rendered as it stands (the log ended
    /// without a newline).
    pub fn finish(&mut self) -> Option<RenderedLine> {
        todo!("helper: web/ansi.rs")
    }

    /// Offset just past the last complete line returned so far.
    pub fn offset(&self) -> u64 {
        todo!("helper: web/ansi.rs")
    }
}

/// The markup of one line, the same on the page and in the live stream:
/// `<div class="l" id="o{offset}" …><a class="n" href="#o{offset}"></a><span class="t">…</span></div>`
/// with `data-s="NAME"` (and class `sh`, plus `data-c="1"` when collapsed)
/// on a section start and `data-e="NAME"` on a section end.
pub fn line_html(line: &RenderedLine) -> String {
    let _ = line;
    todo!("helper: web/ansi.rs")
}
