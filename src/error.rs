//! The one error type of the application.
//!
//! Every message says what went wrong and what to do about it, on one line, and never
//! carries a secret. `main` maps each kind to an exit code: configuration and usage
//! errors exit 2, everything that goes wrong at run time exits 1.

use std::fmt;

/// Everything that can stop envoy2mqtt or one of its polls.
pub enum Error {
    /// A setting has a value that cannot work. Exit code 2.
    Config {
        /// The setting's name, as in the environment (`MQTT_PORT`).
        setting: String,
        /// What is wrong with the value.
        problem: String,
        /// What the user should do.
        fix: String,
    },
    /// The command line itself is wrong. Exit code 2.
    Usage(String),
    /// The Envoy could not be reached or gave an answer that cannot be used.
    Envoy(String),
    /// No token could be obtained or the Envoy refused it.
    Token(String),
    /// The Envoy's certificate is not the pinned one.
    Certificate(String),
    /// The broker could not be reached, refused us, or lost messages.
    Broker(String),
    /// A file in `STATE_DIR` (or a `--diagnose` folder) could not be read or written.
    File(String),
    /// Standard output was closed by its reader (`--dry-run | head`): a normal end, exit 0.
    OutputClosed,
}

impl Error {
    /// A configuration error: `setting` has a value with `problem`; `fix` says what to do.
    pub fn config(setting: &str, problem: impl Into<String>, fix: impl Into<String>) -> Error {
        Error::Config {
            setting: setting.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// An I/O error on `path`, while doing `what`.
    pub fn file(what: &str, path: &std::path::Path, err: &std::io::Error) -> Error {
        Error::File(format!(
            "cannot {what} {}: {err}; check that the folder exists and envoy2mqtt may write to it (STATE_DIR)",
            path.display()
        ))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) => 2,
            Error::OutputClosed => 0,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
                setting,
                problem,
                fix,
            } => write!(f, "configuration: {setting} {problem}; {fix}"),
            Error::Usage(msg) => write!(f, "usage: {msg}; see envoy2mqtt --help"),
            Error::Envoy(msg) => write!(f, "envoy: {msg}"),
            Error::Token(msg) => write!(f, "token: {msg}"),
            Error::Certificate(msg) => write!(f, "certificate: {msg}"),
            Error::Broker(msg) => write!(f, "mqtt: {msg}"),
            Error::File(msg) => write!(f, "file: {msg}"),
            Error::OutputClosed => write!(f, "standard output closed"),
        }
    }
}

// Like lexopt: `Debug` is the message, so `main` returning an error prints something useful.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<lexopt::Error> for Error {
    fn from(err: lexopt::Error) -> Error {
        Error::Usage(err.to_string())
    }
}

/// The result type of the application.
pub type Result<T, E = Error> = std::result::Result<T, E>;
