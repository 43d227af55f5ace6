//! The command line (docs/settings.md): what to do, and the settings given as flags.

use std::ffi::OsString;
use std::path::PathBuf;

use super::sources::Sources;
use super::table;
use crate::error::{Error, Result};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Run { once: bool, dry_run: bool },
    Check,
    Diagnose(PathBuf),
    Version,
    Help,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    pub mode: Mode,
    pub config_file: Option<PathBuf>,
    /// Settings given as `--mqtt-host x`.
    pub flags: Sources,
}

/// The value of `--{name}`, never an option (`--diagnose --config x` is a missing folder,
/// not a folder named `--config`).
fn path_value(parser: &mut lexopt::Parser, name: &str) -> Result<OsString> {
    let value = parser
        .value()
        .map_err(|_| Error::Usage(format!("--{name} needs a value")))?;
    if value.to_string_lossy().starts_with("--") {
        return Err(Error::Usage(format!(
            "--{name} needs a value, not the option {}",
            value.to_string_lossy()
        )));
    }
    Ok(value)
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let (mut once, mut dry_run, mut check) = (false, false, false);
    let mut diagnose = None;
    let mut config_file = None;
    let mut flags = Sources::default();
    let mut other = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("once") => once = true,
            Long("dry-run") => dry_run = true,
            Long("check") => check = true,
            Long("diagnose") => {
                diagnose = Some(PathBuf::from(path_value(&mut parser, "diagnose")?))
            }
            Long("config") => config_file = Some(PathBuf::from(path_value(&mut parser, "config")?)),
            Long("version") | Short('V') => other = Some(Mode::Version),
            Long("help") | Short('h') => other = Some(Mode::Help),
            Long(name) => {
                let name = name.to_string();
                // An unknown option is said first, before it can take the next one as its value.
                if !table::SETTINGS.iter().any(|s| table::flag_name(s) == name) {
                    return Err(Error::Usage(format!("unknown option --{name}")));
                }
                let value = parser
                    .value()
                    .map_err(|_| Error::Usage(format!("--{name} needs a value")))?
                    .into_string()
                    .map_err(|_| {
                        Error::Usage(format!("the value of --{name} is not valid UTF-8"))
                    })?;
                if value.starts_with("--") {
                    return Err(Error::Usage(format!(
                        "--{name} needs a value, not the option {value}"
                    )));
                }
                flags.flag(&name, value)?;
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let mode = match (other, check, diagnose) {
        (Some(c), _, _) => c,
        (None, true, None) if !once && !dry_run => Mode::Check,
        (None, false, Some(dir)) if !once && !dry_run => Mode::Diagnose(dir),
        (None, false, None) => Mode::Run { once, dry_run },
        _ => {
            return Err(Error::Usage(
                "--check and --diagnose run alone: they cannot be combined with each other, --once or --dry-run".into(),
            ));
        }
    };
    Ok(Args {
        mode,
        config_file,
        flags,
    })
}

/// The `--help` text, with every setting and its flag.
pub fn help() -> String {
    let mut text = format!(
        "envoy2mqtt {}: Enphase Envoy / IQ Gateway to MQTT bridge

usage:
  envoy2mqtt                  run as a service (raw poll every RAW_DATA_INTERVAL_SECONDS,
                              data poll every DATA_INTERVAL_SECONDS)
  envoy2mqtt --once           one data poll, publish, exit (for cron)
  envoy2mqtt --dry-run        print `topic [retained] payload` instead of publishing
  envoy2mqtt --check          check the configuration, the Envoy and the broker; exit 0 or 1
  envoy2mqtt --diagnose DIR   save the Envoy's raw answers into DIR for a bug report
  envoy2mqtt --config FILE    read KEY=VALUE settings from FILE
  envoy2mqtt --version | --help

settings (flag > environment > --config file > default); secrets (*) only in the
environment or the --config file:
",
        env!("CARGO_PKG_VERSION")
    );
    for s in table::SETTINGS {
        let flag = if s.secret {
            "(*)".to_string()
        } else {
            format!("--{}", table::flag_name(s))
        };
        let default = if s.default.is_empty() {
            String::new()
        } else {
            format!(" [{}]", s.default)
        };
        text.push_str(&format!(
            "  {:<27} {:<29} {}{default}\n",
            s.name, flag, s.help
        ));
    }
    text.push_str("\nexit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        parse(list.iter().map(OsString::from))
    }

    #[test]
    fn commands() {
        let cases: &[(&[&str], Mode)] = &[
            (
                &[],
                Mode::Run {
                    once: false,
                    dry_run: false,
                },
            ),
            (
                &["--once", "--dry-run"],
                Mode::Run {
                    once: true,
                    dry_run: true,
                },
            ),
            (
                &["--dry-run"],
                Mode::Run {
                    once: false,
                    dry_run: true,
                },
            ),
            (&["--check"], Mode::Check),
            (&["--diagnose", "/tmp/d"], Mode::Diagnose("/tmp/d".into())),
            (&["--version"], Mode::Version),
            (&["--once", "-h"], Mode::Help),
        ];
        for (list, want) in cases {
            assert_eq!(&args(list).unwrap().mode, want, "{list:?}");
        }
        let a = args(&["--config", "/etc/e.env", "--mqtt-host", "b"]).unwrap();
        assert_eq!(a.config_file, Some("/etc/e.env".into()));
        assert_eq!(a.flags.validate().unwrap().mqtt.host, "b");
    }

    #[test]
    fn usage_errors_exit_2() {
        let cases: &[&[&str]] = &[
            &["--check", "--once"],
            &["--check", "--diagnose", "x"],
            &["--diagnose"],
            &["--bogus", "x"],
            &["--mqtt-host"],
            &["stray"],
            &["--mqtt-password", "secret"],
        ];
        for list in cases {
            let e = args(list).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{list:?}: {e}");
            assert!(!e.to_string().contains("secret"));
        }
    }

    #[test]
    fn unknown_options_are_named_first() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "unknown option --bogus"),
            (&["--dryrun", "--once"], "unknown option --dryrun"),
            (&["--once", "--dryrun"], "unknown option --dryrun"),
            (
                &["--mqtt-host", "--once"],
                "--mqtt-host needs a value, not the option --once",
            ),
            (
                &["--diagnose", "--config", "x"],
                "--diagnose needs a value, not the option --config",
            ),
            (
                &["--config", "--once"],
                "--config needs a value, not the option --once",
            ),
        ];
        for (list, want) in cases {
            let e = args(list).unwrap_err().to_string();
            assert!(e.contains(want), "{list:?}: {e}");
        }
    }

    #[test]
    fn help_lists_every_setting() {
        let h = help();
        for s in table::SETTINGS {
            assert!(h.contains(s.name), "{}", s.name);
        }
        assert!(h.contains("--mqtt-host") && !h.contains("--mqtt-password"));
    }
}
