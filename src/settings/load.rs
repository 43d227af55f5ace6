//! Loading the settings: the flags, then the environment, then a `--config` file (a
//! regular file of at most 64 KiB, in UTF-8), validated into a [`Config`].

use std::io::Read;
use std::path::Path;

use super::config::Config;
use super::sources::Sources;
use crate::error::{Error, Result};

/// The largest `--config` file: a settings file is a few KB; anything bigger is a mistake
/// (`--config /dev/zero` would read for ever).
const MAX_SETTINGS_FILE: u64 = 64 * 1024;

/// The settings from `flags`, the environment and `config_file`, validated; the sources
/// are kept for `--check`, which says where each value came from.
pub fn load(mut sources: Sources, config_file: Option<&Path>) -> Result<(Config, Sources)> {
    sources.environment(|name| std::env::var(name).ok());
    if let Some(path) = config_file {
        let text = read_file(path)?;
        sources.file(&path.display().to_string(), &text)?;
    }
    let config = sources.validate()?;
    Ok((config, sources))
}

/// The text of a `--config` file.
fn read_file(path: &Path) -> Result<String> {
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
