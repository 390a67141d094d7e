//! `osprey schedule add|list|rm`: a project's pipeline schedules.

use crate::args::{ScheduleAddArgs, ScheduleCommand, ScheduleListArgs};
use crate::client::Client;
use crate::render::{columns, or_dash, print_json};
use osprey_shared::api::{CreateSchedule, ScheduleView};
use std::process::ExitCode;

pub async fn run(client: &Client, command: &ScheduleCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Add(args) => add(client, args).await?,
        ScheduleCommand::List(args) => list(client, args).await?,
        ScheduleCommand::Rm(args) => {
            let path = format!("{}/{}", schedules_path(&args.project), args.id);
            client.delete(&path, &()).await?;
            println!("schedule {} of project {} removed", args.id, args.project);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schedules_path(project: &str) -> String {
    format!("{}/schedules", super::project::project_path(project))
}

/// The request `schedule add` sends.
pub fn create_request(args: &ScheduleAddArgs) -> CreateSchedule {
    CreateSchedule {
        cron: args.cron.clone(),
        timezone: args.timezone.clone(),
        git_ref: args.git_ref.clone(),
        variables: args.variables.clone(),
        description: args.description.clone(),
    }
}

async fn add(client: &Client, args: &ScheduleAddArgs) -> anyhow::Result<()> {
    let schedule: ScheduleView = client
        .post_json(&schedules_path(&args.project), Some(&create_request(args)))
        .await?;
    if args.json {
        return print_json(&schedule);
    }
    println!(
        "schedule {} of project {}: {} ({}) on {}, next run at {}",
        schedule.id,
        schedule.project,
        schedule.cron,
        schedule.timezone,
        schedule.git_ref,
        schedule.next_run_at
    );
    Ok(())
}

async fn list(client: &Client, args: &ScheduleListArgs) -> anyhow::Result<()> {
    let schedules: Vec<ScheduleView> = client.get_json(&schedules_path(&args.project)).await?;
    if args.json {
        return print_json(&schedules);
    }
    print!("{}", table(&schedules));
    Ok(())
}

fn table(schedules: &[ScheduleView]) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|schedule| {
            vec![
                schedule.id.to_string(),
                schedule.cron.clone(),
                schedule.timezone.clone(),
                schedule.git_ref.clone(),
                schedule.next_run_at.clone(),
                or_dash(schedule.last_pipeline_id),
                or_dash(schedule.description.as_ref()),
            ]
        })
        .collect();
    columns(
        &[
            "ID",
            "CRON",
            "TIMEZONE",
            "REF",
            "NEXT RUN",
            "LAST PIPELINE",
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

    #[test]
    fn add_parses_cron_ref_vars_and_zone() {
        let parsed = Args::try_parse_from([
            "osprey",
            "schedule",
            "add",
            "widget",
            "--cron",
            "0 9 * * 1-5",
            "--ref",
            "main",
            "--var",
            "MODE=nightly",
            "--var",
            "EMPTY=",
            "--timezone",
            "Europe/Lisbon",
            "--description",
            "weekdays",
        ])
        .unwrap();
        let Command::Schedule(ScheduleCommand::Add(args)) = parsed.command else {
            panic!("not schedule add");
        };
        assert_eq!(args.project, "widget");
        let request = create_request(&args);
        assert_eq!(request.cron, "0 9 * * 1-5");
        assert_eq!(request.git_ref, "main");
        assert_eq!(request.timezone.as_deref(), Some("Europe/Lisbon"));
        assert_eq!(request.variables.len(), 2);
        assert_eq!(request.variables[0].key, "MODE");
        assert_eq!(request.variables[0].value, "nightly");
        assert_eq!(request.variables[1].value, "");
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["ref"], "main");
    }

    #[test]
    fn cron_and_ref_are_required() {
        assert!(Args::try_parse_from(["osprey", "schedule", "add", "w", "--ref", "main"]).is_err());
        assert!(
            Args::try_parse_from(["osprey", "schedule", "add", "w", "--cron", "@daily"]).is_err()
        );
        assert!(Args::try_parse_from([
            "osprey", "schedule", "add", "w", "--cron", "@daily", "--ref", "m", "--var", "NOEQUALS"
        ])
        .is_err());
    }

    #[test]
    fn rm_and_list_parse() {
        let parsed = Args::try_parse_from(["osprey", "schedule", "rm", "w", "4"]).unwrap();
        assert!(
            matches!(parsed.command, Command::Schedule(ScheduleCommand::Rm(ref args)) if args.id == 4 && args.project == "w")
        );
        let parsed = Args::try_parse_from(["osprey", "schedule", "list", "w", "--json"]).unwrap();
        assert!(
            matches!(parsed.command, Command::Schedule(ScheduleCommand::List(ref args)) if args.json)
        );
    }
}
