//! `osprey env list|history|rollback|stop`: a project's environments and
//! their deployments. Environment names may hold `/` (`review/feature-x`),
//! so they are percent-encoded as one path segment.

use crate::args::{EnvArgs, EnvCommand, EnvListArgs, EnvRollbackArgs};
use crate::client::{segment, Client, Unreachable};
use crate::render::{self, columns, or_dash, print_json, short_sha};
use osprey_shared::api::{DeploymentView, EnvironmentView, Rollback};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `rollback --wait` polls the deployment.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, command: &EnvCommand) -> anyhow::Result<ExitCode> {
    match command {
        EnvCommand::List(args) => list(client, args).await,
        EnvCommand::History(args) => history(client, args).await,
        EnvCommand::Rollback(args) => rollback(client, args).await,
        EnvCommand::Stop(args) => stop(client, args).await,
    }
}

/// `/api/v1/projects/{name}/environments`.
fn environments_path(project: &str) -> String {
    format!("{}/environments", super::project::project_path(project))
}

/// `/api/v1/projects/{name}/environments/{env}`.
fn environment_path(project: &str, env: &str) -> String {
    format!("{}/{}", environments_path(project), segment(env))
}

async fn list(client: &Client, args: &EnvListArgs) -> anyhow::Result<ExitCode> {
    let environments: Vec<EnvironmentView> =
        client.get_json(&environments_path(&args.project)).await?;
    if args.json {
        print_json(&environments)?;
    } else {
        print!("{}", environments_table(&environments));
    }
    Ok(ExitCode::SUCCESS)
}

fn environments_table(environments: &[EnvironmentView]) -> String {
    let rows: Vec<Vec<String>> = environments
        .iter()
        .map(|environment| {
            vec![
                environment.name.clone(),
                environment.tier.clone(),
                environment.state.clone(),
                or_dash(environment.url.as_ref()),
                environment
                    .last_deployment
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), last_deploy),
            ]
        })
        .collect();
    columns(&["NAME", "TIER", "STATE", "URL", "LAST-DEPLOY"], &rows)
}

/// `1a2b3c4d main, pipeline 12, job 42, 2026-05-01T10:00:00.000Z`.
fn last_deploy(deployment: &DeploymentView) -> String {
    format!(
        "{} {}, pipeline {}, job {}, {}",
        short_sha(&deployment.sha),
        deployment.git_ref,
        deployment.pipeline,
        deployment.job,
        deployment
            .finished_at
            .as_deref()
            .unwrap_or(&deployment.created_at)
    )
}

async fn history(client: &Client, args: &EnvArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/deployments", environment_path(&args.project, &args.env));
    let deployments: Vec<DeploymentView> = client.get_json(&path).await?;
    if args.json {
        print_json(&deployments)?;
    } else {
        print!("{}", history_table(&deployments));
    }
    Ok(ExitCode::SUCCESS)
}

fn history_table(deployments: &[DeploymentView]) -> String {
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|deployment| {
            vec![
                deployment.id.to_string(),
                deployment.status.clone(),
                deployment.git_ref.clone(),
                short_sha(&deployment.sha).to_owned(),
                deployment.pipeline.to_string(),
                format!("{} ({})", deployment.job_name, deployment.job),
                deployment.source.clone(),
                or_dash(deployment.rollback_of),
                deployment.created_at.clone(),
            ]
        })
        .collect();
    columns(
        &[
            "ID",
            "STATUS",
            "REF",
            "SHA",
            "PIPELINE",
            "JOB",
            "SOURCE",
            "ROLLBACK-OF",
            "CREATED",
        ],
        &rows,
    )
}

async fn rollback(client: &Client, args: &EnvRollbackArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/rollback", environment_path(&args.project, &args.env));
    let deployment: DeploymentView = client
        .post_json(&path, Some(&Rollback { to: args.to }))
        .await?;
    if !args.wait {
        if args.json {
            print_json(&deployment)?;
        } else {
            println!("{}", rolled_back(&deployment));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // With --json stdout carries only the final JSON; progress goes to stderr.
    let progress = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    progress(rolled_back(&deployment));
    let finished = follow(client, deployment, &progress).await?;
    if args.json {
        print_json(&finished)?;
    }
    Ok(if finished.status == "success" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `rolled back production to 1a2b3c4d (deployment 7): deployment 9, job 42`.
fn rolled_back(deployment: &DeploymentView) -> String {
    let from = deployment
        .rollback_of
        .map(|id| format!(" (deployment {id})"))
        .unwrap_or_default();
    format!(
        "rolled back {} to {}{from}: deployment {}, job {}",
        deployment.environment,
        short_sha(&deployment.sha),
        deployment.id,
        deployment.job
    )
}

/// A deployment that will not change any more.
fn is_final(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}

/// Polls the deployment until it is final, reporting each status change;
/// rides out a coordinator that is briefly unreachable, as `pipeline run
/// --wait` does.
async fn follow(
    client: &Client,
    mut deployment: DeploymentView,
    progress: &impl Fn(String),
) -> anyhow::Result<DeploymentView> {
    let path = format!("/api/v1/deployments/{}", deployment.id);
    let mut shown: Option<String> = None;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        if shown.as_deref() != Some(&deployment.status) {
            progress(status_line(&deployment));
            shown = Some(deployment.status.clone());
        }
        if is_final(&deployment.status) {
            return Ok(deployment);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        match client.get_json::<DeploymentView>(&path).await {
            Ok(latest) => {
                unreachable_since = None;
                deployment = latest;
            }
            Err(error) if error.is::<Unreachable>() => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    progress(format!("[{}] {error}; retrying", render::clock()));
                    Instant::now()
                });
                if since.elapsed() > super::pipeline::UNREACHABLE_GRACE {
                    return Err(error);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// `[12:00:01] deployment 9 skipped  outdated deployment`.
fn status_line(deployment: &DeploymentView) -> String {
    let mut line = format!(
        "[{}] deployment {} {}",
        render::clock(),
        deployment.id,
        deployment.status
    );
    if let Some(reason) = &deployment.reason {
        line.push_str(&format!("  {reason}"));
    }
    line
}

async fn stop(client: &Client, args: &EnvArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/stop", environment_path(&args.project, &args.env));
    let environment: EnvironmentView = client.post_json(&path, None::<&()>).await?;
    if args.json {
        print_json(&environment)?;
    } else {
        println!(
            "environment {} of project {} is {}",
            environment.name, args.project, environment.state
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Args, Command};
    use clap::Parser;

    fn deployment(id: i64, status: &str) -> DeploymentView {
        DeploymentView {
            id,
            iid: id,
            environment: "production".into(),
            status: status.into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            git_ref: "main".into(),
            tag: false,
            pipeline: 12,
            job: 42,
            job_name: "deploy".into(),
            source: "push".into(),
            triggered_by: "push".into(),
            rollback_of: None,
            reason: None,
            created_at: "2026-05-01T10:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn environment_names_are_one_path_segment() {
        assert_eq!(
            environment_path("web app", "review/feature-x"),
            "/api/v1/projects/web%20app/environments/review%2Ffeature-x"
        );
        assert_eq!(
            environments_path("shop"),
            "/api/v1/projects/shop/environments"
        );
    }

    #[test]
    fn the_list_shows_the_last_deployment() {
        let mut last = deployment(9, "success");
        last.finished_at = Some("2026-05-01T10:05:00.000Z".into());
        let environments = vec![
            EnvironmentView {
                id: 1,
                name: "production".into(),
                slug: "production".into(),
                tier: "production".into(),
                url: Some("https://shop.example.com".into()),
                state: "available".into(),
                auto_stop_at: None,
                last_deployment: Some(last),
                created_at: "2026-04-01T00:00:00.000Z".into(),
            },
            EnvironmentView {
                id: 2,
                name: "review/x".into(),
                slug: "review-x".into(),
                tier: "development".into(),
                url: None,
                state: "stopped".into(),
                auto_stop_at: None,
                last_deployment: None,
                created_at: "2026-04-02T00:00:00.000Z".into(),
            },
        ];
        assert_eq!(
            environments_table(&environments),
            "NAME        TIER         STATE      URL                       LAST-DEPLOY\n\
             production  production   available  https://shop.example.com  \
             01234567 main, pipeline 12, job 42, 2026-05-01T10:05:00.000Z\n\
             review/x    development  stopped    -                         -\n"
        );
    }

    #[test]
    fn the_history_names_rollbacks() {
        let mut rollback = deployment(9, "running");
        rollback.source = "rollback".into();
        rollback.rollback_of = Some(7);
        let text = history_table(&[rollback, deployment(8, "success")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID  STATUS   REF   SHA       PIPELINE  JOB          SOURCE    ROLLBACK-OF  CREATED"
        );
        assert_eq!(
            lines[1],
            "9   running  main  01234567  12        deploy (42)  rollback  7            2026-05-01T10:00:00.000Z"
        );
        assert!(lines[2].contains("push      -            2026"), "{text}");
    }

    #[test]
    fn rollback_says_what_it_went_back_to() {
        let mut view = deployment(9, "created");
        view.rollback_of = Some(7);
        assert_eq!(
            rolled_back(&view),
            "rolled back production to 01234567 (deployment 7): deployment 9, job 42"
        );
        assert!(!is_final("running") && !is_final("created"));
        assert!(["success", "failed", "canceled", "skipped"]
            .into_iter()
            .all(is_final));
    }

    #[test]
    fn rollback_takes_a_deployment_and_wait() {
        let parsed = Args::try_parse_from([
            "osprey",
            "env",
            "rollback",
            "shop",
            "production",
            "--to",
            "7",
            "--wait",
        ])
        .unwrap();
        match parsed.command {
            Command::Env(EnvCommand::Rollback(args)) => {
                assert_eq!((args.to, args.wait), (Some(7), true));
                assert_eq!(args.env, "production");
            }
            other => panic!("{other:?}"),
        }
        assert!(Args::try_parse_from(["osprey", "env", "rollback", "shop"]).is_err());
    }
}
