//! The pipeline graph as SVG: stages as columns, each job a box with its
//! status, duration and agent, and `needs:` as orthogonal edges routed in
//! the gaps between columns and rows so that no edge crosses a job box.
//! Pure: the layout is a function of the jobs, covered by golden tests.

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
    let _ = jobs;
    todo!("helper: web/graph.rs")
}
