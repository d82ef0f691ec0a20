//! `join` and `leave` through the real binary against a real broker. The
//! daemon does not run in these tests: ctl must work without it.

#![cfg(unix)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::invite::{Invite, InviteRole};
use common::{Home, TestBroker, dead_address};

const INVITE_INVALID: i32 = 4;
const BROKER_UNREACHABLE: i32 = 5;

fn payload(link: &str) -> serde_json::Value {
    let b = link.strip_prefix("ic://join/").unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b).unwrap()).unwrap()
}

fn link_of(v: &serde_json::Value) -> String {
    format!(
        "ic://join/{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    )
}

/// An invite signed by a key the broker has never seen.
fn foreign_invite(broker_url: &str, expires_at: i64) -> String {
    let owner = MemberSecretKey::generate().unwrap();
    Invite::signed(
        &owner,
        "mesh_nosuchmesh",
        "ghost",
        broker_url,
        "inv_nosuchinvite",
        InviteRole::Member,
        expires_at,
    )
    .to_link()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn join_with_a_valid_link_writes_key_and_config_and_is_idempotent() {
    let broker = TestBroker::start();
    let (mesh_id, _, link) = broker.mesh_and_invite("team", None);
    let home = Home::new();

    let run = home.run(["join", &link, "--name", "alice"]);
    run.assert_code(0);
    assert!(run.stdout.contains("Joined mesh team"), "{}", run.stdout);
    assert!(
        run.stdout.contains("not running"),
        "should say the daemon will pick it up: {}",
        run.stdout
    );
    let meshes = home.meshes();
    assert_eq!(meshes.len(), 1);
    assert_eq!(meshes[0]["meshId"], mesh_id.as_str());
    assert_eq!(meshes[0]["slug"], "team");
    assert_eq!(meshes[0]["brokerUrl"], broker.ws_url().as_str());
    assert_eq!(home.keys().len(), 1, "one key file");
    let members = broker.admin().list_members(&mesh_id).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].pubkey, meshes[0]["pubkey"].as_str().unwrap());
    assert_eq!(members[0].id, meshes[0]["memberId"].as_str().unwrap());

    // Again: a no-op that says so.
    let again = home.run(["join", &link]);
    again.assert_code(0);
    assert!(
        again.stdout.contains("Already a member"),
        "{}",
        again.stdout
    );
    assert_eq!(home.meshes(), meshes);
    assert_eq!(broker.admin().list_members(&mesh_id).unwrap().len(), 1);

    // list --json shows it, without a daemon.
    let list = home.run(["list", "--json"]);
    list.assert_code(0);
    let v = list.json();
    assert_eq!(v["daemonRunning"], false);
    assert_eq!(v["meshes"][0]["slug"], "team");
    // `member` is the member's public key, as PROTOCOL.md names it in
    // every message; `pubkey` stays in the config file only.
    assert_eq!(v["meshes"][0]["member"], meshes[0]["pubkey"], "{v}");
    assert!(v["meshes"][0].get("pubkey").is_none(), "{v}");
}

fn assert_refused(home: &Home, link: &str, code: i32, needles: &[&str], why: &str) {
    let run = home.run(["join", link]);
    run.assert_code(code);
    for n in needles {
        assert!(
            run.stderr.contains(n),
            "{why}: stderr lacks {n:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("hint:"),
        "{why}: no hint:\n{}",
        run.stderr
    );
    home.assert_pristine(why);
}

#[test]
fn each_locally_invalid_link_is_refused_with_its_reason_and_leaves_nothing() {
    let broker = TestBroker::start();
    let (_, _, link) = broker.mesh_and_invite("team", None);
    let home = Home::new();

    assert_refused(
        &home,
        "https://example.com/join/abc",
        INVITE_INVALID,
        &["format check failed", "ic://join/"],
        "not a link",
    );
    assert_refused(
        &home,
        "ic://join/@@not*base64!!",
        INVITE_INVALID,
        &["payload check failed", "base64url"],
        "damaged base64",
    );
    let bad_json = format!(
        "ic://join/{}",
        URL_SAFE_NO_PAD.encode(b"{\"v\":1,\"meshId\":")
    );
    assert_refused(
        &home,
        &bad_json,
        INVITE_INVALID,
        &["payload check failed", "not a valid invite"],
        "bad JSON",
    );

    let mut tampered = payload(&link);
    tampered["meshSlug"] = "hijacked".into();
    assert_refused(
        &home,
        &link_of(&tampered),
        INVITE_INVALID,
        &["signature check failed"],
        "tampered",
    );

    let expired = foreign_invite(&broker.ws_url(), now_secs() - 60);
    assert_refused(
        &home,
        &expired,
        INVITE_INVALID,
        &["expiry check failed", "expired at"],
        "expired",
    );

    // The broker was never asked: it has no member anywhere.
    for m in broker.admin().list_meshes().unwrap() {
        assert!(broker.admin().list_members(&m.id).unwrap().is_empty());
    }
}

#[test]
fn links_the_broker_refuses_leave_nothing_behind() {
    let broker = TestBroker::start();
    let admin = broker.admin();

    // Revoked.
    let (_, invite_id, revoked) = broker.mesh_and_invite("revoked-mesh", None);
    admin.revoke_invite(&invite_id).unwrap();
    let home = Home::new();
    assert_refused(
        &home,
        &revoked,
        INVITE_INVALID,
        &["revoked"],
        "revoked invite",
    );

    // Exhausted: one use, taken by someone else first.
    let (_, _, single) = broker.mesh_and_invite("single-use", Some(1));
    let first = Home::new();
    first.run(["join", &single]).assert_code(0);
    let second = Home::new();
    assert_refused(
        &second,
        &single,
        INVITE_INVALID,
        &["used as many times"],
        "exhausted invite",
    );

    // Unknown mesh: validly signed, but not a mesh of this broker.
    let ghost = foreign_invite(&broker.ws_url(), now_secs() + 3600);
    let third = Home::new();
    assert_refused(
        &third,
        &ghost,
        INVITE_INVALID,
        &["does not know mesh `ghost`"],
        "unknown mesh",
    );
}

#[test]
fn an_unreachable_broker_fails_with_exit_5_and_leaves_nothing() {
    let broker = TestBroker::start();
    let (_, _, link) = broker.mesh_and_invite("team", None);
    let mut home = Home::new();
    home.env(
        "CLAUDEMESH_BROKER_URL",
        format!("ws://{}/ws", dead_address()),
    );
    assert_refused(
        &home,
        &link,
        BROKER_UNREACHABLE,
        &["could not reach the broker"],
        "broker down",
    );
}

#[test]
fn broker_url_override_enrolls_with_the_self_hosted_broker() {
    // The invite names a dead broker; CLAUDEMESH_BROKER_URL points at the
    // live one, which holds the mesh.
    let broker = TestBroker::start();
    let admin = broker.admin();
    let mesh = admin.create_mesh("selfhosted").unwrap();
    let dead = format!("ws://{}/ws", dead_address());
    let (_, link) = admin
        .create_invite(&mesh.id, InviteRole::Member, None, 3600, &dead)
        .unwrap();
    let mut home = Home::new();
    home.env("CLAUDEMESH_BROKER_URL", broker.ws_url());
    let run = home.run(["join", &link]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("CLAUDEMESH_BROKER_URL"),
        "{}",
        run.stderr
    );
    assert_eq!(admin.list_members(&mesh.id).unwrap().len(), 1);
}

#[test]
fn join_leave_and_join_again_then_leave_with_the_broker_down() {
    let mut broker = TestBroker::start();
    let (mesh_id, _, link) = broker.mesh_and_invite("team", None);
    let home = Home::new();

    home.run(["join", &link]).assert_code(0);
    let first_member = home.meshes()[0]["memberId"].as_str().unwrap().to_owned();

    let left = home.run(["leave", "team"]);
    left.assert_code(0);
    assert!(left.stdout.contains("Left mesh team"), "{}", left.stdout);
    assert!(!left.stderr.contains("warning"), "{}", left.stderr);
    home.assert_pristine("after leave");
    let members = broker.admin().list_members(&mesh_id).unwrap();
    assert!(
        members.iter().all(|m| m.revoked),
        "the broker revoked the member: {members:?}"
    );

    // Leaving again: not joined.
    home.run(["leave", "team"]).assert_code(6);

    // Join again: a fresh key, a new member.
    home.run(["join", &link]).assert_code(0);
    let second_member = home.meshes()[0]["memberId"].as_str().unwrap().to_owned();
    assert_ne!(first_member, second_member);
    assert_eq!(home.keys().len(), 1);

    // The broker goes away; leave still works, with a warning.
    broker.stop();
    let left = home.run(["leave", &mesh_id]);
    left.assert_code(0);
    assert!(left.stderr.contains("warning:"), "{}", left.stderr);
    assert!(
        left.stderr.contains("could not reach the broker"),
        "{}",
        left.stderr
    );
    home.assert_pristine("after leave with the broker down");
}

#[test]
fn commands_that_need_the_daemon_exit_3_without_it() {
    let home = Home::new();
    for args in [
        vec!["status"],
        vec!["peers"],
        vec!["outbox"],
        vec!["send", "x", "hi"],
    ] {
        let run = home.run(&args);
        run.assert_code(3);
        assert!(
            run.stderr.contains("not running"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let v = home.run(["status", "--json"]);
    v.assert_code(3);
    assert_eq!(v.json()["daemon"]["running"], false);
}

#[test]
fn the_hook_prints_nothing_and_succeeds_without_a_daemon() {
    use std::io::Write;
    let home = Home::new();
    let started = std::time::Instant::now();
    let mut child = home
        .cmd(["hook"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"hook_event_name":"PostToolUse","tool_name":"Bash"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

/// Without an OS keyring, the fallback notice (keys in files) is printed by
/// the first `join` only, not by every join and leave after it.
#[cfg(target_os = "linux")]
#[test]
fn the_keystore_notice_is_said_once_per_machine() {
    let broker = TestBroker::start();
    let (_, _, link) = broker.mesh_and_invite("team", None);
    let mut home = Home::new();
    // Automatic choice, and a session bus that cannot be reached: files.
    home.env("CLAUDEMESH_KEYSTORE", "").env(
        "DBUS_SESSION_BUS_ADDRESS",
        "unix:path=/nonexistent/claudemesh-bus",
    );
    let first = home.run(["join", &link]);
    first.assert_code(0);
    assert!(first.stderr.contains("warning:"), "{}", first.stderr);
    let left = home.run(["leave", "team"]);
    left.assert_code(0);
    assert!(!left.stderr.contains("warning:"), "{}", left.stderr);
    let again = home.run(["join", &link]);
    again.assert_code(0);
    assert!(!again.stderr.contains("warning:"), "{}", again.stderr);
    // status still says where the keys are.
    let status = home.run(["status"]);
    assert!(status.stdout.contains("files in"), "{}", status.stdout);
}
