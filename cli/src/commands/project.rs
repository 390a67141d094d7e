//! `osprey project add|list|show|rm|rotate-webhook-secret`.

use crate::args::{JsonArgs, ProjectAddArgs, ProjectCommand, ProjectNameArgs};
use crate::client::{segment, Client};
use crate::render::{columns, or_dash, print_json};
use osprey_shared::api::{CreateProject, CreatedProject, ProjectView};
use std::process::ExitCode;

pub async fn run(client: &Client, command: &ProjectCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProjectCommand::Add(args) => add(client, args).await?,
        ProjectCommand::List(args) => list(client, args).await?,
        ProjectCommand::Show(args) => show(client, args).await?,
        ProjectCommand::Rm(args) => {
            client.delete(&project_path(&args.name), &()).await?;
            println!("project {} removed", args.name);
        }
        ProjectCommand::RotateWebhookSecret(args) => {
            let path = format!("{}/webhook-secret", project_path(&args.name));
            let created: CreatedProject = client.post_json(&path, None::<&()>).await?;
            if args.json {
                print_json(&created)?;
            } else {
                println!("new webhook secret of project {}", created.project.name);
                print_secret(&created);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `/api/v1/projects/{name}`.
pub fn project_path(name: &str) -> String {
    format!("/api/v1/projects/{}", segment(name))
}

/// The request `project add` sends.
pub fn create_request(args: &ProjectAddArgs) -> anyhow::Result<CreateProject> {
    let protected_refs = args.protected_refs.as_ref().map(|patterns| {
        patterns
            .iter()
            .map(|pattern| pattern.trim().to_owned())
            .filter(|pattern| !pattern.is_empty())
            .collect()
    });
    Ok(CreateProject {
        name: args.name.clone(),
        repo: super::pipeline::resolve_repo(&args.repo)?,
        default_branch: args.default_branch.clone(),
        protected_refs,
        poll_seconds: args.poll,
        registry: args.registry.clone(),
    })
}

async fn add(client: &Client, args: &ProjectAddArgs) -> anyhow::Result<()> {
    let request = create_request(args)?;
    let created: CreatedProject = client.post_json("/api/v1/projects", Some(&request)).await?;
    if args.json {
        return print_json(&created);
    }
    println!("project {} created", created.project.name);
    println!("  repo:           {}", created.project.repo);
    print_secret(&created);
    Ok(())
}

fn print_secret(created: &CreatedProject) {
    println!("  webhook URL:    {}", created.project.webhook_url);
    println!("  webhook secret: {}", created.webhook_secret);
    println!(
        "The secret is shown only this once: set it as the webhook's secret in your forge now \
         (`osprey project rotate-webhook-secret {}` makes a new one).",
        created.project.name
    );
}

async fn list(client: &Client, args: &JsonArgs) -> anyhow::Result<()> {
    let projects: Vec<ProjectView> = client.get_json("/api/v1/projects").await?;
    if args.json {
        return print_json(&projects);
    }
    let rows: Vec<Vec<String>> = projects
        .iter()
        .map(|project| {
            vec![
                project.name.clone(),
                project.default_branch.clone(),
                project.protected_refs.join(","),
                poll_text(project.poll_seconds),
                project.repo.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        columns(
            &["NAME", "DEFAULT BRANCH", "PROTECTED", "POLL", "REPO"],
            &rows
        )
    );
    Ok(())
}

async fn show(client: &Client, args: &ProjectNameArgs) -> anyhow::Result<()> {
    let project: ProjectView = client.get_json(&project_path(&args.name)).await?;
    if args.json {
        return print_json(&project);
    }
    print!("{}", describe(&project));
    Ok(())
}

/// `project show` without `--json`.
fn describe(project: &ProjectView) -> String {
    let lines = [
        ("name", project.name.clone()),
        ("repo", project.repo.clone()),
        ("default branch", project.default_branch.clone()),
        ("protected refs", project.protected_refs.join(", ")),
        ("poll", poll_text(project.poll_seconds)),
        ("registry", or_dash(project.registry.as_ref())),
        ("webhook URL", project.webhook_url.clone()),
        ("created", project.created_at.clone()),
    ];
    lines
        .iter()
        .map(|(label, value)| format!("{:<16}{value}\n", format!("{label}:")))
        .collect()
}

fn poll_text(poll_seconds: Option<u64>) -> String {
    match poll_seconds {
        None | Some(0) => "-".to_owned(),
        Some(seconds) => format!("{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Args, Command};
    use clap::Parser;

    fn add_args(argv: &[&str]) -> ProjectAddArgs {
        match Args::try_parse_from(argv).unwrap().command {
            Command::Project(ProjectCommand::Add(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn add_parses_every_option() {
        let args = add_args(&[
            "osprey",
            "project",
            "add",
            "widget",
            "--repo",
            "https://git.example.com/acme/widget.git",
            "--default-branch",
            "trunk",
            "--protected-refs",
            "main, release/*,,v*",
            "--poll",
            "5m",
            "--registry",
            "registry.example.com/acme",
            "--json",
        ]);
        let request = create_request(&args).unwrap();
        assert_eq!(request.name, "widget");
        assert_eq!(request.repo, "https://git.example.com/acme/widget.git");
        assert_eq!(request.default_branch.as_deref(), Some("trunk"));
        assert_eq!(
            request.protected_refs,
            Some(vec![
                "main".to_owned(),
                "release/*".to_owned(),
                "v*".to_owned()
            ])
        );
        assert_eq!(request.poll_seconds, Some(300));
        assert_eq!(
            request.registry.as_deref(),
            Some("registry.example.com/acme")
        );
        assert!(args.json);
    }

    #[test]
    fn add_defaults_and_local_paths() {
        let args = add_args(&["osprey", "project", "add", "w", "--repo", "some/dir"]);
        let request = create_request(&args).unwrap();
        assert!(std::path::Path::new(&request.repo).is_absolute());
        assert_eq!(request.default_branch, None);
        assert_eq!(request.protected_refs, None);
        assert_eq!(request.poll_seconds, None);
        let json = serde_json::to_value(&request).unwrap();
        assert!(json.get("poll_seconds").is_none());
    }

    #[test]
    fn bad_durations_and_missing_repo_are_usage_errors() {
        assert!(Args::try_parse_from([
            "osprey", "project", "add", "w", "--repo", "r", "--poll", "soon"
        ])
        .is_err());
        assert!(Args::try_parse_from(["osprey", "project", "add", "w"]).is_err());
    }

    #[test]
    fn the_other_subcommands_parse() {
        let parsed =
            Args::try_parse_from(["osprey", "project", "rotate-webhook-secret", "w", "--json"])
                .unwrap();
        assert!(matches!(
            parsed.command,
            Command::Project(ProjectCommand::RotateWebhookSecret(ProjectNameArgs { ref name, json: true })) if name == "w"
        ));
        let parsed = Args::try_parse_from(["osprey", "project", "rm", "w"]).unwrap();
        assert!(matches!(
            parsed.command,
            Command::Project(ProjectCommand::Rm(_))
        ));
        let parsed = Args::try_parse_from(["osprey", "project", "list", "--json"]).unwrap();
        assert!(matches!(
            parsed.command,
            Command::Project(ProjectCommand::List(JsonArgs { json: true }))
        ));
    }

    #[test]
    fn show_text_lists_every_field() {
        let project = ProjectView {
            name: "widget".into(),
            repo: "https://x/widget.git".into(),
            default_branch: "main".into(),
            protected_refs: vec!["main".into(), "v*".into()],
            poll_seconds: Some(60),
            registry: None,
            webhook_url: "https://ci/hooks/widget".into(),
            created_at: "2026-05-01T10:00:00.000Z".into(),
        };
        let text = describe(&project);
        assert!(text.contains("protected refs: main, v*\n"), "{text}");
        assert!(text.contains("poll:           60s\n"), "{text}");
        assert!(text.contains("registry:       -\n"), "{text}");
        assert!(
            text.contains("webhook URL:    https://ci/hooks/widget\n"),
            "{text}"
        );
    }
}
