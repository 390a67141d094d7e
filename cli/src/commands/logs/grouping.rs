//! How `logs --pipeline ID -f` orders what it prints, with no I/O: each
//! job's lines stay together, jobs in the order they started. The first
//! started job is shown live; the lines of jobs started after it are held
//! until every job before them has finished, then flushed at once. Nothing
//! is dropped and the live job's lines are never delayed.
//!
//! A job that waits for an agent has not started: its `pending:` line is
//! printed at once while no job is shown live (it explains the silence),
//! else held with the job's lines.

use osprey_shared::api::JobView;
use osprey_shared::JobStatus;
use std::collections::VecDeque;

/// Where a job is in the output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started: only `pending:` lines, held while another job is live.
    Waiting,
    /// In the start order; shown live when first in it.
    Started,
    /// Its stream ended; still in the order until its lines are shown.
    Finished,
}

struct JobLines {
    lines: PrefixedLines,
    /// Bytes not printed yet.
    held: Vec<u8>,
    phase: Phase,
}

/// Turns per-job events into the bytes to print now.
pub(super) struct Groups {
    jobs: Vec<JobLines>,
    /// Started jobs whose lines are not all printed, in start order; the
    /// first is the live one.
    order: VecDeque<usize>,
}

impl Groups {
    /// One group per job name, in the pipeline's job order (the indices of
    /// the other methods).
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            jobs: names
                .into_iter()
                .map(|name| JobLines {
                    lines: PrefixedLines::new(name),
                    held: Vec::new(),
                    phase: Phase::Waiting,
                })
                .collect(),
            order: VecDeque::new(),
        }
    }

    /// The job waits for an agent, for `reason`.
    pub(super) fn pending(&mut self, index: usize, reason: &str) -> Vec<u8> {
        let line = self.jobs[index]
            .lines
            .record(format!("pending: {reason}").as_bytes());
        match self.jobs[index].phase {
            Phase::Waiting if self.order.is_empty() => line,
            Phase::Waiting => {
                self.jobs[index].held.extend_from_slice(&line);
                Vec::new()
            }
            // Waits again (its agent was lost): a line of its own log.
            Phase::Started => self.emit(index, line),
            Phase::Finished => Vec::new(),
        }
    }

    /// The job is running (its first bytes, or the pipeline says so).
    pub(super) fn start(&mut self, index: usize) -> Vec<u8> {
        if self.jobs[index].phase != Phase::Waiting {
            return Vec::new();
        }
        self.jobs[index].phase = Phase::Started;
        self.order.push_back(index);
        if self.order.len() == 1 {
            std::mem::take(&mut self.jobs[index].held)
        } else {
            Vec::new()
        }
    }

    /// Bytes of the job's log.
    pub(super) fn chunk(&mut self, index: usize, chunk: &[u8]) -> Vec<u8> {
        let mut out = self.start(index);
        let lines = self.jobs[index].lines.push(chunk);
        out.extend(self.emit(index, lines));
        out
    }

    /// The job's log ended (or broke off): its partial line is terminated,
    /// and if it was live, the jobs after it are flushed up to the next one
    /// still running.
    pub(super) fn end(&mut self, index: usize) -> Vec<u8> {
        if self.jobs[index].phase == Phase::Finished {
            return Vec::new();
        }
        let mut out = self.start(index);
        let rest = self.jobs[index].lines.finish();
        out.extend(self.emit(index, rest));
        self.jobs[index].phase = Phase::Finished;
        if self.order.front() == Some(&index) {
            self.order.pop_front();
            out.extend(self.advance());
        }
        out
    }

    /// Shows `bytes` now if the job is live, else holds them.
    fn emit(&mut self, index: usize, bytes: Vec<u8>) -> Vec<u8> {
        if self.order.front() == Some(&index) {
            bytes
        } else {
            self.jobs[index].held.extend_from_slice(&bytes);
            Vec::new()
        }
    }

    /// After the live job is gone: flushes the next jobs in start order,
    /// stopping at the first still running (the new live one). With none
    /// left, the held `pending:` lines of waiting jobs are due.
    fn advance(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(&next) = self.order.front() {
            out.append(&mut self.jobs[next].held);
            if self.jobs[next].phase == Phase::Started {
                return out;
            }
            self.order.pop_front();
        }
        for job in &mut self.jobs {
            if job.phase == Phase::Waiting {
                out.append(&mut job.held);
            }
        }
        out
    }
}

/// What changed in a job between two looks at its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// Now pending (or pending for another reason).
    Pending(usize, String),
    Started(usize),
}

/// Compares each look at the pipeline's jobs with the one before.
pub(super) struct Watch {
    /// Per job: the pending reason last reported, if it is pending.
    pending: Vec<Option<String>>,
    started: Vec<bool>,
}

/// The `pending:` text of a job the coordinator gives no reason for: some
/// agent could take it, all are busy.
const BUSY: &str = "waiting for a free agent";

impl Watch {
    pub(super) fn new(jobs: usize) -> Self {
        Self {
            pending: vec![None; jobs],
            started: vec![false; jobs],
        }
    }

    /// The changes since the last look; `jobs` is matched to the first
    /// look's by id (jobs it did not have are ignored). Jobs that started are
    /// given in the order they started.
    pub(super) fn look(&mut self, first: &[JobView], jobs: &[JobView]) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut started = Vec::new();
        for job in jobs {
            let Some(index) = first.iter().position(|known| known.id == job.id) else {
                continue;
            };
            if job.status == JobStatus::Pending {
                let reason = job.pending_reason.as_deref().unwrap_or(BUSY);
                if self.pending[index].as_deref() != Some(reason) {
                    self.pending[index] = Some(reason.to_owned());
                    changes.push(Change::Pending(index, reason.to_owned()));
                }
                continue;
            }
            self.pending[index] = None;
            if job.status == JobStatus::Running && !self.started[index] {
                self.started[index] = true;
                started.push((job.started_at.clone(), index));
            }
        }
        // RFC 3339 times in one format sort as text.
        started.sort();
        changes.extend(started.into_iter().map(|(_, index)| Change::Started(index)));
        changes
    }
}

/// Splits one job's byte stream into `[name] line\n` records.
pub(super) struct PrefixedLines {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl PrefixedLines {
    pub(super) fn new(name: &str) -> Self {
        Self {
            prefix: format!("[{name}] ").into_bytes(),
            partial: Vec::new(),
        }
    }

    /// Complete lines of `chunk` (with any held partial line), prefixed.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&byte| byte == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.partial);
            out.extend_from_slice(&rest[..=newline]);
            rest = &rest[newline + 1..];
        }
        self.partial.extend_from_slice(rest);
        out
    }

    /// The held partial line, terminated, if any.
    pub(super) fn finish(&mut self) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.clone();
        out.append(&mut self.partial);
        out.push(b'\n');
        out
    }

    /// One whole line of our own (not of the log), prefixed.
    fn record(&self, text: &[u8]) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.extend_from_slice(text);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let mut lines = PrefixedLines::new("build");
        assert_eq!(lines.push(b"one\ntw"), b"[build] one\n");
        assert_eq!(lines.push(b"o"), b"");
        assert_eq!(
            lines.push(b"\nthree\n\xff"),
            b"[build] two\n[build] three\n"
        );
        assert_eq!(lines.finish(), b"[build] \xff\n");
        assert_eq!(lines.finish(), b"");
    }

    #[test]
    fn parallel_jobs_come_out_in_blocks_in_start_order() {
        let mut groups = Groups::new(["a", "b", "c"]);
        // b starts first: live at once.
        assert_eq!(text(groups.chunk(1, b"b1\n")), "[b] b1\n");
        // c, then a start while b is live: held.
        assert_eq!(text(groups.chunk(2, b"c1\n")), "");
        assert_eq!(text(groups.chunk(0, b"a1\npart")), "");
        assert_eq!(text(groups.chunk(1, b"b2\n")), "[b] b2\n");
        assert_eq!(text(groups.chunk(2, b"c2\n")), "");
        // b ends: c (started next) is flushed and becomes live; a waits.
        assert_eq!(text(groups.end(1)), "[c] c1\n[c] c2\n");
        assert_eq!(text(groups.chunk(2, b"c3\n")), "[c] c3\n");
        assert_eq!(text(groups.chunk(0, b"ial\n")), "");
        // a finishes before c: its lines wait for c's end.
        assert_eq!(text(groups.end(0)), "");
        assert_eq!(text(groups.end(2)), "[a] a1\n[a] partial\n");
        assert_eq!(text(groups.end(2)), "");
    }

    #[test]
    fn a_finished_job_behind_the_live_one_is_flushed_through() {
        let mut groups = Groups::new(["a", "b", "c"]);
        groups.chunk(0, b"a\n");
        groups.chunk(1, b"b\n");
        groups.end(1);
        groups.chunk(2, b"c\n");
        // a ends: b is flushed and done, c is flushed and live.
        assert_eq!(text(groups.end(0)), "[b] b\n[c] c\n");
        assert_eq!(text(groups.chunk(2, b"more\n")), "[c] more\n");
    }

    #[test]
    fn pending_lines_show_at_once_while_nothing_is_live() {
        let mut groups = Groups::new(["build", "deploy"]);
        assert_eq!(
            text(groups.pending(0, "no connected agent has tags [docker]")),
            "[build] pending: no connected agent has tags [docker]\n"
        );
        assert_eq!(text(groups.start(1)), "");
        // deploy is live now: build's news waits behind it.
        assert_eq!(text(groups.pending(0, "waiting for a free agent")), "");
        assert_eq!(text(groups.chunk(1, b"d\n")), "[deploy] d\n");
        // deploy ends with build still waiting: build's held line is due.
        assert_eq!(
            text(groups.end(1)),
            "[build] pending: waiting for a free agent\n"
        );
        // build starts: nothing is held any more.
        assert_eq!(text(groups.chunk(0, b"b\n")), "[build] b\n");
    }

    #[test]
    fn a_job_started_after_pending_keeps_its_held_line_first() {
        let mut groups = Groups::new(["a", "b"]);
        groups.chunk(0, b"a\n");
        assert_eq!(text(groups.pending(1, "busy")), "");
        assert_eq!(text(groups.chunk(1, b"b\n")), "");
        assert_eq!(text(groups.end(0)), "[b] pending: busy\n[b] b\n");
    }

    #[test]
    fn a_job_ending_without_starting_still_prints_its_lines() {
        let mut groups = Groups::new(["a", "b"]);
        groups.chunk(0, b"a\n");
        groups.pending(1, "busy");
        // Canceled while pending: its stream ends with nothing.
        assert_eq!(text(groups.end(1)), "");
        assert_eq!(text(groups.end(0)), "[b] pending: busy\n");
    }

    fn job(id: u64, status: JobStatus, reason: Option<&str>, started: Option<&str>) -> JobView {
        JobView {
            id: osprey_shared::JobId(id),
            name: format!("job{id}"),
            stage: "test".into(),
            status,
            allow_failure: false,
            when: "on_success".into(),
            agent: None,
            started_at: started.map(str::to_owned),
            finished_at: None,
            exit_code: None,
            failure_reason: None,
            pending_reason: reason.map(str::to_owned),
            attempt: 1,
            coverage: None,
            scheduled_at: None,
        }
    }

    #[test]
    fn watch_reports_each_pending_reason_once_and_starts_in_time_order() {
        let first = vec![
            job(1, JobStatus::Pending, Some("no agent"), None),
            job(2, JobStatus::Created, None, None),
            job(3, JobStatus::Pending, None, None),
        ];
        let mut watch = Watch::new(first.len());
        assert_eq!(
            watch.look(&first, &first),
            vec![
                Change::Pending(0, "no agent".into()),
                Change::Pending(2, BUSY.into())
            ]
        );
        assert_eq!(watch.look(&first, &first), vec![]);
        let later = vec![
            job(
                3,
                JobStatus::Running,
                None,
                Some("2026-01-01T00:00:02.000Z"),
            ),
            job(1, JobStatus::Pending, Some("other"), None),
            job(
                2,
                JobStatus::Running,
                None,
                Some("2026-01-01T00:00:01.000Z"),
            ),
            job(9, JobStatus::Pending, Some("unknown job"), None),
        ];
        assert_eq!(
            watch.look(&first, &later),
            vec![
                Change::Pending(0, "other".into()),
                Change::Started(1),
                Change::Started(2)
            ]
        );
        assert_eq!(watch.look(&first, &later), vec![]);
    }
}
