//! How pipelines and jobs look to a person: the `pipeline show` table, the
//! one-line summary and the status-change lines of `pipeline run --wait`.

use osprey_shared::api::{JobView, PipelineView};
use std::sync::OnceLock;
use time::{OffsetDateTime, UtcOffset};

static LOCAL_OFFSET: OnceLock<UtcOffset> = OnceLock::new();

/// Reads the local UTC offset. Must run before any thread is started: the
/// `time` crate refuses to read it from a multi-threaded process on Unix.
pub fn init_local_offset() {
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

/// `HH:MM:SS` of now, in local time when known.
pub fn clock() -> String {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(UtcOffset::UTC);
    let now = OffsetDateTime::now_utc().to_offset(offset);
    format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second())
}

/// `pipeline 12 created (running) for master at 1a2b3c4d: 4 jobs`.
pub fn summary(pipeline: &PipelineView) -> String {
    format!(
        "pipeline {} {} for {} at {}: {} jobs",
        pipeline.id,
        pipeline.status,
        pipeline.git_ref,
        short_sha(&pipeline.sha),
        pipeline.jobs.len()
    )
}

/// `[12:00:01] build/compile  running  (agent-1)`.
pub fn job_change(job: &JobView) -> String {
    let mut line = format!("[{}] {}/{}  {}", clock(), job.stage, job.name, job.status);
    if let Some(agent) = &job.agent {
        line.push_str(&format!("  ({agent})"));
    }
    if let Some(code) = job.exit_code {
        line.push_str(&format!("  exit {code}"));
    }
    if let Some(reason) = reason(job) {
        line.push_str(&format!("  {reason}"));
    }
    line
}

/// The pipeline header and a table of its jobs.
pub fn table(pipeline: &PipelineView) -> String {
    let mut rows = vec![[
        "JOB".to_owned(),
        "STAGE".to_owned(),
        "STATUS".to_owned(),
        "AGENT".to_owned(),
        "EXIT".to_owned(),
        "REASON".to_owned(),
    ]];
    for job in &pipeline.jobs {
        let mut status = job.status.to_string();
        if job.allow_failure {
            status.push_str(" (allowed to fail)");
        }
        rows.push([
            format!("{} ({})", job.name, job.id),
            job.stage.clone(),
            status,
            job.agent.clone().unwrap_or_else(|| "-".to_owned()),
            job.exit_code
                .map_or_else(|| "-".to_owned(), |code| code.to_string()),
            reason(job).unwrap_or("-").to_owned(),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = format!(
        "pipeline {}  {}  ref {}  sha {}\n",
        pipeline.id,
        pipeline.status,
        pipeline.git_ref,
        short_sha(&pipeline.sha)
    );
    for row in &rows {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn reason(job: &JobView) -> Option<&str> {
    job.failure_reason
        .as_deref()
        .or(job.pending_reason.as_deref())
}

/// The first 8 characters of a commit id.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// Rows under a header, each column as wide as its widest cell, two spaces
/// apart; the last column is not padded.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            let width = widths.get(index).copied().unwrap_or(0);
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `-` for an absent value.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let rows = vec![
            vec!["1".to_owned(), "running".to_owned(), "main".to_owned()],
            vec!["12".to_owned(), "ok".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            columns(&["ID", "STATUS", "REF"], &rows),
            "ID  STATUS   REF\n1   running  main\n12  ok       -\n"
        );
        assert_eq!(columns(&["ID", "NAME"], &[]), "ID  NAME\n");
    }
}
