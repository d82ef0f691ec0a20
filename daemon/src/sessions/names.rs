//! What a session may call itself, and what it is called by default.

use std::path::Path;

use claudemesh_protocol::ipc::{AttachArgs, IpcError, IpcErrorCode};

use crate::host::host_name;

/// Longest display name, cwd, group name, and group count accepted: the
/// broker's limits, so that what attaches here is never refused there.
use claudemesh_protocol::limits::{
    MAX_CWD_BYTES, MAX_DISPLAY_NAME_CHARS as MAX_NAME_CHARS, MAX_GROUPS_PER_SESSION as MAX_GROUPS,
};

/// Refuses attach arguments that the broker would refuse or that make no
/// sense, with a sentence saying which.
pub fn validate_attach(args: &AttachArgs) -> Result<(), IpcError> {
    let bad = |m: String| Err(IpcError::new(IpcErrorCode::Malformed, m));
    if let Some(name) = &args.display_name {
        let n = name.trim();
        if n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
            return bad(format!(
                "a display name is at most {MAX_NAME_CHARS} printable characters"
            ));
        }
    }
    if args.cwd.len() > MAX_CWD_BYTES {
        return bad(format!("cwd is longer than {MAX_CWD_BYTES} bytes"));
    }
    if args.cwd.chars().any(char::is_control) {
        return bad("cwd must not contain control characters".into());
    }
    if args.groups.len() > MAX_GROUPS {
        return bad(format!("a session joins at most {MAX_GROUPS} groups"));
    }
    for g in &args.groups {
        validate_group(g)?;
    }
    if let Some(mesh) = &args.mesh
        && mesh.len() > 256
    {
        return bad("the mesh name is too long".into());
    }
    if let Some(path) = &args.transcript_path {
        validate_transcript_path(path)?;
    }
    Ok(())
}

/// A transcript path (from the shim's attach or a hook): absolute, at most
/// [`MAX_CWD_BYTES`], no control characters.
pub fn validate_transcript_path(path: &str) -> Result<(), IpcError> {
    if path.len() > MAX_CWD_BYTES || !path.starts_with('/') || path.chars().any(char::is_control) {
        return Err(IpcError::new(
            IpcErrorCode::Malformed,
            format!(
                "transcriptPath must be an absolute path of at most {MAX_CWD_BYTES} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// A group name: 1 to 64 printable characters, no `@` prefix needed.
pub fn validate_group(g: &str) -> Result<(), IpcError> {
    if g.is_empty() || g.chars().count() > MAX_NAME_CHARS || g.chars().any(char::is_control) {
        return Err(IpcError::new(
            IpcErrorCode::Malformed,
            format!("a group name is 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// "<project folder>@<host>", something a person recognises.
pub fn default_display_name(cwd: &str) -> String {
    let folder = Path::new(cwd)
        .file_name()
        .and_then(|f| f.to_str())
        .filter(|f| !f.is_empty())
        .unwrap_or("session");
    let host = host_name();
    let short_host = host.split('.').next().unwrap_or(&host);
    let name = if short_host.is_empty() {
        folder.to_owned()
    } else {
        format!("{folder}@{short_host}")
    };
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AttachArgs {
        AttachArgs {
            mesh: None,
            display_name: None,
            cwd: "/home/u/api".into(),
            claude_pid: 1,
            groups: vec![],
            transient: false,
            transcript_path: None,
        }
    }

    #[test]
    fn default_names_use_the_folder_and_host() {
        let n = default_display_name("/home/u/api");
        assert!(n.starts_with("api"), "{n}");
        assert!(default_display_name("/").starts_with("session"));
        assert!(default_display_name(&"x".repeat(500)).chars().count() <= 64);
    }

    #[test]
    fn bad_attach_arguments_are_refused() {
        assert!(validate_attach(&args()).is_ok());
        let mut a = args();
        a.display_name = Some("x".repeat(65));
        assert!(validate_attach(&a).is_err());
        let mut a = args();
        a.groups = vec![String::new()];
        assert!(validate_attach(&a).is_err());
        let mut a = args();
        a.display_name = Some("bad\nname".into());
        assert_eq!(validate_attach(&a).unwrap_err().code, "malformed");
    }
}
