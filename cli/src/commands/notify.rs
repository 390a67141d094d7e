//! `osprey notify add|list|rm|test|log|redeliver`: a project's notification
//! rules and the deliveries made for them. A webhook's signing secret comes
//! from `--secret`, `--secret-file` or `$OSPREY_WEBHOOK_SECRET` and is never
//! printed.

use crate::args::{
    DeliveryArgs, NotifyAddArgs, NotifyCommand, NotifyProjectArgs, NotifyRmArgs, NotifyRuleArgs,
};
use crate::client::Client;
use crate::render::{columns, or_dash, print_json};
use anyhow::Context as _;
use osprey_shared::api::{CreateNotification, DeliveryView, NotificationView, NotifyEvent};
use std::io::Read as _;
use std::process::ExitCode;

/// Where a webhook's secret may come from when no flag gives one.
const SECRET_ENV: &str = "OSPREY_WEBHOOK_SECRET";
/// The longest `LAST` cell of `notify log`, in characters.
const DETAIL_WIDTH: usize = 60;

pub async fn run(client: &Client, command: &NotifyCommand) -> anyhow::Result<ExitCode> {
    match command {
        NotifyCommand::Add(args) => add(client, args).await,
        NotifyCommand::List(args) => list(client, args).await,
        NotifyCommand::Rm(NotifyRmArgs { project, id }) => {
            client.delete(&rule_path(project, *id), &()).await?;
            println!("notification {id} of project {project} removed");
            Ok(ExitCode::SUCCESS)
        }
        NotifyCommand::Test(args) => test(client, args).await,
        NotifyCommand::Log(args) => log(client, args).await,
        NotifyCommand::Redeliver(args) => redeliver(client, args).await,
    }
}

/// `/api/v1/projects/{name}/notifications`.
fn rules_path(project: &str) -> String {
    format!("{}/notifications", super::project::project_path(project))
}

fn rule_path(project: &str, id: i64) -> String {
    format!("{}/{id}", rules_path(project))
}

/// The request `notify add` sends; `secret` is the one [`webhook_secret`]
/// found. Events are sent once each, in a fixed order.
fn create_request(args: &NotifyAddArgs, secret: Option<String>) -> CreateNotification {
    let mut on = args.on.clone();
    on.sort();
    on.dedup();
    CreateNotification {
        email: args.email.clone(),
        webhook: args.webhook.clone(),
        secret,
        on,
        ref_glob: args.ref_glob.clone(),
    }
}

/// The signing secret of a webhook rule: `--secret`, else the contents of
/// `--secret-file` (`-`: standard input; one trailing newline dropped), else
/// `env` (the value of `$OSPREY_WEBHOOK_SECRET`). An email rule has none.
fn webhook_secret(
    args: &NotifyAddArgs,
    env: Option<String>,
    stdin: impl FnOnce() -> std::io::Result<String>,
) -> anyhow::Result<Option<String>> {
    if args.webhook.is_none() {
        return Ok(None);
    }
    let secret = if let Some(secret) = &args.secret {
        secret.0.clone()
    } else if let Some(path) = &args.secret_file {
        let text = if path.as_os_str() == "-" {
            stdin().context("cannot read the secret from standard input")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secret file {}", path.display()))?
        };
        super::var::value_from_input(text)
    } else if let Some(secret) = env {
        secret
    } else {
        return Ok(None);
    };
    if secret.is_empty() {
        anyhow::bail!("the webhook secret is empty");
    }
    Ok(Some(secret))
}

async fn add(client: &Client, args: &NotifyAddArgs) -> anyhow::Result<ExitCode> {
    let secret = webhook_secret(args, std::env::var(SECRET_ENV).ok(), || {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    })?;
    let request = create_request(args, secret);
    let rule: NotificationView = client
        .post_json(&rules_path(&args.project), Some(&request))
        .await?;
    if args.json {
        print_json(&rule)?;
    } else {
        println!(
            "notification {} of project {} added: {}",
            rule.id,
            args.project,
            describe(&rule)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `webhook https://hooks.example.com/ci on pipeline_failed,pipeline_fixed for ref main, signed`.
fn describe(rule: &NotificationView) -> String {
    let mut text = format!("{} {} on {}", rule.kind, rule.target, events(&rule.on));
    if let Some(glob) = &rule.ref_glob {
        text.push_str(&format!(" for ref {glob}"));
    }
    if rule.signed {
        text.push_str(", signed");
    }
    text
}

fn events(events: &[NotifyEvent]) -> String {
    let names: Vec<&str> = events.iter().map(|event| event.as_str()).collect();
    names.join(",")
}

async fn list(client: &Client, args: &NotifyProjectArgs) -> anyhow::Result<ExitCode> {
    let rules: Vec<NotificationView> = client.get_json(&rules_path(&args.project)).await?;
    if args.json {
        print_json(&rules)?;
    } else {
        print!("{}", rules_table(&rules));
    }
    Ok(ExitCode::SUCCESS)
}

fn rules_table(rules: &[NotificationView]) -> String {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|rule| {
            vec![
                rule.id.to_string(),
                rule.kind.clone(),
                rule.target.clone(),
                events(&rule.on),
                or_dash(rule.ref_glob.as_ref()),
                if rule.signed { "yes" } else { "no" }.to_owned(),
                rule.created_at.clone(),
            ]
        })
        .collect();
    columns(
        &["ID", "KIND", "TARGET", "EVENTS", "REF", "SIGNED", "CREATED"],
        &rows,
    )
}

/// Sends a test event; exits 1 when its last attempt failed.
async fn test(client: &Client, args: &NotifyRuleArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/test", rule_path(&args.project, args.id));
    let delivery: DeliveryView = client.post_json(&path, None::<&()>).await?;
    if args.json {
        print_json(&delivery)?;
    } else {
        println!("{}", delivery_line("test delivery", &delivery));
    }
    let failed = delivery.attempts.last().is_some_and(|attempt| !attempt.ok);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `test delivery 12 to https://hooks.example.com/ci: delivered (204 ok)`.
fn delivery_line(what: &str, delivery: &DeliveryView) -> String {
    let mut line = format!(
        "{what} {} to {}: {}",
        delivery.id, delivery.target, delivery.state
    );
    if let Some(last) = last_attempt(delivery) {
        line.push_str(&format!(" ({last})"));
    }
    line
}

/// The last attempt's HTTP status and detail, if one was made.
fn last_attempt(delivery: &DeliveryView) -> Option<String> {
    let attempt = delivery.attempts.last()?;
    Some(match attempt.status {
        Some(status) if attempt.detail.is_empty() => status.to_string(),
        Some(status) => format!("{status} {}", attempt.detail),
        None => attempt.detail.clone(),
    })
}

async fn log(client: &Client, args: &NotifyProjectArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/deliveries", super::project::project_path(&args.project));
    let deliveries: Vec<DeliveryView> = client.get_json(&path).await?;
    if args.json {
        print_json(&deliveries)?;
    } else {
        print!("{}", deliveries_table(&deliveries));
    }
    Ok(ExitCode::SUCCESS)
}

fn deliveries_table(deliveries: &[DeliveryView]) -> String {
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|delivery| {
            vec![
                delivery.id.to_string(),
                delivery.event.to_string(),
                delivery.kind.clone(),
                delivery.target.clone(),
                delivery.state.clone(),
                delivery.attempts.len().to_string(),
                last_attempt(delivery).map_or_else(|| "-".to_owned(), |last| cut(&last)),
                delivery.created_at.clone(),
            ]
        })
        .collect();
    columns(
        &[
            "ID", "EVENT", "KIND", "TARGET", "STATE", "ATTEMPTS", "LAST", "CREATED",
        ],
        &rows,
    )
}

/// One line of at most [`DETAIL_WIDTH`] characters: a receiver's answer
/// may be long or span lines.
fn cut(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= DETAIL_WIDTH && line.len() == text.len() {
        return line.to_owned();
    }
    let kept: String = line.chars().take(DETAIL_WIDTH - 1).collect();
    format!("{kept}…")
}

async fn redeliver(client: &Client, args: &DeliveryArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/deliveries/{}/redeliver", args.id);
    let delivery: DeliveryView = client.post_json(&path, None::<&()>).await?;
    if args.json {
        print_json(&delivery)?;
    } else {
        println!("{}", delivery_line("delivery", &delivery));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Args, Command};
    use clap::Parser;
    use osprey_shared::api::AttemptView;

    fn parse(argv: &[&str]) -> Result<NotifyAddArgs, clap::Error> {
        let mut full = vec!["osprey", "notify", "add", "shop"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full).map(|args| match args.command {
            Command::Notify(NotifyCommand::Add(add)) => add,
            other => panic!("{other:?}"),
        })
    }

    fn no_stdin() -> std::io::Result<String> {
        panic!("stdin must not be read")
    }

    #[test]
    fn events_are_a_comma_separated_list_of_rule_events() {
        let args = parse(&[
            "--email",
            "ops@example.com",
            "--on",
            "pipeline_failed, pipeline_fixed,pipeline_failed",
            "--ref",
            "main",
        ])
        .unwrap();
        let request = create_request(&args, None);
        assert_eq!(
            request.on,
            vec![NotifyEvent::PipelineFailed, NotifyEvent::PipelineFixed]
        );
        assert_eq!(request.email.as_deref(), Some("ops@example.com"));
        assert_eq!(
            (request.webhook, request.ref_glob.as_deref()),
            (None, Some("main"))
        );

        let unknown = parse(&["--email", "a@b", "--on", "pipeline_failed,deploy_done"])
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("unknown event \"deploy_done\""),
            "{unknown}"
        );
        assert!(unknown.contains("pipeline_fixed"), "{unknown}");
        let test = parse(&["--email", "a@b", "--on", "test"])
            .unwrap_err()
            .to_string();
        assert!(test.contains("osprey notify test"), "{test}");
        assert!(parse(&["--email", "a@b"]).is_err(), "--on is required");
    }

    #[test]
    fn exactly_one_of_email_and_webhook() {
        assert!(parse(&["--on", "pipeline_failed"]).is_err());
        assert!(parse(&[
            "--email",
            "a@b",
            "--webhook",
            "https://h.example.com",
            "--on",
            "pipeline_failed"
        ])
        .is_err());
        assert!(parse(&[
            "--webhook",
            "https://h.example.com",
            "--on",
            "manual_waiting"
        ])
        .is_ok());
        // A secret only signs webhooks.
        assert!(parse(&["--email", "a@b", "--secret", "s", "--on", "pipeline_failed"]).is_err());
    }

    #[test]
    fn the_secret_comes_from_the_flag_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "whsec_from_file\n").unwrap();
        let webhook = [
            "--webhook",
            "https://h.example.com",
            "--on",
            "pipeline_failed",
        ];
        let with = |extra: &[&str]| {
            let mut argv = webhook.to_vec();
            argv.extend_from_slice(extra);
            parse(&argv).unwrap()
        };
        let env = || Some("whsec_from_env".to_owned());
        let flag = with(&["--secret", "whsec_flag"]);
        assert_eq!(
            webhook_secret(&flag, env(), no_stdin).unwrap().as_deref(),
            Some("whsec_flag")
        );
        let from_file = with(&["--secret-file", file.to_str().unwrap()]);
        assert_eq!(
            webhook_secret(&from_file, env(), no_stdin)
                .unwrap()
                .as_deref(),
            Some("whsec_from_file")
        );
        let from_stdin = with(&["--secret-file", "-"]);
        assert_eq!(
            webhook_secret(&from_stdin, None, || Ok("piped\n".to_owned()))
                .unwrap()
                .as_deref(),
            Some("piped")
        );
        let plain = with(&[]);
        assert_eq!(
            webhook_secret(&plain, env(), no_stdin).unwrap().as_deref(),
            Some("whsec_from_env")
        );
        assert_eq!(webhook_secret(&plain, None, no_stdin).unwrap(), None);
        let email = parse(&["--email", "a@b", "--on", "pipeline_failed"]).unwrap();
        assert_eq!(webhook_secret(&email, env(), no_stdin).unwrap(), None);
        assert!(parse(&[
            "--webhook",
            "u",
            "--on",
            "pipeline_failed",
            "--secret",
            "a",
            "--secret-file",
            "f"
        ])
        .is_err());
        std::fs::write(&file, "\n").unwrap();
        assert!(webhook_secret(&from_file, None, no_stdin).is_err());
        // Never shown by Debug.
        assert!(!format!("{flag:?}").contains("whsec_flag"));
    }

    #[test]
    fn rule_paths_encode_the_project() {
        assert_eq!(
            rule_path("my shop", 3),
            "/api/v1/projects/my%20shop/notifications/3"
        );
    }

    fn rule() -> NotificationView {
        NotificationView {
            id: 3,
            kind: "webhook".into(),
            target: "https://hooks.example.com/ci".into(),
            on: vec![NotifyEvent::PipelineFailed, NotifyEvent::PipelineFixed],
            ref_glob: Some("main".into()),
            signed: true,
            created_at: "2026-05-01T10:00:00.000Z".into(),
        }
    }

    #[test]
    fn rules_show_their_events_and_no_secret() {
        assert_eq!(
            describe(&rule()),
            "webhook https://hooks.example.com/ci on pipeline_failed,pipeline_fixed for ref main, signed"
        );
        let mut email = rule();
        email.kind = "email".into();
        email.target = "ops@example.com".into();
        email.ref_glob = None;
        email.signed = false;
        assert_eq!(
            rules_table(&[rule(), email]),
            "ID  KIND     TARGET                        EVENTS                          REF   SIGNED  CREATED\n\
             3   webhook  https://hooks.example.com/ci  pipeline_failed,pipeline_fixed  main  yes     2026-05-01T10:00:00.000Z\n\
             3   email    ops@example.com               pipeline_failed,pipeline_fixed  -     no      2026-05-01T10:00:00.000Z\n"
        );
    }

    fn delivery(attempts: Vec<AttemptView>) -> DeliveryView {
        DeliveryView {
            id: 12,
            rule: 3,
            event: NotifyEvent::PipelineFailed,
            kind: "webhook".into(),
            target: "https://hooks.example.com/ci".into(),
            pipeline: Some(40),
            deployment: None,
            state: "pending".into(),
            webhook_id: "msg_1".into(),
            attempts,
            next_attempt_at: None,
            created_at: "2026-05-01T10:00:00.000Z".into(),
            delivered_at: None,
        }
    }

    fn attempt(ok: bool, status: Option<u16>, detail: &str) -> AttemptView {
        AttemptView {
            at: "2026-05-01T10:00:01.000Z".into(),
            ok,
            status,
            detail: detail.into(),
            millis: 30,
        }
    }

    #[test]
    fn the_log_shows_the_last_attempt_cut_to_one_line() {
        let long = format!("{}\nsecond line", "x".repeat(80));
        let text = deliveries_table(&[
            delivery(vec![
                attempt(false, None, "connection refused"),
                attempt(false, Some(500), &long),
            ]),
            delivery(Vec::new()),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID  EVENT            KIND     TARGET"),
            "{text}"
        );
        assert!(
            lines[1].contains(&format!("pending  2         500 {}…  2026", "x".repeat(55))),
            "{text}"
        );
        assert!(!text.contains("second line"), "{text}");
        assert!(lines[2].contains("pending  0         -"), "{text}");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_test_delivery_line_names_its_outcome() {
        let mut sent = delivery(vec![attempt(true, Some(204), "")]);
        sent.state = "delivered".into();
        assert_eq!(
            delivery_line("test delivery", &sent),
            "test delivery 12 to https://hooks.example.com/ci: delivered (204)"
        );
        assert_eq!(
            delivery_line("delivery", &delivery(Vec::new())),
            "delivery 12 to https://hooks.example.com/ci: pending"
        );
    }
}
