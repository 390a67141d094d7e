//! The pipeline graph as SVG: stages as columns, each job a box with its
//! status, duration and agent, and `needs:` as orthogonal edges routed in
//! the gaps between columns and rows so that no edge crosses a job box.
//! Pure: the layout is a function of the jobs, covered by golden tests.
//!
//! `layout` computes the geometry, this file only writes it out. Styling is
//! left to the page's CSS (by class and `data-status`), so the markup holds
//! no colours and no scripts.

mod layout;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use self::layout::{layout, BOX_H, BOX_W, HEADER_H};
use super::ansi::escape_html;

/// Longest job name, detail and stage name shown (in characters) before
/// they are cut with `…`; the full name is in the box's `<title>`.
const NAME_CHARS: usize = 21;
const DETAIL_CHARS: usize = 26;
const STAGE_CHARS: usize = 28;

/// A job as the graph needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphJob {
    pub id: u64,
    pub name: String,
    pub stage: String,
    /// The stage's position in the pipeline's `stages:` (the column).
    pub stage_index: usize,
    /// Names of the jobs it `needs:`; `None`: it waits for earlier stages.
    pub needs: Option<Vec<String>>,
    /// `JobStatus::as_str()`: the box's `data-status` and CSS class.
    pub status: String,
    /// A short second line: duration and agent, e.g. `12s · eagle-1`.
    pub detail: String,
}

/// Renders the graph of `jobs` as one `<svg>` element. Every job is
/// `<a href="/jobs/{id}"><g class="job" id="job-{id}" data-status="{status}">…</g></a>`
/// with `<text class="name">`, `<text class="detail">` and a status icon
/// `<circle class="dot">`; stage headers are `<text class="stage">`; edges
/// are `<path class="edge" data-from="{id}" data-to="{id}">`.
pub fn render_svg(jobs: &[GraphJob]) -> String {
    let layout = layout(jobs);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph\" role=\"img\" \
         aria-label=\"Pipeline graph\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\">",
        w = layout.width,
        h = layout.height
    );
    for stage in &layout.stages {
        let _ = write!(
            svg,
            "<text class=\"stage\" x=\"{}\" y=\"{}\">{}</text>",
            stage.x,
            HEADER_H - 10,
            escape_html(&cut(&stage.name, STAGE_CHARS))
        );
    }
    for edge in &layout.edges {
        let mut d = String::new();
        for (i, (x, y)) in edge.points.iter().enumerate() {
            let _ = write!(d, "{}{x} {y}", if i == 0 { "M" } else { " L" });
        }
        let _ = write!(
            svg,
            "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"{d}\"/>",
            edge.from, edge.to
        );
    }
    for job_box in &layout.boxes {
        let Some(job) = jobs.get(job_box.job) else {
            continue;
        };
        let (x, y) = (job_box.x, job_box.y);
        let name = escape_html(&job.name);
        let status = escape_html(&job.status);
        let _ = write!(
            svg,
            "<a href=\"/jobs/{id}\"><g class=\"job\" id=\"job-{id}\" data-status=\"{status}\">\
             <title>{name}: {status}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\"/>\
             <circle class=\"dot\" cx=\"{cx}\" cy=\"{cy}\" r=\"5\"/>\
             <text class=\"name\" x=\"{tx}\" y=\"{ny}\">{short}</text>\
             <text class=\"detail\" x=\"{tx}\" y=\"{dy}\">{detail}</text></g></a>",
            id = job.id,
            cx = x + 16,
            cy = y + BOX_H / 2,
            tx = x + 30,
            ny = y + 19,
            dy = y + 36,
            short = escape_html(&cut(&job.name, NAME_CHARS)),
            detail = escape_html(&cut(&job.detail, DETAIL_CHARS)),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `text` cut to at most `max` characters, the last one `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}
