//! Where Claude Code writes this session's transcript, found from the
//! environment it gives its MCP servers (2.1.197 and 2.1.332 both set
//! `CLAUDE_CODE_SESSION_ID` and `CLAUDE_PROJECT_DIR`):
//! `<CLAUDE_CONFIG_DIR or ~/.claude>/projects/<project dir, every character
//! but ASCII letters and digits replaced by ->/<session id>.jsonl`. A
//! project folder name over 200 characters gets a hash suffix from Claude
//! Code; that folder is found by its first 200 characters when it is the
//! only one. The daemon reads the transcript to tell a push the model was
//! shown from one Claude Code dropped (`docs/shim.md`).

use std::path::{Path, PathBuf};

/// Claude Code's session id, in its MCP servers' environment.
pub const ENV_SESSION_ID: &str = "CLAUDE_CODE_SESSION_ID";
/// The project directory Claude Code runs in.
pub const ENV_PROJECT_DIR: &str = "CLAUDE_PROJECT_DIR";
/// Claude Code's configuration directory (default `~/.claude`).
pub const ENV_CONFIG_DIR: &str = "CLAUDE_CONFIG_DIR";

/// Claude Code keeps project folder names to this many characters.
const MAX_FOLDER_CHARS: usize = 200;

/// The transcript of this session, from `var` (the environment) and the
/// shim's `cwd` (when Claude Code names no project directory). `None`
/// when Claude Code gave no session id, or no folder fits.
pub fn transcript_path(var: impl Fn(&str) -> Option<String>, cwd: &str) -> Option<String> {
    let session = var(ENV_SESSION_ID)?;
    let plain = !session.is_empty()
        && session.len() <= 128
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return None;
    }
    let config = match var(ENV_CONFIG_DIR) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(var("HOME")?).join(".claude"),
    };
    let project = var(ENV_PROJECT_DIR).unwrap_or_else(|| cwd.to_owned());
    let projects = config.join("projects");
    let folder = project_folder(&projects, &project)?;
    let path = projects.join(folder).join(format!("{session}.jsonl"));
    path.is_absolute()
        .then(|| path.to_str().map(str::to_owned))
        .flatten()
}

/// Claude Code's folder name for a project directory: each UTF-16 unit
/// that is not an ASCII letter or digit becomes `-`.
fn folder_name(project: &str) -> String {
    project
        .chars()
        .flat_map(|c| {
            let n = if c.is_ascii_alphanumeric() {
                0
            } else {
                c.len_utf16()
            };
            std::iter::repeat_n('-', n).chain((n == 0).then_some(c))
        })
        .collect()
}

/// The folder under `projects` for `project`.
fn project_folder(projects: &Path, project: &str) -> Option<String> {
    let name = folder_name(project);
    if name.len() <= MAX_FOLDER_CHARS {
        return Some(name);
    }
    let prefix = format!("{}-", &name[..MAX_FOLDER_CHARS]);
    let mut found = std::fs::read_dir(projects)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|f| f.starts_with(&prefix));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn the_path_claude_code_writes() {
        // As seen in a real run of 2.1.332:
        // ~/.claude/projects/-tmp-cenv-home-work-proj/<session>.jsonl
        let e = env(&[
            ("HOME", "/tmp/cenv/home"),
            (ENV_SESSION_ID, "30a0151c-ba7b-4b7b-ac6b-9f88437b0911"),
            (ENV_PROJECT_DIR, "/tmp/cenv/home/work/proj"),
        ]);
        assert_eq!(
            transcript_path(e, "/elsewhere").as_deref(),
            Some(
                "/tmp/cenv/home/.claude/projects/-tmp-cenv-home-work-proj/30a0151c-ba7b-4b7b-ac6b-9f88437b0911.jsonl"
            )
        );
        let e = env(&[
            (ENV_CONFIG_DIR, "/cfg"),
            (ENV_SESSION_ID, "s1"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            transcript_path(e, "/w/my_app.v2").as_deref(),
            Some("/cfg/projects/-w-my-app-v2/s1.jsonl")
        );
    }

    #[test]
    fn no_session_id_or_an_odd_one_gives_none() {
        assert_eq!(transcript_path(env(&[("HOME", "/h")]), "/w"), None);
        let e = env(&[("HOME", "/h"), (ENV_SESSION_ID, "../../etc/passwd")]);
        assert_eq!(transcript_path(e, "/w"), None);
        let e = env(&[("HOME", "rel"), (ENV_SESSION_ID, "s1")]);
        assert_eq!(transcript_path(e, "/w"), None, "not absolute");
    }

    #[test]
    fn folder_names_count_utf16_units() {
        assert_eq!(folder_name("/a/é/😀"), "-a-----");
    }

    #[test]
    fn a_long_project_dir_is_found_by_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let projects = dir.path().join("projects");
        let long = format!("/{}", "x".repeat(250));
        let name = folder_name(&long);
        assert_eq!(project_folder(&projects, &long), None, "no folder yet");
        let real = format!("{}-abc123", &name[..MAX_FOLDER_CHARS]);
        std::fs::create_dir_all(projects.join(&real)).unwrap();
        assert_eq!(project_folder(&projects, &long), Some(real));
        std::fs::create_dir_all(projects.join(format!("{}-zz", &name[..MAX_FOLDER_CHARS])))
            .unwrap();
        assert_eq!(project_folder(&projects, &long), None, "ambiguous");
    }
}
