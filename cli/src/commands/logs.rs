//! `osprey logs JOB_ID [-f]` and `osprey logs --pipeline ID [-f]`.
//!
//! Log bytes are written to stdout as stored: no decoding or re-encoding, so
//! binary output and invalid UTF-8 survive. For a pipeline each line gets its
//! job's name as prefix; a partial line is held until its newline (or the end
//! of its stream) so lines of different jobs never interleave mid-line.

use crate::args::LogsArgs;
use crate::client::Client;
use anyhow::Context as _;
use bytes::Bytes;
use osprey_shared::api::JobView;
use std::process::ExitCode;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub async fn run(client: &Client, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = tokio::io::stdout();
    match (args.pipeline, args.job_id) {
        (Some(pipeline_id), _) => {
            let pipeline = client.pipeline(pipeline_id).await?;
            if args.follow {
                follow_pipeline(client, &pipeline.jobs, &mut stdout).await
            } else {
                print_pipeline(client, &pipeline.jobs, &mut stdout).await
            }
        }
        (None, Some(job_id)) => {
            let mut response = client.job_log(job_id, args.follow).await?;
            while let Some(chunk) = response
                .chunk()
                .await
                .with_context(|| format!("log of job {job_id} broke off"))?
            {
                stdout.write_all(&chunk).await?;
                stdout.flush().await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, None) => anyhow::bail!("give a job id or --pipeline ID"),
    }
}

/// Each job's whole log, in job order, prefixed.
async fn print_pipeline(
    client: &Client,
    jobs: &[JobView],
    out: &mut (impl AsyncWrite + Unpin),
) -> anyhow::Result<ExitCode> {
    for job in jobs {
        let response = client.job_log(job.id.0, false).await?;
        let body = response
            .bytes()
            .await
            .with_context(|| format!("cannot read the log of job {}", job.name))?;
        let mut lines = PrefixedLines::new(&job.name);
        out.write_all(&lines.push(&body)).await?;
        out.write_all(&lines.finish()).await?;
    }
    out.flush().await?;
    Ok(ExitCode::SUCCESS)
}

/// What a per-job streaming task reports.
enum Event {
    Chunk(usize, Bytes),
    End(usize),
    Failed(usize, anyhow::Error),
}

/// One streaming request per job, all started at once; lines are printed in
/// the order they arrive.
async fn follow_pipeline(
    client: &Client,
    jobs: &[JobView],
    out: &mut (impl AsyncWrite + Unpin),
) -> anyhow::Result<ExitCode> {
    let (sender, mut receiver) = mpsc::channel::<Event>(64);
    let mut streams = tokio::task::JoinSet::new();
    for (index, job) in jobs.iter().enumerate() {
        let client = client.clone();
        let sender = sender.clone();
        let job_id = job.id.0;
        // Ends with its log's body; aborted with the JoinSet if we return early.
        streams.spawn(async move {
            let event = match stream_job(&client, index, job_id, &sender).await {
                Ok(()) => Event::End(index),
                Err(error) => Event::Failed(index, error),
            };
            let _ = sender.send(event).await;
        });
    }
    drop(sender);

    let mut lines: Vec<PrefixedLines> = jobs
        .iter()
        .map(|job| PrefixedLines::new(&job.name))
        .collect();
    let mut failed = false;
    while let Some(event) = receiver.recv().await {
        let text = match event {
            Event::Chunk(index, chunk) => lines[index].push(&chunk),
            Event::End(index) => lines[index].finish(),
            Event::Failed(index, error) => {
                failed = true;
                eprintln!("error: log of job {}: {error:#}", jobs[index].name);
                lines[index].finish()
            }
        };
        if !text.is_empty() {
            out.write_all(&text).await?;
            out.flush().await?;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn stream_job(
    client: &Client,
    index: usize,
    job_id: u64,
    sender: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let mut response = client.job_log(job_id, true).await?;
    while let Some(chunk) = response.chunk().await.context("log stream broke off")? {
        if sender.send(Event::Chunk(index, chunk)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Splits one job's byte stream into `[name] line\n` records.
struct PrefixedLines {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl PrefixedLines {
    fn new(name: &str) -> Self {
        Self {
            prefix: format!("[{name}] ").into_bytes(),
            partial: Vec::new(),
        }
    }

    /// Complete lines of `chunk` (with any held partial line), prefixed.
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
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
    fn finish(&mut self) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.clone();
        out.append(&mut self.partial);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
