//! The commands behind each subcommand. Each returns the process exit code;
//! errors bubble up to `main`, which prints them and exits with 1.

mod lint;
mod logs;
mod pipeline;

use crate::args::{Args, Command, PipelineCommand};
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
        Command::Logs(logs) => {
            let client = Client::new(&args.url)?;
            logs::run(&client, &logs).await
        }
    }
}
