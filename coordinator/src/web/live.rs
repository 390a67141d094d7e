//! What a page loads after it is shown: live updates over Server-Sent
//! Events (a pipeline's statuses; a job's log lines, resumed from the last
//! event's offset), earlier parts of a long log, the raw log and the
//! artifacts archive.

use super::ansi::{line_html, LogRenderer};
use super::pages::LOG_TAIL_BYTES;
use super::session::WebCaller;
use super::WebResult;
use crate::core::Core;
use crate::error::CoreResult;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use osprey_shared::api::{JobView, PipelineView, Role};
use osprey_shared::{JobId, PipelineId};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Largest piece of log read at once.
const READ_LIMIT: usize = 1 << 20;
/// How long a stream waits for a change before it looks again (a missed
/// wake-up costs at most this; running durations tick at this pace).
const TICK: Duration = Duration::from_secs(1);

/// Rendered log lines and the byte range they cover.
pub struct Window {
    pub html: String,
    /// Offset of the first line shown.
    pub start: u64,
    /// Offset after the last line shown.
    pub end: u64,
}

/// Reads `[from, to)` of a job's log.
async fn read_range(core: &Core, job: JobId, from: u64, to: u64) -> CoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity((to - from) as usize);
    let mut offset = from;
    while offset < to {
        let limit = READ_LIMIT.min((to - offset) as usize);
        let chunk = core.store().read_log(job, offset, limit).await?;
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        out.extend_from_slice(&chunk);
    }
    out.truncate((to - from) as usize);
    Ok(out)
}

/// Renders the lines of `[from, to)`: a window starting inside a line
/// begins at the next one; the partial last line is shown only when
/// `with_partial` (the log is complete).
pub async fn render_window(
    core: &Core,
    job: JobId,
    from: u64,
    to: u64,
    with_partial: bool,
) -> CoreResult<Window> {
    // One byte before `from` tells whether `from` starts a line.
    let read_from = from.saturating_sub(1);
    let bytes = read_range(core, job, read_from, to).await?;
    let skip = if from == 0 {
        0
    } else {
        match bytes.iter().position(|&byte| byte == b'\n') {
            Some(newline) => newline + 1,
            // One line longer than the window: show it from the middle.
            None => 1.min(bytes.len()),
        }
    };
    let start = read_from + skip as u64;
    let mut renderer = LogRenderer::new(start);
    let mut lines = renderer.push(&bytes[skip..]);
    if with_partial {
        lines.extend(renderer.finish());
    }
    let end = if with_partial { to } else { renderer.offset() };
    Ok(Window {
        html: lines.iter().map(line_html).collect(),
        start,
        end,
    })
}

#[derive(Deserialize)]
pub struct WindowQuery {
    before: u64,
}

/// The lines before `before` (at most [`LOG_TAIL_BYTES`]), for the job
/// page's "show earlier lines"; `X-Log-Start` says where they begin.
pub async fn log_window(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
    Query(query): Query<WindowQuery>,
) -> WebResult<Response> {
    let job = caller.job(&core, JobId(id), Role::Read).await?.0;
    let before = query.before.min(job.log_size.max(0) as u64);
    let window = render_window(
        &core,
        job.id(),
        before.saturating_sub(LOG_TAIL_BYTES),
        before,
        false,
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static("x-log-start"),
                window.start.to_string(),
            ),
        ],
        window.html,
    )
        .into_response())
}

/// What the pipeline page updates: statuses, durations, agents.
fn pipeline_state(view: &PipelineView) -> serde_json::Value {
    json!({
        "status": view.status.as_str(),
        "duration": super::view::PipelineLine::of(view).duration,
        "jobs": view.jobs.iter().map(job_state).collect::<Vec<_>>(),
    })
}

fn job_state(job: &JobView) -> serde_json::Value {
    json!({
        "id": job.id.0,
        "status": job.status.as_str(),
        "duration": super::view::job_duration(job),
        "agent": job.agent,
        "failure_reason": job.failure_reason,
        "pending_reason": job.pending_reason,
    })
}

/// `event: pipeline` with the pipeline's state whenever it changes, then
/// `event: eof` once it is finished.
pub async fn pipeline_events(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
) -> WebResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = PipelineId(id);
    caller.pipeline(&core, id, Role::Read).await?;
    let stream = async_stream::stream! {
        let mut changes = core.subscribe();
        let mut sent = String::new();
        loop {
            changes.borrow_and_update();
            let Ok(view) = core.pipeline_view(id).await else { break };
            let state = pipeline_state(&view).to_string();
            if state != sent {
                yield Ok(Event::default().event("pipeline").data(state.clone()));
                sent = state;
            }
            if view.status.is_finished() {
                yield Ok(Event::default().event("eof").data(""));
                break;
            }
            let _ = tokio::time::timeout(TICK, changes.changed()).await;
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    offset: u64,
}

/// `event: lines` (rendered lines; its `id` is the offset after them, so a
/// reconnecting `EventSource` resumes there), `event: status` when the
/// job's state changes, then `event: eof` once the job is finished and
/// its whole log was sent.
pub async fn log_events(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> WebResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = caller.job(&core, JobId(id), Role::Read).await?.0.id();
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let start = resume.unwrap_or(query.offset);
    let stream = async_stream::stream! {
        let mut changes = core.subscribe();
        let mut renderer = LogRenderer::new(start);
        let mut offset = start;
        let mut sent = String::new();
        loop {
            changes.borrow_and_update();
            let Ok(Some(row)) = core.store().job(job).await else { break };
            let Ok(data) = core.store().read_log(job, offset, READ_LIMIT).await else { break };
            if !data.is_empty() {
                offset += data.len() as u64;
                let html: String = renderer.push(&data).iter().map(line_html).collect();
                if !html.is_empty() {
                    yield Ok(Event::default().event("lines").id(renderer.offset().to_string()).data(html));
                }
                continue;
            }
            let state = job_state(&core.job_view_of(&row)).to_string();
            if state != sent {
                yield Ok(Event::default().event("status").data(state.clone()));
                sent = state;
            }
            if row.status().is_finished() && offset >= row.log_size.max(0) as u64 {
                if let Some(line) = renderer.finish() {
                    yield Ok(Event::default().event("lines").id(offset.to_string()).data(line_html(&line)));
                }
                yield Ok(Event::default().event("eof").data(""));
                break;
            }
            let _ = tokio::time::timeout(TICK, changes.changed()).await;
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The log's bytes as stored (so far, while the job runs).
pub async fn raw_log(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
) -> WebResult<Response> {
    let job = caller.job(&core, JobId(id), Role::Read).await?.0;
    let size = job.log_size.max(0) as u64;
    let id = job.id();
    let body = async_stream::stream! {
        let mut offset = 0;
        while offset < size {
            let limit = READ_LIMIT.min((size - offset) as usize);
            match core.store().read_log(id, offset, limit).await {
                Ok(chunk) if !chunk.is_empty() => {
                    offset += chunk.len() as u64;
                    yield Ok::<_, std::io::Error>(bytes::Bytes::from(chunk));
                }
                Ok(_) => break,
                Err(error) => {
                    yield Err(std::io::Error::other(error.to_string()));
                    break;
                }
            }
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"job-{}.log\"", id.0),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The job's artifacts archive (a tar), as its agent uploaded it.
pub async fn artifacts(
    State(core): State<Core>,
    caller: WebCaller,
    Path(id): Path<u64>,
) -> WebResult<Response> {
    let job = caller.job(&core, JobId(id), Role::Read).await?.0;
    let id = job.id();
    let archive = core.open_archive(job).await?;
    let reader = archive.reader.take(archive.size);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, archive.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"artifacts-job-{}.tar\"", id.0),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}
