//! `osprey logs JOB_ID [-f]` and `osprey logs --pipeline ID [-f]`.
//!
//! Log bytes are written to stdout as stored: no decoding or re-encoding, so
//! binary output and invalid UTF-8 survive. For a pipeline each line gets its
//! job's name as prefix; a partial line is held until its newline (or the end
//! of its stream). Following a pipeline, each job's lines come out together,
//! jobs in the order they started, and a job waiting for an agent says why
//! ([`grouping`]).

use crate::args::LogsArgs;
use crate::client::Client;
use anyhow::Context as _;
use bytes::Bytes;
use osprey_shared::api::JobView;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

mod grouping;
use grouping::{Change, Groups, PrefixedLines, Watch};

pub async fn run(client: &Client, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = tokio::io::stdout();
    match (args.pipeline, args.job_id) {
        (Some(pipeline_id), _) => {
            let pipeline = client.pipeline(pipeline_id).await?;
            if args.follow {
                follow_pipeline(client, pipeline_id, &pipeline.jobs, &mut stdout).await
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

/// What the streaming and watching tasks report.
enum Event {
    Chunk(usize, Bytes),
    End(usize),
    Failed(usize, anyhow::Error),
    Changed(Change),
}

/// How often the pipeline is looked at for jobs waiting for an agent.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// One streaming request per job, all started at once, and a watch of the
/// pipeline for pending jobs; what they report is ordered by [`Groups`].
async fn follow_pipeline(
    client: &Client,
    pipeline_id: u64,
    jobs: &[JobView],
    out: &mut (impl AsyncWrite + Unpin),
) -> anyhow::Result<ExitCode> {
    let (sender, mut receiver) = mpsc::channel::<Event>(64);
    // Every task is aborted when this set drops, on return.
    let mut tasks = tokio::task::JoinSet::new();
    for (index, job) in jobs.iter().enumerate() {
        let client = client.clone();
        let sender = sender.clone();
        let job_id = job.id.0;
        // Ends with its log's body.
        tasks.spawn(async move {
            let event = match stream_job(&client, index, job_id, &sender).await {
                Ok(()) => Event::End(index),
                Err(error) => Event::Failed(index, error),
            };
            let _ = sender.send(event).await;
        });
    }
    let mut groups = Groups::new(jobs.iter().map(|job| job.name.as_str()));
    let mut watch = Watch::new(jobs.len());
    // The first look is the pipeline just fetched: pending jobs show at once.
    let mut first_look = Vec::new();
    for change in watch.look(jobs, jobs) {
        first_look.extend(apply(&mut groups, change));
    }
    if !first_look.is_empty() {
        out.write_all(&first_look).await?;
        out.flush().await?;
    }
    {
        let client = client.clone();
        let first = jobs.to_vec();
        // Runs until the streams are done and the set drops.
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                // A failed look is retried at the next tick; the streams
                // report a coordinator that is gone.
                let Ok(pipeline) = client.pipeline(pipeline_id).await else {
                    continue;
                };
                for change in watch.look(&first, &pipeline.jobs) {
                    if sender.send(Event::Changed(change)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    let mut streams_left = jobs.len();
    let mut failed = false;
    while streams_left > 0 {
        let Some(event) = receiver.recv().await else {
            break;
        };
        let text = match event {
            Event::Chunk(index, chunk) => groups.chunk(index, &chunk),
            Event::End(index) => {
                streams_left -= 1;
                groups.end(index)
            }
            Event::Failed(index, error) => {
                streams_left -= 1;
                failed = true;
                eprintln!("error: log of job {}: {error:#}", jobs[index].name);
                groups.end(index)
            }
            Event::Changed(change) => apply(&mut groups, change),
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

fn apply(groups: &mut Groups, change: Change) -> Vec<u8> {
    match change {
        Change::Pending(index, reason) => groups.pending(index, &reason),
        Change::Started(index) => groups.start(index),
    }
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
