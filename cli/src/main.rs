//! `osprey`, the command line for a coordinator's HTTP API (and a local
//! `.gitlab-ci.yml` linter). This file only parses arguments, starts the
//! runtime and turns the outcome into an exit code; the commands live in
//! [`commands`].

mod args;
mod client;
mod commands;
mod duration;
mod render;
mod token;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    // Usage errors exit with 2 (clap's default).
    let args = args::Args::parse();
    // Before any thread exists (see `render::init_local_offset`).
    render::init_local_offset();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(error) => {
            client::report_error(&error);
            ExitCode::FAILURE
        }
    }
}

/// `osprey logs 12 | head` must end quietly when `head` exits, as Unix
/// tools do. Rust ignores SIGPIPE, which turns every later `println!` into a
/// panic; restoring the default disposition makes the write end the process.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in `main`, before any thread exists, and
    // installs the default disposition (no handler code runs).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
