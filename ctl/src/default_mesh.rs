//! `claudemesh-ctl default [MESH]`: the mesh new Claude Code sessions and
//! ctl commands use when none is named.
//!
//! The default is set explicitly (here, or with `join --default`) and kept
//! in the config as `defaultMesh`; the running daemon picks it up like any
//! config change. A plain `join` never moves it: a person who followed the
//! Quickstart keeps their sessions in `local` until they say otherwise.

use claudemesh_daemon::config::Config;
use serde_json::json;

use crate::ctx;
use crate::daemon::{self, reload_json, report_reload};
use crate::error::Result;
use crate::output::{self, BOLD, GREEN, paint};

/// The rule, as said to a person.
pub const RULE: &str = "the mesh set with `claudemesh-ctl default MESH` (or `join --default`); \
if none is set, `local`; without `local`, the first mesh joined. \
CLAUDEMESH_MESH=MESH picks another for one Claude Code session, --mesh MESH for one ctl command.";

/// The default mesh's slug, if any mesh is joined.
pub fn slug(config: &Config) -> Option<String> {
    config.default_mesh().map(|m| m.slug.clone())
}

/// `claudemesh-ctl default [MESH]`.
pub fn run(mesh: Option<&str>, json_out: bool) -> Result<()> {
    let paths = ctx::paths()?;
    match mesh {
        None => show(&ctx::load_config(&paths)?, json_out),
        Some(m) => set(&paths, m, json_out),
    }
}

fn show(config: &Config, json_out: bool) -> Result<()> {
    let current = config.default_mesh();
    let explicit = config
        .default_mesh
        .as_deref()
        .is_some_and(|d| current.is_some_and(|m| m.mesh_id == d));
    if json_out {
        output::json(&json!({
            "defaultMesh": current.map(|m| &m.slug),
            "meshId": current.map(|m| &m.mesh_id),
            "explicit": explicit,
            "rule": RULE,
        }));
        return Ok(());
    }
    match current {
        Some(m) => output::line(format!(
            "{} {} ({})",
            paint(BOLD, "default mesh:"),
            paint(BOLD, &m.slug),
            if explicit {
                "set with `claudemesh-ctl default`"
            } else {
                "none is set: the rule picks it"
            }
        )),
        None => output::line(format!(
            "{} none: no mesh is joined and the daemon has not created `local` yet",
            paint(BOLD, "default mesh:")
        )),
    }
    output::line(format!("  rule: {RULE}"));
    Ok(())
}

fn set(paths: &claudemesh_daemon::paths::Paths, wanted: &str, json_out: bool) -> Result<()> {
    let mut config = ctx::load_config(paths)?;
    let before = slug(&config);
    let mesh = config
        .find(wanted.trim())
        .cloned()
        .ok_or_else(|| ctx::not_joined(&config, wanted))?;
    config.default_mesh = Some(mesh.mesh_id.clone());
    ctx::save_config(paths, &config)?;
    let reload = daemon::reload(paths);
    if json_out {
        output::json(&json!({
            "defaultMesh": mesh.slug,
            "meshId": mesh.mesh_id,
            "previous": before,
            "daemon": reload_json(&reload),
        }));
        return Ok(());
    }
    output::line(format!(
        "{} Default mesh: {}{}",
        paint(GREEN, "✓"),
        paint(BOLD, &mesh.slug),
        match &before {
            Some(b) if *b != mesh.slug => format!(" (was {b})"),
            _ => String::new(),
        }
    ));
    output::line(
        "  new Claude Code sessions and ctl commands use it; sessions already running stay \
         in their mesh",
    );
    report_reload(&reload, &mesh.slug);
    Ok(())
}

/// What a join did to the default, in one line for the person (after
/// `default:`), and whether it changed.
pub fn after_join(
    before: Option<&str>,
    after: &str,
    joined: &str,
    made_default: bool,
) -> (String, bool) {
    let changed = before != Some(after);
    let line = if made_default {
        match before.filter(|b| *b != after) {
            Some(b) => format!(
                "mesh {after} now (was {b}): new Claude Code sessions and ctl commands use it; \
                 `claudemesh-ctl default {b}` goes back"
            ),
            None => format!("mesh {after}: new Claude Code sessions and ctl commands use it"),
        }
    } else if after == joined {
        format!(
            "mesh {after}, the only mesh joined: new Claude Code sessions and ctl commands use \
             it (`claudemesh-ctl default MESH` changes it)"
        )
    } else {
        format!(
            "mesh {after}, unchanged: new Claude Code sessions stay there. To use {joined}: \
             `claudemesh-ctl default {joined}` (every new session), CLAUDEMESH_MESH={joined} \
             (one session), --mesh {joined} (one ctl command)"
        )
    };
    (line, changed)
}
