//! Registering the shim as an MCP server with the `claude` CLI:
//! `claude mcp add claudemesh --scope user -- <abs path to claudemesh-shim>`.

use std::path::Path;
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

/// Whether `claude mcp list` mentions our server (for doctor).
pub fn is_listed(claude: &Path) -> Result<bool, String> {
    let ran = proc::run(claude, ["mcp", "list"], CLAUDE_TIMEOUT)
        .map_err(|e| format!("cannot run {}: {e}", claude.display()))?;
    if !ran.success {
        return Err(format!("`claude mcp list` failed: {}", ran.output()));
    }
    Ok(ran.stdout.lines().any(|l| {
        l.trim_start().starts_with(&format!("{SERVER_NAME}:"))
            || l.split_whitespace().next() == Some(SERVER_NAME)
    }))
}
