//! `osprey lint [FILE]`: validates a pipeline file locally with the same
//! parser the coordinator uses.

use crate::args::LintArgs;
use anyhow::Context as _;
use std::process::ExitCode;

pub fn run(args: &LintArgs) -> anyhow::Result<ExitCode> {
    // Errors name the file as the user gave it, so editors can jump to it.
    let name = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {name}"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8 text"))?;
    match osprey_shared::yaml::parse_pipeline(&name, &text) {
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
