//! envoy2mqtt: reads an Enphase Envoy / IQ Gateway over its local HTTPS API and publishes
//! what it measures to MQTT. Synchronous, one thread.
//!
//! Code map, in the order data flows (Envoy → readings → ledger → messages → output):
//! - Start: [`cli`] (the command line), [`config`] (every setting, validated once; it also
//!   reads the PEM files and the zone it names, so a bad one is a configuration error) over
//!   [`setting`] (the table of settings) and [`value`] (value parsers); [`error`] (the one
//!   error type, whose kind decides the exit code).
//! - The runs: [`service`] (the loop: ticks, commands, reloads), with [`schedule`] (tick and
//!   back-off arithmetic, pure) and [`signal`] (SIGTERM, SIGHUP); [`once`] (`--once`);
//!   [`check`] and [`diagnose`] (the reports).
//! - Edges that do I/O: [`envoy`] (the HTTPS client, with [`connector`] and [`certificate`]
//!   for the self-signed certificate, [`token`] and [`cloud`] for the JWT); [`output`]
//!   (where messages go: the broker or stdout) over [`mqtt`] (the MQTT session), [`link`]
//!   (its socket, plain or TLS) and [`packet`] (the PUBLISH encoder, pure); [`state`] (0600
//!   files in `STATE_DIR`, read-only for `--dry-run` and `--check`); [`archive`] (where the
//!   ledger is kept between runs); [`inventory`] (the Home Assistant entities announced);
//!   [`zone`] (reads the system's time zone; its date arithmetic is pure); [`allocator`]
//!   (the system's, keeping freed blocks of TLS-record size for the next record).
//! - The pure core: [`info`] (`/info` XML), [`answer`] (the Envoy's JSON answers) and
//!   [`scan`] (a raw tick's read of the readings), [`jwt`]
//!   (token claims), [`source`] (where production comes from, layout by layout),
//!   [`reading`] (meters and readings → fields), [`sensor`] and [`ledger`] (daily, monthly,
//!   yearly energy), [`tariff`] (off-peak windows), [`topic`] (every topic), [`message`]
//!   and [`payload`] (fields → messages), [`discovery`] and [`entity`] (Home Assistant),
//!   [`command`] (incoming commands).
//!
//! The modules are in the library (`lib.rs`), so that the fuzz targets reach the parsers;
//! `main` only parses, runs and maps errors to exit codes: 0 ok, 1 runtime, 2 configuration.

use std::process::ExitCode;

use envoy2mqtt::allocator::Allocator;
use envoy2mqtt::cli::{self, Command};
use envoy2mqtt::error::{Error, Result};
use envoy2mqtt::{check, config, diagnose, once, service};

#[global_allocator]
static ALLOCATOR: Allocator = Allocator::new();

/// Reads the settings from the environment and `--config` on top of the flags, validates
/// them, and starts logging at `LOG_LEVEL`.
fn load(
    mut sources: config::Sources,
    config_file: Option<&std::path::Path>,
) -> Result<(config::Config, config::Sources)> {
    sources.environment(|name| std::env::var(name).ok());
    if let Some(path) = config_file {
        let text = read_settings(path)?;
        sources.file(&path.display().to_string(), &text)?;
    }
    let config = sources.validate()?;
    // Only our own lines: ureq's trace output hex-dumps requests, bearer token and cookie included.
    let log_config = simplelog::ConfigBuilder::new()
        .add_filter_allow_str("envoy2mqtt")
        .set_time_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // The logger passes everything; the level is the `log` crate's, which a reload changes.
    let _ = simplelog::WriteLogger::init(log::LevelFilter::Trace, log_config, std::io::stderr());
    log::set_max_level(config.log_level);
    Ok((config, sources))
}

/// The largest `--config` file: a settings file is a few KB; anything bigger is a mistake
/// (`--config /dev/zero` would read for ever).
const MAX_SETTINGS_FILE: u64 = 64 * 1024;

/// The text of a `--config` file: a regular file of at most 64 KiB, in UTF-8.
fn read_settings(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let refuse = |problem: String| {
        Error::config(
            "--config",
            problem,
            "give the path of a readable KEY=VALUE file (at most 64 KiB)",
        )
    };
    let name = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| refuse(format!("{name} cannot be read ({e})")))?;
    if !meta.is_file() {
        return Err(refuse(format!("{name} is not a regular file")));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SETTINGS_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| refuse(format!("{name} cannot be read ({e})")))?;
    if bytes.len() as u64 > MAX_SETTINGS_FILE {
        return Err(refuse(format!("{name} is larger than 64 KiB")));
    }
    String::from_utf8(bytes).map_err(|_| refuse(format!("{name} is not UTF-8 text")))
}

fn run() -> Result<ExitCode> {
    let args = cli::parse(std::env::args_os().skip(1))?;
    if matches!(
        args.command,
        Command::Check | Command::Run { dry_run: true, .. }
    ) {
        envoy2mqtt::state::read_only();
    }
    let file = args.config_file.as_deref();
    match args.command {
        Command::Help => print!("{}", cli::help()),
        Command::Version => println!("envoy2mqtt {}", env!("CARGO_PKG_VERSION")),
        Command::Check => {
            let (config, sources) = load(args.flags, file)?;
            if !check::run(&config, &sources)? {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Diagnose(dir) => diagnose::run(&load(args.flags, file)?.0, &dir)?,
        Command::Run {
            once: true,
            dry_run,
        } => once::run(&load(args.flags, file)?.0, dry_run)?,
        Command::Run {
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
