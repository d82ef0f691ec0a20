//! The default mesh, through the real binaries: a daemon with its local
//! mesh, a standalone broker, and `claudemesh-ctl`. A plain `join` leaves
//! new sessions in `local` and says how to move them; `default MESH` and
//! `join --default` move them, and the running daemon follows (seen by
//! `peers`, which attaches without naming a mesh, as a new session does);
//! leaving the default mesh falls back to `local`. A Claude Code session
//! (the real shim) goes to the default unless CLAUDEMESH_MESH names another.

use claudemesh_e2e::broker::Broker;
use claudemesh_e2e::home::Home;
use claudemesh_e2e::mcp::McpClient;
use claudemesh_e2e::process::Guarded;
use claudemesh_e2e::scenario::LIMIT;
use claudemesh_e2e::wait;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The mesh a session that names none is attached to, by the daemon.
fn attached_mesh(home: &Home) -> String {
    let v = json(&home.ctl_ok(&["peers", "--json"]));
    v["mesh"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned()
}

fn status_default(home: &Home) -> Value {
    json(&home.ctl_ok(&["status", "--json"]))["daemon"]["defaultMesh"].clone()
}

/// The daemon with its local mesh, once `local` is in the config.
fn start_daemon(home: &Home) -> Guarded {
    let daemon = home.start_daemon(&[]);
    wait::until("the daemon to run its local mesh", LIMIT, || {
        let out = home.ctl(&["status", "--json"]);
        (out.status.success() && status_default(home) == "local").then_some(())
    });
    daemon
}

#[test]
fn join_keeps_local_default_until_set_and_the_daemon_follows() {
    let broker = Broker::start();
    let team = broker.mesh_with_invite("team", 1);
    let ops = broker.mesh_with_invite("ops", 1);
    let home = Home::new("a");
    let _daemon = start_daemon(&home);
    assert_eq!(attached_mesh(&home), "local");

    // A plain join moves nothing, and says so with the way to move.
    let joined = home.ctl_ok(&["join", &team, "--name", "alice"]);
    assert!(
        joined.contains("default:  mesh local, unchanged")
            && joined.contains("claudemesh-ctl default team")
            && joined.contains("CLAUDEMESH_MESH=team"),
        "{joined}"
    );
    assert_eq!(status_default(&home), "local");
    assert_eq!(attached_mesh(&home), "local");
    let shown = json(&home.ctl_ok(&["default", "--json"]));
    assert_eq!(shown["defaultMesh"], "local", "{shown}");
    assert_eq!(shown["explicit"], false, "{shown}");
    let human = home.ctl_ok(&["default"]);
    assert!(
        human.contains("local") && human.contains("rule:"),
        "{human}"
    );

    // `default team`: the running daemon puts new sessions there.
    let set = home.ctl_ok(&["default", "team"]);
    assert!(set.contains("Default mesh: team (was local)"), "{set}");
    assert_eq!(attached_mesh(&home), "team");
    assert_eq!(status_default(&home), "team");
    let listed = home.ctl_ok(&["peers"]);
    assert!(listed.contains("mesh: team, the default mesh"), "{listed}");
    let local = json(&home.ctl_ok(&["peers", "local", "--json"]));
    assert_eq!(local["default"], false, "{local}");

    // Claude Code sessions: a new one goes to the default, and
    // CLAUDEMESH_MESH still picks another for one session.
    let _plain = McpClient::start(&home, "plain", &[]);
    let _pinned = McpClient::start(&home, "pinned", &[("CLAUDEMESH_MESH", "local")]);
    let meshes = wait::until("both sessions in status", LIMIT, || {
        let v = json(&home.ctl_ok(&["status", "--json"]));
        let of = |name: &str| {
            v["daemon"]["sessions"]
                .as_array()?
                .iter()
                .find(|s| s["displayName"] == name)
                .map(|s| s["meshSlug"].clone())
        };
        Some((of("plain")?, of("pinned")?))
    });
    assert_eq!(meshes, ("team".into(), "local".into()));
    assert_eq!(json(&home.ctl_ok(&["default", "--json"]))["explicit"], true);

    // A mesh that is not joined is refused, and the default stays.
    let refused = home.ctl(&["default", "nope"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no joined mesh is called `nope`"),
        "{refused:?}"
    );
    assert_eq!(attached_mesh(&home), "team");

    // `join --default` moves it in the same step.
    let joined = json(&home.ctl_ok(&["join", &ops, "--default", "--json"]));
    assert_eq!(joined["defaultMesh"], "ops", "{joined}");
    assert_eq!(joined["defaultChanged"], true, "{joined}");
    assert_eq!(attached_mesh(&home), "ops");

    // Leaving the default mesh falls back to the rule: `local`.
    home.ctl_ok(&["leave", "ops"]);
    assert_eq!(status_default(&home), "local");
    assert_eq!(attached_mesh(&home), "local");
}
