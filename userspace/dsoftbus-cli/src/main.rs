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
mod remote;
mod session;
mod shared;
mod transfer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::exit::Failure;

/// The tracing filter. Precedence (first set wins): `DSOFTBUS_LOG`, then
/// `-v`/`-vv`, then `RUST_LOG`, then the config file's `log`, then the
/// default (daemon `info`, clients `warn`). An unparsable filter falls back
/// to the default.
fn log_filter(
    verbose: u8,
    daemon: bool,
    dsoftbus_log: Option<String>,
    rust_log: Option<String>,
    file_filter: Option<String>,
) -> String {
    let default = if daemon { "info" } else { "warn" };
    let by_flag = match verbose {
        0 => None,
        1 => Some("debug".to_string()),
        _ => Some("trace".to_string()),
    };
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    set(dsoftbus_log)
        .or(by_flag)
        .or(set(rust_log))
        .or(set(file_filter))
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| default.to_string())
}

fn init_logging(verbose: u8, file_filter: Option<String>, daemon: bool) {
    let filter = log_filter(
        verbose,
        daemon,
        std::env::var("DSOFTBUS_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
        file_filter,
    );
    let default = if daemon { "info" } else { "warn" };
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
    // Commands that may read or write the state files themselves check them
    // as the daemon does (`daemon::run` checks at start).
    if matches!(
        cli.cmd,
        Command::Id { .. } | Command::Trust { .. } | Command::Forget { .. }
    ) {
        perms::check_state(&paths.state_dir)?;
    }
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
            json,
        } => client::ping(&paths, &device, count, interval, timeout, json),
        Command::Send {
            device,
            paths: files,
            no_progress,
            json,
        } => client::send(&paths, &device, &files, no_progress, json),
        Command::Trust {
            device,
            key,
            replace,
        } => client::trust(&paths, &device, key.as_deref(), replace),
        Command::Forget { devices, auto } => client::forget(&paths, &devices, auto),
        Command::Call {
            device,
            service,
            payload,
            timeout,
            json,
        } => client::call(&paths, &device, &service, payload.as_deref(), timeout, json),
        Command::Serve { name, unix } => client::serve(&paths, &name, &unix),
        Command::Id { json } => client::id(&paths, &file, json),
        Command::Status { json } => client::status(&paths, json),
        Command::Transfers { json } => client::transfers(&paths, json),
        Command::Accept { id } => client::answer(&paths, id, true),
        Command::Deny { id } => client::answer(&paths, id, false),
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

/// `completions` and `man` need no configuration, state or daemon.
fn generate(cmd: &Command) -> Option<Result<(), Failure>> {
    use clap::CommandFactory;
    let mut app = Cli::command();
    let mut out = std::io::stdout();
    match cmd {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut app, "dsoftbus", &mut out);
            Some(Ok(()))
        }
        Command::Man => Some(
            clap_mangen::Man::new(app)
                .render(&mut out)
                .map_err(|e| Failure::new(exit::FAILURE, format!("writing the manual: {e}"))),
        ),
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match generate(&cli.cmd) {
        Some(r) => r,
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("dsoftbus: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn log_filter_precedence() {
        // Defaults.
        assert_eq!(log_filter(0, true, None, None, None), "info");
        assert_eq!(log_filter(0, false, None, None, None), "warn");
        // RUST_LOG is honoured, over the config file's `log`.
        assert_eq!(log_filter(0, true, None, some("debug"), None), "debug");
        assert_eq!(
            log_filter(0, true, None, some("trace"), some("warn")),
            "trace"
        );
        assert_eq!(log_filter(0, true, None, None, some("warn")), "warn");
        // -v beats RUST_LOG; DSOFTBUS_LOG beats everything.
        assert_eq!(log_filter(1, true, None, some("warn"), None), "debug");
        assert_eq!(
            log_filter(2, true, some("error"), some("warn"), some("info")),
            "error"
        );
        // Empty or unparsable values count as unset / fall back.
        assert_eq!(log_filter(0, true, some(""), some(" "), None), "info");
        assert_eq!(log_filter(0, true, None, some("[[bad"), None), "info");
    }

    #[test]
    fn ping_count_zero_is_a_usage_error() {
        let e = Cli::try_parse_from(["dsoftbus", "ping", "x", "-c", "0"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(Cli::try_parse_from(["dsoftbus", "ping", "x", "-c", "1"]).is_ok());
    }

    #[test]
    fn require_known_flag_forms() {
        let get = |args: &[&str]| match Cli::try_parse_from(args).unwrap().cmd {
            Command::Daemon(a) => a.require_known,
            _ => unreachable!(),
        };
        assert_eq!(get(&["dsoftbus", "daemon"]), None);
        assert_eq!(get(&["dsoftbus", "daemon", "--require-known"]), Some(true));
        assert_eq!(
            get(&["dsoftbus", "daemon", "--require-known=false"]),
            Some(false)
        );
        assert_eq!(
            get(&["dsoftbus", "daemon", "--require-known=0"]),
            Some(false)
        );
        assert!(Cli::try_parse_from(["dsoftbus", "daemon", "--require-known=maybe"]).is_err());
    }
}
