//! `osprey token create|list|revoke`. `create` prints the token alone on
//! stdout, so `TOKEN=$(osprey token create --role run)` works.

use crate::args::{JsonArgs, TokenCommand, TokenCreateArgs};
use crate::client::Client;
use crate::render::{columns, or_dash, print_json};
use osprey_shared::api::{CreateToken, CreatedToken, TokenView};
use std::process::ExitCode;

pub async fn run(client: &Client, command: &TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => create(client, args).await?,
        TokenCommand::List(args) => list(client, args).await?,
        TokenCommand::Revoke(args) => {
            client
                .delete(&format!("/api/v1/tokens/{}", args.id), &())
                .await?;
            println!("token {} revoked", args.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The request `token create` sends.
pub fn create_request(args: &TokenCreateArgs) -> CreateToken {
    CreateToken {
        role: args.role,
        project: args.project.clone(),
        expires_in_seconds: args.expires,
        description: args.description.clone(),
    }
}

async fn create(client: &Client, args: &TokenCreateArgs) -> anyhow::Result<()> {
    let created: CreatedToken = client
        .post_json("/api/v1/tokens", Some(&create_request(args)))
        .await?;
    if args.json {
        return print_json(&created);
    }
    println!("{}", created.token);
    eprintln!(
        "token {} ({} on {}) created; it is shown only this once",
        created.view.id,
        created.view.role,
        created.view.project.as_deref().map_or_else(
            || "every project".to_owned(),
            |project| format!("project {project}")
        )
    );
    Ok(())
}

async fn list(client: &Client, args: &JsonArgs) -> anyhow::Result<()> {
    let tokens: Vec<TokenView> = client.get_json("/api/v1/tokens").await?;
    if args.json {
        return print_json(&tokens);
    }
    print!("{}", table(&tokens));
    Ok(())
}

fn table(tokens: &[TokenView]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|token| {
            vec![
                token.id.to_string(),
                token.role.to_string(),
                token.project.clone().unwrap_or_else(|| "*".to_owned()),
                token.created_at.clone(),
                or_dash(token.expires_at.as_ref()),
                or_dash(token.last_used_at.as_ref()),
                or_dash(token.description.as_ref()),
            ]
        })
        .collect();
    columns(
        &[
            "ID",
            "ROLE",
            "PROJECT",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "DESCRIPTION",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Args, Command};
    use clap::Parser;
    use osprey_shared::api::Role;

    fn create_args(argv: &[&str]) -> TokenCreateArgs {
        match Args::try_parse_from(argv).unwrap().command {
            Command::Token(TokenCommand::Create(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_parses_role_project_and_lifetime() {
        let args = create_args(&[
            "osprey",
            "token",
            "create",
            "--project",
            "widget",
            "--role",
            "run",
            "--expires",
            "30d",
            "--description",
            "deploy bot",
        ]);
        let request = create_request(&args);
        assert_eq!(request.role, Role::Run);
        assert_eq!(request.project.as_deref(), Some("widget"));
        assert_eq!(request.expires_in_seconds, Some(30 * 86_400));
        assert_eq!(request.description.as_deref(), Some("deploy bot"));
        let minimal = create_request(&create_args(&[
            "osprey", "token", "create", "--role", "admin",
        ]));
        assert_eq!(minimal.role, Role::Admin);
        assert_eq!(minimal.expires_in_seconds, None);
        assert_eq!(minimal.project, None);
    }

    #[test]
    fn role_is_required_and_checked() {
        assert!(Args::try_parse_from(["osprey", "token", "create"]).is_err());
        let error =
            Args::try_parse_from(["osprey", "token", "create", "--role", "owner"]).unwrap_err();
        assert!(error.to_string().contains("read, run or admin"), "{error}");
    }

    #[test]
    fn revoke_takes_an_id() {
        let parsed = Args::try_parse_from(["osprey", "token", "revoke", "7"]).unwrap();
        assert!(
            matches!(parsed.command, Command::Token(TokenCommand::Revoke(ref args)) if args.id == 7)
        );
        assert!(Args::try_parse_from(["osprey", "token", "revoke", "seven"]).is_err());
    }

    #[test]
    fn the_table_marks_global_tokens() {
        let tokens = vec![TokenView {
            id: 3,
            role: Role::Read,
            project: None,
            description: None,
            created_at: "2026-05-01T10:00:00.000Z".into(),
            expires_at: None,
            last_used_at: None,
        }];
        let text = table(&tokens);
        assert!(
            text.contains("\n3   read  *        2026-05-01T10:00:00.000Z  -        -          -\n"),
            "{text}"
        );
    }
}
