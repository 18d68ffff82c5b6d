//! `dsoftbus`: a Nexus soft-bus node and its command-line client for Linux.
//! See `docs/dsoftbus-cli.md` for the manual.
// Bad input must get a clear error, never a panic: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod client;
mod config;
mod control;
mod daemon;
mod discovery;
mod exit;
mod identity;
mod ifaces;
mod perms;
mod session;
mod transfer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::exit::Failure;

fn init_logging(verbose: u8, file_filter: Option<String>, daemon: bool) {
    let default = match (daemon, verbose) {
        (false, 0) => "warn",
        (true, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("DSOFTBUS_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .or(if verbose > 0 { None } else { file_filter })
        .unwrap_or_else(|| default.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    let (file, _path) = config::load_file(&cli.global)?;
    let daemon = matches!(cli.cmd, Command::Daemon(_));
    init_logging(cli.global.verbose, config::file_log_filter(&file), daemon);
    let paths = config::resolve_paths(&cli.global, &file)?;
    match cli.cmd {
        Command::Daemon(args) => {
            let cfg = config::daemon_config(paths, args, file)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("dsoftbus")
                .build()?;
            rt.block_on(daemon::run(cfg))
        }
        Command::Peers { json } => client::peers(&paths, json),
        Command::Ping {
            device,
            count,
            interval,
            timeout,
        } => client::ping(&paths, &device, count, interval, timeout),
        Command::Send {
            device,
            file: f,
            no_progress,
        } => client::send(&paths, &device, &f, no_progress),
        Command::Trust { device, key } => client::trust(&paths, &device, &key),
        Command::Forget { device } => client::forget(&paths, &device),
        Command::Id => client::id(&paths, &file),
        Command::Status => client::status(&paths),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("dsoftbus: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
