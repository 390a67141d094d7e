//! The commands behind each subcommand. Each returns the process exit code;
//! errors bubble up to `main`, which prints them and exits with 1.

mod env;
mod lint;
mod logs;
mod notify;
mod pipeline;
mod project;
mod schedule;
mod token;
mod var;

use crate::args::{Args, Command, JobCommand, PipelineCommand};
use crate::client::{Client, ClientOptions};
use std::process::ExitCode;

/// The client for a command that talks to the coordinator: `--url`, the
/// token (flag, environment or token file) and `--tls-ca`.
fn client(args: &Args) -> anyhow::Result<Client> {
    let options = ClientOptions {
        token: crate::token::token_for_process(args.token.as_ref())?,
        tls_ca: args.tls_ca.clone(),
    };
    Client::new(&args.url, &options)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        // Local: no client, so no token file is read.
        Command::Lint(lint) => lint::run(lint),
        command => remote(&client(&args)?, command).await,
    }
}

/// The commands that talk to the coordinator.
async fn remote(client: &Client, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Lint(lint) => lint::run(lint),
        Command::Pipeline(command) => match command {
            PipelineCommand::Run(run) => pipeline::run(client, run).await,
            PipelineCommand::Show(show) => pipeline::show(client, show).await,
            PipelineCommand::Cancel(cancel) => pipeline::cancel(client, cancel).await,
            PipelineCommand::List(list) => pipeline::list(client, list).await,
            PipelineCommand::Retry(retry) => pipeline::retry(client, retry).await,
        },
        Command::Job(command) => match command {
            JobCommand::Play(play) => {
                let job = client.play_job(play.id).await?;
                println!("job {} ({}) is {}", job.id, job.name, job.status);
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Show(show) => {
                let job = client.job(show.id).await?;
                if show.json {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                } else {
                    println!("{}", crate::render::job_change(&job));
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Retry(retry) => {
                let path = format!("/api/v1/jobs/{}/retry", retry.id);
                let job: osprey_shared::api::JobView = client.post_json(&path, None::<&()>).await?;
                if retry.json {
                    crate::render::print_json(&job)?;
                } else {
                    println!("job {} ({}) is {}", job.id, job.name, job.status);
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Logs(logs) => logs::run(client, logs).await,
        Command::Project(command) => project::run(client, command).await,
        Command::Var(command) => var::run(client, command).await,
        Command::Token(command) => token::run(client, command).await,
        Command::Schedule(command) => schedule::run(client, command).await,
        Command::Env(command) => env::run(client, command).await,
        Command::Notify(command) => notify::run(client, command).await,
    }
}
