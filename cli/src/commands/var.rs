//! `osprey var set|list|rm`: a project's variables. A value is read from
//! standard input only (never an argument, which `ps` and shell history
//! would show) and never printed.

use crate::args::{VarCommand, VarListArgs, VarRmArgs, VarSetArgs};
use crate::client::{segment, Client};
use crate::render::{columns, print_json};
use anyhow::Context as _;
use osprey_shared::api::{SetVariable, VariableView};
use std::io::{IsTerminal as _, Read};
use std::process::ExitCode;

pub async fn run(client: &Client, command: &VarCommand) -> anyhow::Result<ExitCode> {
    match command {
        VarCommand::Set(args) => set(client, args).await?,
        VarCommand::List(args) => list(client, args).await?,
        VarCommand::Rm(args) => rm(client, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn variables_path(project: &str) -> String {
    format!("{}/variables", super::project::project_path(project))
}

fn variable_path(project: &str, key: &str) -> String {
    format!("{}/{}", variables_path(project), segment(key))
}

/// The value as given on stdin, less one trailing newline (`echo` adds it).
pub fn value_from_input(mut input: String) -> String {
    if input.ends_with('\n') {
        input.pop();
    }
    input
}

/// The request `var set` sends for `value`.
pub fn set_request(args: &VarSetArgs, value: String) -> SetVariable {
    SetVariable {
        value,
        masked: args.masked,
        protected: args.protected,
        file: args.file,
        raw: args.raw,
        env_scope: args.env_scope.clone(),
    }
}

async fn set(client: &Client, args: &VarSetArgs) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("value of {} (end with Ctrl-D):", args.key);
    }
    let mut input = String::new();
    stdin
        .read_to_string(&mut input)
        .context("cannot read the value from standard input (it must be UTF-8 text)")?;
    let request = set_request(args, value_from_input(input));
    let view: VariableView = client
        .put_json(&variable_path(&args.project, &args.key), &request)
        .await?;
    if args.json {
        return print_json(&view);
    }
    println!(
        "variable {} of project {} set (scope {}{})",
        view.key,
        args.project,
        view.env_scope,
        flags(&view)
            .iter()
            .map(|flag| format!(", {flag}"))
            .collect::<String>()
    );
    Ok(())
}

async fn list(client: &Client, args: &VarListArgs) -> anyhow::Result<()> {
    let variables: Vec<VariableView> = client.get_json(&variables_path(&args.project)).await?;
    if args.json {
        return print_json(&variables);
    }
    print!("{}", table(&variables));
    Ok(())
}

fn table(variables: &[VariableView]) -> String {
    let rows: Vec<Vec<String>> = variables
        .iter()
        .map(|variable| {
            let flags = flags(variable);
            vec![
                variable.key.clone(),
                variable.env_scope.clone(),
                if flags.is_empty() {
                    "-".to_owned()
                } else {
                    flags.join(",")
                },
                variable.updated_at.clone(),
            ]
        })
        .collect();
    columns(&["KEY", "SCOPE", "FLAGS", "UPDATED"], &rows)
}

async fn rm(client: &Client, args: &VarRmArgs) -> anyhow::Result<()> {
    let query: Vec<(&str, &str)> = args
        .env_scope
        .as_deref()
        .map(|scope| vec![("env_scope", scope)])
        .unwrap_or_default();
    client
        .delete(&variable_path(&args.project, &args.key), &query)
        .await?;
    println!(
        "variable {} of project {} removed (scope {})",
        args.key,
        args.project,
        args.env_scope.as_deref().unwrap_or("*")
    );
    Ok(())
}

fn flags(variable: &VariableView) -> Vec<&'static str> {
    [
        (variable.masked, "masked"),
        (variable.protected, "protected"),
        (variable.file, "file"),
        (variable.raw, "raw"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Args, Command};
    use clap::Parser;

    fn set_args(argv: &[&str]) -> VarSetArgs {
        match Args::try_parse_from(argv).unwrap().command {
            Command::Var(VarCommand::Set(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exactly_one_trailing_newline_is_dropped() {
        assert_eq!(value_from_input("secret\n".into()), "secret");
        assert_eq!(value_from_input("secret\n\n".into()), "secret\n");
        assert_eq!(value_from_input("secret".into()), "secret");
        assert_eq!(value_from_input("line1\nline2\n".into()), "line1\nline2");
        assert_eq!(value_from_input(String::new()), "");
    }

    #[test]
    fn set_flags_map_to_the_request() {
        let args = set_args(&[
            "osprey",
            "var",
            "set",
            "widget",
            "DEPLOY_TOKEN",
            "--masked",
            "--protected",
            "--env-scope",
            "review/*",
            "--raw",
        ]);
        assert_eq!(args.project, "widget");
        assert_eq!(args.key, "DEPLOY_TOKEN");
        let request = set_request(&args, "v".into());
        assert!(request.masked && request.protected && request.raw && !request.file);
        assert_eq!(request.env_scope.as_deref(), Some("review/*"));
        let plain = set_request(
            &set_args(&["osprey", "var", "set", "p", "K", "--file"]),
            "v".into(),
        );
        assert!(plain.file && !plain.masked);
        assert_eq!(plain.env_scope, None);
    }

    #[test]
    fn a_value_on_the_command_line_is_refused() {
        assert!(Args::try_parse_from(["osprey", "var", "set", "p", "K", "value"]).is_err());
        assert!(Args::try_parse_from(["osprey", "var", "set", "p", "K", "--value", "v"]).is_err());
    }

    #[test]
    fn rm_takes_a_scope() {
        let parsed =
            Args::try_parse_from(["osprey", "var", "rm", "p", "K", "--env-scope", "production"])
                .unwrap();
        match parsed.command {
            Command::Var(VarCommand::Rm(args)) => {
                assert_eq!(args.env_scope.as_deref(), Some("production"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_encode_their_segments() {
        assert_eq!(
            variable_path("widget", "TOKEN"),
            "/api/v1/projects/widget/variables/TOKEN"
        );
        assert_eq!(variables_path("a b"), "/api/v1/projects/a%20b/variables");
    }

    #[test]
    fn the_table_shows_flags_and_no_value() {
        let variables = vec![VariableView {
            key: "TOKEN".into(),
            env_scope: "*".into(),
            masked: true,
            protected: true,
            file: false,
            raw: false,
            updated_at: "2026-05-01T10:00:00.000Z".into(),
        }];
        let text = table(&variables);
        assert!(text.starts_with("KEY    SCOPE  FLAGS"), "{text}");
        assert!(
            text.contains("TOKEN  *      masked,protected  2026-05-01"),
            "{text}"
        );
    }
}
