//! `osprey lint [FILE]`: validates a pipeline file locally with the same
//! parser the coordinator uses. With `--plan --ref REF` it also reads the
//! files it includes and prints which jobs a pipeline on that ref would have.

use crate::args::LintArgs;
use anyhow::{bail, Context as _};
use osprey_shared::pipeline::Variable;
use osprey_shared::plan::{self, PipelineSource, Plan, PlanContext};
use osprey_shared::variables::{looks_secret, predefined};
use osprey_shared::yaml::DirectoryLoader;
use std::process::ExitCode;

pub fn run(args: &LintArgs) -> anyhow::Result<ExitCode> {
    // Errors name the file as the user gave it, so editors can jump to it.
    let name = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {name}"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8 text"))?;
    if args.plan {
        return plan(args, &name, &text);
    }
    // The same front end as the coordinator, reading includes beside the file.
    match osprey_shared::yaml::parse_pipeline_with(
        &name,
        &text,
        &DirectoryLoader::of_file(&args.file),
    ) {
        Ok(_) => {
            println!("{name}: valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn plan(args: &LintArgs, name: &str, text: &str) -> anyhow::Result<ExitCode> {
    let Some(git_ref) = args.git_ref.clone() else {
        bail!("--plan needs --ref");
    };
    let Some(source) = PipelineSource::parse(&args.source) else {
        let known: Vec<&str> = PipelineSource::ALL.iter().map(|s| s.as_str()).collect();
        bail!(
            "unknown --source {}; one of {}",
            args.source,
            known.join(", ")
        );
    };
    let mut variables = Vec::with_capacity(args.vars.len());
    for pair in &args.vars {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--var {pair}: expected KEY=VALUE");
        };
        variables.push(Variable {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    let repo = DirectoryLoader::of_file(&args.file);
    let definition = match osprey_shared::yaml::parse_pipeline_with(name, text, &repo) {
        Ok(definition) => definition,
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let ctx = PlanContext {
        predefined: predefined(
            &git_ref,
            args.tag,
            source.as_str(),
            Some(&args.default_branch),
        ),
        git_ref,
        is_tag: args.tag,
        source,
        changed_files: (!args.changed.is_empty()).then(|| args.changed.clone()),
        files: &repo,
        variables,
        project_variables: Vec::new(),
    };
    match plan::plan(&definition, &ctx) {
        Ok(plan) if args.json => {
            let json = serde_json::json!({
                "ref": ctx.git_ref,
                "tag": ctx.is_tag,
                "source": ctx.source,
                "plan": masked(plan),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(plan) => {
            print!("{}", plan::render(&plan, &ctx));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{name}: {error}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The plan with the values of credential-like variables replaced.
fn masked(mut plan: Plan) -> Plan {
    if let Plan::Created { pipeline } = &mut plan {
        for job in &mut pipeline.jobs {
            for variable in &mut job.variables {
                if looks_secret(&variable.key) {
                    plan::MASK.clone_into(&mut variable.value);
                }
            }
        }
    }
    plan
}
