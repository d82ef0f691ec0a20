//! What most commands start from: the daemon's directories, the config,
//! the clock, and names for this machine.

use std::time::{SystemTime, UNIX_EPOCH};

use claudemesh_daemon::config::Config;
use claudemesh_daemon::keystore::Keystore;
use claudemesh_daemon::paths::Paths;

use crate::error::{CtlError, Exit, Result};
use crate::output;

pub fn paths() -> Result<Paths> {
    let paths = Paths::from_env().map_err(|e| CtlError::failure(e.to_string()))?;
    output::debug(format_args!(
        "config {} · data {} · runtime {}",
        paths.config_dir.display(),
        paths.data_dir.display(),
        paths.runtime_dir.display()
    ));
    Ok(paths)
}

pub fn load_config(paths: &Paths) -> Result<Config> {
    Config::load(&paths.config_file()).map_err(|e| CtlError::failure(e.to_string()))
}

pub fn save_config(paths: &Paths, config: &Config) -> Result<()> {
    config
        .save(&paths.config_file())
        .map_err(|e| CtlError::failure(e.to_string()))
}

/// Opens the keystore, printing its fallback notice (keys in files) when it
/// has one and `announce` is set: once per machine (per data directory);
/// `status` and `doctor` keep saying it.
pub fn keystore(paths: &Paths, announce: bool) -> Result<Keystore> {
    let keystore = Keystore::open(paths).map_err(|e| CtlError::failure(e.to_string()))?;
    output::debug(format_args!("keystore: {}", keystore.location()));
    if announce && let Some(w) = keystore.warning() {
        let said = paths.data_dir.join(KEYSTORE_NOTICE_SAID);
        if said.exists() {
            output::debug(format_args!("keystore notice (said before): {w}"));
        } else {
            output::warn(w);
            let _ = Paths::ensure_private_dir(&paths.data_dir)
                .map_err(|e| e.to_string())
                .and_then(|()| std::fs::write(&said, b"").map_err(|e| e.to_string()));
        }
    }
    Ok(keystore)
}

/// Marks that the keystore fallback notice was printed on this machine.
const KEYSTORE_NOTICE_SAID: &str = "keystore-notice-said";

/// The mesh named `slug_or_id`, or the "not joined" error.
pub fn not_joined(config: &Config, slug_or_id: &str) -> CtlError {
    let known: Vec<&str> = config.meshes.iter().map(|m| m.slug.as_str()).collect();
    let hint = if known.is_empty() {
        "no mesh is joined; join one with `claudemesh-ctl join <ic://join/…>`".to_owned()
    } else {
        format!(
            "joined meshes: {} (see `claudemesh-ctl list`)",
            known.join(", ")
        )
    };
    CtlError::new(
        Exit::NotJoined,
        format!("no joined mesh is called `{slug_or_id}`"),
    )
    .hint(hint)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}

/// This machine's name, short form.
pub fn hostname() -> String {
    let short = claudemesh_daemon::host::host_name()
        .split('.')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if short.is_empty() {
        "localhost".into()
    } else {
        short
    }
}

pub fn username() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "user".into())
}

/// The name ctl uses in `mesh` (slug or id; `None`: the default mesh).
pub fn name_in(config: &Config, mesh: Option<&str>) -> String {
    let entry = match mesh {
        Some(m) => config.meshes.iter().find(|e| e.slug == m || e.mesh_id == m),
        None => config.default_mesh(),
    };
    entry
        .and_then(|e| e.display_name.clone())
        .unwrap_or_else(|| format!("{}@{}", username(), hostname()))
}
