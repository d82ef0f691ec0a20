//! Registering the shim as an MCP server with the `claude` CLI:
//! `claude mcp add claudemesh --scope user -- <abs path to claudemesh-shim>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proc::{self, shell_quote};

/// The MCP server's name in Claude Code.
pub const SERVER_NAME: &str = "claudemesh";

/// `claude mcp …` can be slow (it may start the servers to check them).
const CLAUDE_TIMEOUT: Duration = Duration::from_secs(60);

/// The line to run by hand when `claude` is not on PATH.
pub fn add_line(shim: &Path) -> String {
    format!(
        "claude mcp add {SERVER_NAME} --scope user -- {}",
        shell_quote(&shim.to_string_lossy())
    )
}

pub fn remove_line() -> String {
    format!("claude mcp remove {SERVER_NAME} --scope user")
}

/// What registering did.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// `claude mcp get` already showed this shim.
    AlreadyThere,
    Added,
    /// A registration with another command was replaced.
    Replaced,
}

/// Registers `shim` with the `claude` at `claude`.
pub fn register(claude: &Path, shim: &Path) -> Result<Registered, String> {
    let shim_text = shim.to_string_lossy();
    // Read first: `claude mcp get` health-checks a registered server, and
    // our shim would open a session for it (see [`registered_command`]).
    if let Some(file) = claude_json_path()
        && let Ok(Some(cmd)) = registered_command(&file)
        && cmd == shim_text
    {
        return Ok(Registered::AlreadyThere);
    }
    let get = proc::run(claude, ["mcp", "get", SERVER_NAME], CLAUDE_TIMEOUT)
        .map_err(|e| format!("cannot run {}: {e}", claude.display()))?;
    let mut replaced = false;
    if get.success {
        if get.stdout.contains(shim_text.as_ref()) {
            return Ok(Registered::AlreadyThere);
        }
        // Registered with another path (an older install): replace it.
        let _ = proc::run(
            claude,
            ["mcp", "remove", SERVER_NAME, "--scope", "user"],
            CLAUDE_TIMEOUT,
        );
        replaced = true;
    }
    let add = proc::run(
        claude,
        [
            "mcp",
            "add",
            SERVER_NAME,
            "--scope",
            "user",
            "--",
            shim_text.as_ref(),
        ],
        CLAUDE_TIMEOUT,
    )
    .map_err(|e| format!("cannot run {}: {e}", claude.display()))?;
    if add.success {
        Ok(if replaced {
            Registered::Replaced
        } else {
            Registered::Added
        })
    } else {
        Err(format!("`{}` failed: {}", add_line(shim), add.output()))
    }
}

/// Removes the registration; `Ok(false)` when there was none.
pub fn unregister(claude: &Path) -> Result<bool, String> {
    let ran = proc::run(
        claude,
        ["mcp", "remove", SERVER_NAME, "--scope", "user"],
        CLAUDE_TIMEOUT,
    )
    .map_err(|e| format!("cannot run {}: {e}", claude.display()))?;
    if ran.success {
        return Ok(true);
    }
    let out = ran.output().to_lowercase();
    if out.contains("not found") || out.contains("no mcp server") || out.contains("does not exist")
    {
        Ok(false)
    } else {
        Err(format!("`{}` failed: {}", remove_line(), ran.output()))
    }
}

/// Where Claude Code keeps its MCP servers of user scope:
/// `$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`.
pub fn claude_json_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join(".claude.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".claude.json"))
}

/// The command our server is registered with at user scope (what
/// `install` writes), read from Claude Code's own file (for doctor).
///
/// Not `claude mcp list` or `claude mcp get`: both start every server to
/// check its health, and our shim would open a session, visible to the
/// whole mesh, for a check that needs none.
pub fn registered_command(file: &Path) -> Result<Option<String>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
    Ok(v.get("mcpServers")
        .and_then(|s| s.get(SERVER_NAME))
        .map(|server| {
            server
                .get("command")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        }))
}
