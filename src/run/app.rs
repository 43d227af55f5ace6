//! The settings as the program starts: in a Home Assistant App (`SUPERVISOR_TOKEN` set and
//! an options file), the App's options and the broker its Supervisor offers come first;
//! then, as everywhere, the flags, the environment and a `--config` file, validated.

use std::path::Path;

use crate::error::Result;
use crate::homeassistant::supervisor;
use crate::settings::app::data_dir;
use crate::settings::{self, Config, Sources};

/// The validated settings, and where each came from (for `--check`).
pub fn load(mut sources: Sources, config_file: Option<&Path>) -> Result<(Config, Sources)> {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(dir) = data_dir(env) {
        sources.app(&dir)?;
        sources.environment(env);
        // The options or the environment may name a broker; else the Supervisor's.
        if sources.origin("MQTT_HOST") == settings::Origin::Default {
            let url = env("SUPERVISOR_URL").unwrap_or_else(|| "http://supervisor".into());
            let token = env("SUPERVISOR_TOKEN").unwrap_or_default();
            let b = supervisor::mqtt_service(&url, token.trim())?;
            let login = b.username.as_deref().zip(b.password.as_deref());
            sources.app_broker(&b.host, b.port, login, b.ssl);
        }
    }
    settings::load(sources, config_file)
}
