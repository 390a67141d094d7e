//! E-mail notifications: [`render`] turns a [`Report`] into a subject and
//! plain-text and HTML bodies (pure, unit tested), [`Mailer`] sends them over
//! SMTP with lettre. Which reports become mails, retries and the outbox are
//! the delivery worker's.

use super::{DeliveryError, JobFacts, Report};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use osprey_shared::api::NotifyEvent;
use osprey_shared::JobStatus;
use std::fmt::Write as _;
use std::time::Duration;

/// How long one SMTP exchange (connect, TLS, each command) may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Sends notification mails through one SMTP server (a pooled connection).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport's URL may hold a password: show the sender only.
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    /// A mailer for `smtp_url` in lettre's form (`smtps://user:pass@host:465`,
    /// `smtp://host:587?tls=required`, `smtp://host:25`) sending as `from`.
    ///
    /// Must be called inside a tokio runtime: the connection pool spawns its
    /// idle-connection reaper here.
    pub fn new(smtp_url: &str, from: &str) -> Result<Mailer, DeliveryError> {
        // lettre uses the process-wide rustls provider when there is one; the
        // workspace has one provider, ring. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let from: Mailbox = from
            .parse()
            .map_err(|error| DeliveryError::Invalid(format!("sender {from:?}: {error}")))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|error| DeliveryError::Invalid(format!("SMTP URL: {error}")))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mailer { transport, from })
    }

    /// Sends `report` to `to`. The Message-ID is `<{webhook_id}@osprey>`, the
    /// same on every try, so a mail delivered twice is recognisable.
    pub async fn send(&self, to: &str, report: &Report) -> Result<(), DeliveryError> {
        let to: Mailbox = to
            .parse()
            .map_err(|error| DeliveryError::Invalid(format!("recipient {to:?}: {error}")))?;
        let rendered = render(report);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@osprey>", report.webhook_id)))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|error| DeliveryError::Invalid(format!("building the mail: {error}")))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(smtp_error)
    }
}

/// A refusal the server answered with is `Refused` (with its SMTP code);
/// anything else (connection, TLS, timeout, a garbled answer) is
/// `Unreachable`, worth another try.
fn smtp_error(error: SmtpError) -> DeliveryError {
    if error.is_permanent() || error.is_transient() {
        DeliveryError::Refused {
            status: error
                .status()
                .and_then(|code| code.to_string().parse().ok()),
            detail: error.to_string(),
        }
    } else {
        DeliveryError::Unreachable(error.to_string())
    }
}

/// Subject, plain text and HTML of `report`'s mail.
pub fn render(report: &Report) -> Rendered {
    let facts = Facts::of(report);
    Rendered {
        subject: format!("[{}] {}", report.project.name, facts.headline),
        text: render_text(report, &facts),
        html: render_html(report, &facts),
    }
}

/// What both bodies say, worked out once.
struct Facts<'a> {
    /// The subject without the project prefix.
    headline: String,
    /// A sentence under the headline, for events that need one.
    note: Option<&'static str>,
    /// `(label, value)` rows: project, ref, commit, status...
    rows: Vec<(&'static str, String)>,
    /// Failed jobs with their cleaned log tails.
    failed: Vec<(&'a JobFacts, Option<String>)>,
}

impl<'a> Facts<'a> {
    fn of(report: &'a Report) -> Facts<'a> {
        let pipeline = &report.pipeline;
        let sha = short_sha(&pipeline.sha);
        let on = format!("on {} ({sha})", pipeline.git_ref);
        let number = pipeline.id;
        let deployment = report.deployment.as_ref();
        let environment = deployment.map_or("an environment", |d| d.environment.as_str());
        let headline = match report.event {
            NotifyEvent::PipelineFailed => format!("Pipeline #{number} failed {on}"),
            NotifyEvent::PipelineFixed => format!("Pipeline #{number} fixed {on}"),
            NotifyEvent::PipelineSuccess => format!("Pipeline #{number} succeeded {on}"),
            NotifyEvent::DeploymentSuccess => format!("Deployed {sha} to {environment}"),
            NotifyEvent::DeploymentFailed => {
                format!("Deployment to {environment} failed ({sha})")
            }
            NotifyEvent::ManualWaiting => match waiting_job(report) {
                Some(job) => format!("Pipeline #{number}: job {} waits to be played", job.name),
                None => format!("Pipeline #{number}: a job waits to be played"),
            },
            NotifyEvent::Test => "Test notification from Osprey".to_owned(),
        };

        let mut rows = vec![
            ("Project", report.project.name.clone()),
            ("Ref", pipeline.git_ref.clone()),
        ];
        let commit = match &pipeline.commit_title {
            Some(title) => format!("{sha} {title}"),
            None => sha.to_owned(),
        };
        rows.push(("Commit", commit));
        rows.push(("Pipeline", format!("#{number} ({})", pipeline.status)));
        if let Some(seconds) = pipeline.duration_seconds {
            rows.push(("Duration", human_duration(seconds)));
        }
        if let Some(deployment) = deployment {
            rows.push(("Environment", deployment.environment.clone()));
            rows.push((
                "Deployment",
                format!("#{} ({})", deployment.id, deployment.status),
            ));
            rows.push((
                "Job",
                format!("{} ({})", deployment.job_name, deployment.job_url),
            ));
            if let Some(url) = &deployment.environment_url {
                rows.push(("Environment URL", url.clone()));
            }
            if let Some(of) = deployment.rollback_of {
                rows.push(("Rollback of", format!("deployment #{of}")));
            }
        }
        if report.event == NotifyEvent::ManualWaiting {
            if let Some(job) = waiting_job(report) {
                rows.push(("Waiting job", format!("{} (stage {})", job.name, job.stage)));
            }
        }

        let failed = report
            .jobs
            .iter()
            .filter(|job| job.status == JobStatus::Failed.as_str())
            .map(|job| (job, job.log_tail.as_deref().map(clean_log)))
            .collect();
        let note = match report.event {
            NotifyEvent::Test => Some("This is a test message: this notification rule works."),
            NotifyEvent::ManualWaiting => Some("Play the job to let the pipeline go on."),
            NotifyEvent::PipelineFailed
            | NotifyEvent::PipelineFixed
            | NotifyEvent::PipelineSuccess
            | NotifyEvent::DeploymentSuccess
            | NotifyEvent::DeploymentFailed => None,
        };
        Facts {
            headline,
            note,
            rows,
            failed,
        }
    }
}

/// The job a `manual_waiting` report is about: the first one waiting.
fn waiting_job(report: &Report) -> Option<&JobFacts> {
    report
        .jobs
        .iter()
        .find(|job| job.manual && job.status == JobStatus::Manual.as_str())
        .or_else(|| report.jobs.iter().find(|job| job.manual))
}

/// One line about a failed job: `name (stage test): reason, allowed to fail`.
fn job_line(job: &JobFacts) -> String {
    let mut line = format!("{} (stage {})", job.name, job.stage);
    let mut notes = Vec::new();
    if let Some(reason) = &job.failure_reason {
        notes.push(reason.clone());
    }
    if let Some(seconds) = job.duration_seconds {
        notes.push(human_duration(seconds));
    }
    if job.allow_failure {
        notes.push("allowed to fail".to_owned());
    }
    if !notes.is_empty() {
        let _ = write!(line, ": {}", notes.join(", "));
    }
    line
}

fn render_text(report: &Report, facts: &Facts<'_>) -> String {
    let mut text = format!("{}\n\n", facts.headline);
    if let Some(note) = facts.note {
        let _ = write!(text, "{note}\n\n");
    }
    let width = facts.rows.iter().map(|(label, _)| label.len()).max();
    for (label, value) in &facts.rows {
        let pad = width.unwrap_or(0) - label.len();
        let _ = writeln!(text, "{label}:{:pad$} {value}", "");
    }
    if !facts.failed.is_empty() {
        text.push_str("\nFailed jobs:\n");
        for (job, log) in &facts.failed {
            let _ = writeln!(text, "\n* {}", job_line(job));
            if let Some(log) = log {
                for line in log.lines() {
                    let _ = writeln!(text, "    {line}");
                }
            }
        }
    }
    let _ = write!(text, "\n{}\n", report.pipeline.url);
    text
}

fn render_html(report: &Report, facts: &Facts<'_>) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family: sans-serif\">\n",
    );
    let _ = writeln!(
        html,
        "<h2>{}</h2>",
        crate::web::escape_html(&facts.headline)
    );
    if let Some(note) = facts.note {
        let _ = writeln!(html, "<p>{}</p>", crate::web::escape_html(note));
    }
    html.push_str("<table>\n");
    for (label, value) in &facts.rows {
        let _ = writeln!(
            html,
            "<tr><th align=\"left\">{label}</th><td>{}</td></tr>",
            crate::web::escape_html(value)
        );
    }
    html.push_str("</table>\n");
    if !facts.failed.is_empty() {
        html.push_str("<h3>Failed jobs</h3>\n");
        for (job, log) in &facts.failed {
            let _ = writeln!(
                html,
                "<p><b>{}</b></p>",
                crate::web::escape_html(&job_line(job))
            );
            if let Some(log) = log {
                let _ = writeln!(
                    html,
                    "<pre style=\"background: #f4f4f4; padding: 8px\">{}</pre>",
                    crate::web::escape_html(log)
                );
            }
        }
    }
    let url = crate::web::escape_html(&report.pipeline.url);
    let _ = writeln!(html, "<p><a href=\"{url}\">{url}</a></p>\n</body></html>");
    html
}

/// The first 8 characters of a commit sha.
pub(super) fn short_sha(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// `45s`, `1m 05s`, `2h 03m 07s` (rounded to the second).
pub(super) fn human_duration(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m {seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// A log tail as a mail shows it: no ANSI escape sequences, and of a line a
/// progress bar rewrote with `\r` only what the terminal showed last.
fn clean_log(log: &str) -> String {
    let plain = strip_ansi(log);
    let mut out = String::with_capacity(plain.len());
    for line in plain.split('\n') {
        let shown = line
            .split('\r')
            .rev()
            .find(|part| !part.is_empty())
            .unwrap_or("");
        out.extend(shown.chars().filter(|c| *c == '\t' || !c.is_control()));
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// Removes CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL` or `ESC \`) and
/// two-character escape sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}
