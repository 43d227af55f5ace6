//! envoy2mqtt's program: parses the command line, loads the settings, runs what was asked,
//! and maps errors to exit codes: 0 ok, 1 runtime, 2 configuration. The map of the code is
//! in docs/design.md.

// The allocator is the program's one `unsafe` (a global allocator is an `unsafe` trait).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod allocator;

use std::path::Path;
use std::process::ExitCode;

use envoy2mqtt::cli::{self, Mode};
use envoy2mqtt::{Config, Error, Result, Sources, check, diagnose, once, service};

#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator::new();

/// The settings, validated, with logging started at `LOG_LEVEL`.
fn load(flags: Sources, config_file: Option<&Path>) -> Result<(Config, Sources)> {
    let (config, sources) = envoy2mqtt::load(flags, config_file)?;
    // A time on each line, unless systemd's journal (which adds its own) takes the output.
    let stamps = config
        .log_timestamps
        .unwrap_or_else(|| std::env::var_os("JOURNAL_STREAM").is_none());
    // simplelog puts the time on lines at this level and the more verbose ones.
    let time = if stamps {
        log::LevelFilter::Error
    } else {
        log::LevelFilter::Off
    };
    // Only our own lines: ureq's trace output hex-dumps requests, bearer token and cookie included.
    let log_config = simplelog::ConfigBuilder::new()
        .add_filter_allow_str("envoy2mqtt")
        .set_time_format_rfc3339()
        .set_time_level(time)
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // The logger passes everything; the level is the `log` crate's, which a reload changes.
    let _ = simplelog::WriteLogger::init(log::LevelFilter::Trace, log_config, std::io::stderr());
    log::set_max_level(config.log_level);
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    Ok((config, sources))
}

fn run() -> Result<ExitCode> {
    let args = cli::parse(std::env::args_os().skip(1))?;
    if matches!(args.mode, Mode::Check | Mode::Run { dry_run: true, .. }) {
        envoy2mqtt::read_only();
    }
    let file = args.config_file.as_deref();
    match args.mode {
        Mode::Help => print!("{}", cli::help()),
        Mode::Version => println!("envoy2mqtt {}", env!("CARGO_PKG_VERSION")),
        Mode::Check => {
            let (config, sources) = load(args.flags, file)?;
            if !check::run(&config, &sources)? {
                return Ok(ExitCode::from(1));
            }
        }
        Mode::Diagnose(dir) => diagnose::run(&load(args.flags, file)?.0, &dir)?,
        Mode::Run {
            once: true,
            dry_run,
        } => once::run(&load(args.flags, file)?.0, dry_run)?,
        Mode::Run {
            once: false,
            dry_run,
        } => {
            let flags = args.flags.clone();
            let config = load(args.flags, file)?.0;
            // SIGHUP and P/command/reload: the same flags, the environment and the file, again.
            let reload = || load(flags.clone(), file).map(|(c, _)| c);
            service::run(config, dry_run, &reload)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(Error::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("envoy2mqtt: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
