//! The commands behind each subcommand. Each returns the process exit code;
//! errors bubble up to `main`, which prints them and exits with 1.

mod lint;
mod logs;
mod pipeline;

use crate::args::{Args, Command, JobCommand, PipelineCommand};
use crate::client::Client;
use std::process::ExitCode;

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Lint(lint) => lint::run(&lint),
        Command::Pipeline(command) => {
            let client = Client::new(&args.url)?;
            match command {
                PipelineCommand::Run(run) => pipeline::run(&client, &run).await,
                PipelineCommand::Show(show) => pipeline::show(&client, &show).await,
                PipelineCommand::Cancel(cancel) => pipeline::cancel(&client, &cancel).await,
            }
        }
        Command::Job(command) => {
            let client = Client::new(&args.url)?;
            match command {
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
            }
        }
        Command::Logs(logs) => {
            let client = Client::new(&args.url)?;
            logs::run(&client, &logs).await
        }
    }
}
