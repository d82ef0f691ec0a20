//! What the shim learns from its environment at start: where the daemon
//! is, and who this session is (the attach arguments).

use std::path::Path;

use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::ipc::AttachArgs;

/// The display name peers see; default `<project folder>@<short host>`.
pub const ENV_DISPLAY_NAME: &str = "CLAUDEMESH_DISPLAY_NAME";
/// The mesh to join (slug or id); default: the daemon's default mesh.
pub const ENV_MESH: &str = "CLAUDEMESH_MESH";
/// Comma-separated groups to join on attach (`backend,api`).
pub const ENV_GROUPS: &str = "CLAUDEMESH_GROUPS";
/// For tests and wrappers: the pid of the Claude Code process this session
/// belongs to, instead of the shim's parent. The daemon still checks it is
/// an ancestor of the shim.
pub const ENV_CLAUDE_PID: &str = "CLAUDEMESH_CLAUDE_PID";
/// Channel pushes: `1`/`on` always, `0`/`off` never, `auto` (default) when
/// the Claude Code command line enables channels.
pub const ENV_CHANNEL: &str = "CLAUDEMESH_CHANNEL";
/// `1`: verbose logs on stderr.
pub const ENV_DEBUG: &str = "CLAUDEMESH_DEBUG";

/// The name the shim gives itself in the daemon's hello.
pub const CLIENT_NAME: &str = concat!("claudemesh-shim/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the daemon's files are; an error here is reported by every
    /// tool call (it names the variable to fix).
    pub paths: Result<Paths, String>,
    pub attach: AttachArgs,
    /// Whether to push inbound messages as `notifications/claude/channel`.
    pub channel: Channel,
}

/// Whether Claude Code shows channel notifications. While channels are a
/// research preview, Claude Code shows a server's pushes only when started
/// with `--channels …` or `--dangerously-load-development-channels …`.
/// A push Claude Code drops is not lost (the other paths still show it
/// unless the transcript holds it), but it is wasted work, so by default
/// the shim pushes only when its Claude Code process was started with one
/// of those flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    On,
    Off,
    /// Decide from the command line of this Claude Code process.
    Auto {
        claude_pid: u32,
    },
}

impl Channel {
    fn from_setting(value: Option<&str>, claude_pid: u32) -> Channel {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("1" | "on" | "true" | "yes") => Channel::On,
            Some("0" | "off" | "false" | "no") => Channel::Off,
            _ => Channel::Auto { claude_pid },
        }
    }

    /// Resolves `Auto` by reading the Claude Code command line (once; the
    /// caller keeps the answer).
    pub fn enabled(self) -> bool {
        match self {
            Channel::On => true,
            Channel::Off => false,
            Channel::Auto { claude_pid } => {
                let on = command_line(claude_pid).is_some_and(|c| enables_channels(&c));
                tracing::debug!(claude_pid, on, "channel notifications (auto)");
                on
            }
        }
    }
}

/// True when a Claude Code command line turns channels on.
pub fn enables_channels(command_line: &str) -> bool {
    command_line.split(['\0', ' ']).any(|arg| {
        let flag = arg.split('=').next().unwrap_or_default();
        flag == "--channels" || flag == "--dangerously-load-development-channels"
    })
}

/// The command line of `pid`, arguments separated by NUL (Linux) or spaces.
fn command_line(pid: u32) -> Option<String> {
    if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let out = std::process::Command::new("ps")
        .args(["-o", "args=", "-p", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".to_owned());
        let display_name = var(ENV_DISPLAY_NAME)
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|| default_display_name(Path::new(&cwd), &short_host()));
        let claude_pid = var(ENV_CLAUDE_PID)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(parent_pid);
        let groups = var(ENV_GROUPS)
            .map(|g| {
                g.split(',')
                    .map(|s| s.trim().trim_start_matches('@').to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let channel = Channel::from_setting(var(ENV_CHANNEL).as_deref(), claude_pid);
        let transcript_path = crate::transcript::transcript_path(var, &cwd);
        Settings {
            paths: Paths::from_env().map_err(|e| e.to_string()),
            attach: AttachArgs {
                mesh: var(ENV_MESH).map(|m| m.trim().to_owned()),
                display_name: Some(display_name),
                cwd,
                claude_pid,
                groups,
                transient: false,
                transcript_path,
            },
            channel,
        }
    }
}

/// `<project folder>@<short host>`, e.g. `api@laptop`.
pub fn default_display_name(cwd: &Path, host: &str) -> String {
    let folder = cwd
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "session".to_owned());
    if host.is_empty() {
        folder
    } else {
        format!("{folder}@{host}")
    }
}

/// The host name up to its first dot.
pub fn short_host() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .unwrap_or_default();
    full.trim().split('.').next().unwrap_or_default().to_owned()
}

#[cfg(unix)]
fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

#[cfg(not(unix))]
fn parent_pid() -> u32 {
    // No portable parent pid: the daemon resolves sessions by ancestry there.
    0
}

pub fn debug_enabled() -> bool {
    std::env::var(ENV_DEBUG).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_is_folder_at_host() {
        assert_eq!(
            default_display_name(Path::new("/home/u/api"), "laptop"),
            "api@laptop"
        );
        assert_eq!(default_display_name(Path::new("/"), "box"), "session@box");
        assert_eq!(default_display_name(Path::new("/srv/web"), ""), "web");
    }

    #[test]
    fn channel_setting_and_detection() {
        assert_eq!(Channel::from_setting(Some("1"), 7), Channel::On);
        assert_eq!(Channel::from_setting(Some("OFF"), 7), Channel::Off);
        assert_eq!(
            Channel::from_setting(None, 7),
            Channel::Auto { claude_pid: 7 }
        );
        assert_eq!(
            Channel::from_setting(Some("auto"), 7),
            Channel::Auto { claude_pid: 7 }
        );
        assert!(enables_channels(
            "node\0/usr/bin/claude\0--dangerously-load-development-channels\0server:claudemesh\0"
        ));
        // The native binary (npm 2.1.x installs bin/claude.exe) and the
        // node-based CLI of older releases.
        assert!(enables_channels(
            "/usr/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe\0--dangerously-load-development-channels\0server:claudemesh\0"
        ));
        assert!(enables_channels(
            "node\0/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js\0--channels\0plugin:x\0"
        ));
        assert!(enables_channels("claude --channels=plugin:x"));
        assert!(!enables_channels("claude\0--resume\0"));
        assert!(!enables_channels("claude --channelsfoo"));
    }
}
