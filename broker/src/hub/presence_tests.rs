//! Each presence transition on a real [`MeshState`] and real connection
//! handles: the frames each connection's queue receives, and the close
//! each connection is asked for.

use axum::extract::ws::Message;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::*;
use crate::hub::conn::Queued;
use claudemesh_protocol::limits::MAX_GROUP_CHARS;
use claudemesh_protocol::wire::ErrorCode;

const NOW: i64 = 1_700_000_000_000;

/// One connection of the mesh, with the receiving end of its queue.
struct Conn {
    id: ConnId,
    handle: ConnHandle,
    queue: mpsc::Receiver<Queued>,
}

impl Conn {
    /// The frames queued since the last call, each as `"<kind> <what>"`:
    /// `peer_joined alice` (event and display name), `error <code>`.
    fn take(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(q) = self.queue.try_recv() {
            let Message::Text(text) = q.msg else {
                out.push(format!("{:?}", q.msg));
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            out.push(match v["type"].as_str() {
                Some("event") => format!(
                    "{} {}",
                    v["event"].as_str().unwrap(),
                    v["peer"]["displayName"].as_str().unwrap()
                ),
                Some("error") => format!("error {}", v["code"].as_str().unwrap()),
                other => format!("{other:?}"),
            });
        }
        out
    }

    /// The last event's peer, as sent.
    fn last_peer(&mut self) -> Value {
        let mut last = Value::Null;
        while let Ok(q) = self.queue.try_recv() {
            if let Message::Text(text) = q.msg {
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                last = v["peer"].clone();
            }
        }
        last
    }

    /// The close this connection was asked for, if any.
    fn closed(&self) -> Option<(u16, String)> {
        self.handle.closing().now_or_never()
    }
}

struct Mesh {
    state: MeshState,
    next: ConnId,
}

impl Mesh {
    fn new() -> Self {
        Self {
            state: MeshState::default(),
            next: 0,
        }
    }

    fn connect(&mut self, member: &str, role: ConnectionRole) -> Conn {
        self.next += 1;
        let (handle, queue) = ConnHandle::new(self.next, 64);
        self.state.add_conn(ConnEntry {
            handle: handle.clone(),
            member_id: member.to_owned(),
            pubkey: pubkey(member),
            role,
            sessions: Vec::new(),
        });
        Conn {
            id: self.next,
            handle,
            queue,
        }
    }

    fn session_conn(&mut self, member: &str) -> Conn {
        self.connect(member, ConnectionRole::Session)
    }

    fn daemon_conn(&mut self, member: &str) -> Conn {
        self.connect(member, ConnectionRole::Daemon)
    }

    fn open(&mut self, conn: &Conn, session: &str, name: &str) -> Result<String, SessionError> {
        self.state.open_session(conn.id, spec(session, name), NOW)
    }

    fn listed(&self, member: &str, session: &str) -> Option<&SessionEntry> {
        self.state.session(&key(member, session))
    }
}

fn pubkey(member: &str) -> String {
    format!("{member:0<64}")
}

fn key(member: &str, session: &str) -> SessionKey {
    (member.to_owned(), session.to_owned())
}

fn spec(session: &str, name: &str) -> SessionSpec {
    SessionSpec {
        session_id: session.to_owned(),
        display_name: Some(name.to_owned()),
        cwd: "/src".into(),
        host: "laptop".into(),
        ..SessionSpec::default()
    }
}

fn set_status(status: PeerStatus) -> impl FnOnce(&mut Peer) -> bool {
    move |p| {
        let changed = p.status != status;
        p.status = status;
        changed
    }
}

#[test]
fn a_new_session_is_announced_to_every_other_connection() {
    let mut m = Mesh::new();
    let mut a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    let mut d = m.daemon_conn("carol");
    assert_eq!(m.open(&a, "a1", "alice"), Ok("alice".into()));
    assert_eq!(a.take(), Vec::<String>::new());
    assert_eq!(b.take(), ["peer_joined alice"]);
    assert_eq!(d.take(), ["peer_joined alice"]);
    let s = m.listed("alice", "a1").unwrap();
    assert_eq!(s.conn, Some(a.id));
    assert_eq!(s.peer.member, pubkey("alice"));
    assert_eq!(s.peer.connected_at, NOW);
    assert!(m.state.carries(a.id, "a1"));
    assert_eq!(m.state.member_of(&pubkey("alice")), Some("alice"));
}

#[test]
fn a_session_on_an_unknown_connection_is_refused() {
    let mut m = Mesh::new();
    let result = m.state.open_session(99, spec("s", "x"), NOW);
    assert_eq!(result, Err(SessionError::Unknown));
    assert_eq!(m.state.session_count(), 0);
}

#[test]
fn taken_display_names_get_a_number() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    let e = m.daemon_conn("bob");
    assert_eq!(m.open(&d, "s1", "dev"), Ok("dev".into()));
    assert_eq!(m.open(&e, "s2", "dev"), Ok("dev-2".into()));
    assert_eq!(m.open(&d, "s3", "dev"), Ok("dev-3".into()));
    // A freed name is given again; a taken one still is not.
    m.state.close_session(d.id, "s1").unwrap();
    assert_eq!(m.open(&e, "s4", "dev"), Ok("dev".into()));
    assert_eq!(m.open(&d, "s5", "dev"), Ok("dev-4".into()));
    let (k, _) = m.state.session_by_name("dev-2").unwrap();
    assert_eq!(*k, key("bob", "s2"));
}

#[test]
fn reopening_a_session_keeps_its_name_and_renaming_frees_the_old_one() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    let mut other = m.session_conn("bob");
    assert_eq!(m.open(&d, "s1", "dev"), Ok("dev".into()));
    assert_eq!(m.open(&d, "s2", "dev"), Ok("dev-2".into()));
    other.take();
    // The same request again: the same name, nothing visible changed.
    assert_eq!(m.open(&d, "s2", "dev"), Ok("dev-2".into()));
    assert_eq!(other.take(), Vec::<String>::new());
    // A rename: the old name is free, the others see the new one.
    assert_eq!(m.open(&d, "s2", "ops"), Ok("ops".into()));
    assert_eq!(other.take(), ["peer_updated ops"]);
    assert!(m.state.session_by_name("dev-2").is_none());
    assert_eq!(m.open(&d, "s3", "dev"), Ok("dev-2".into()));
}

#[test]
fn a_dropped_connection_leaves_its_sessions_listed_for_the_grace_period() {
    let mut m = Mesh::new();
    let a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&a, "a1", "alice").unwrap();
    b.take();
    let timers = m.state.remove_conn(a.id, Departure::Dropped);
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].0, key("alice", "a1"));
    let s = m.listed("alice", "a1").unwrap();
    assert_eq!(s.conn, None);
    assert_eq!(s.epoch, timers[0].1);
    assert_eq!(b.take(), Vec::<String>::new());
    assert_eq!(m.state.peers(None).peers.len(), 1);
    assert_eq!(m.state.conn_count(), 1);
    assert!(m.state.member_conns("alice").is_empty());
}

#[test]
fn grace_expiry_announces_the_departure_to_everyone() {
    let mut m = Mesh::new();
    let a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&a, "a1", "alice").unwrap();
    b.take();
    let timers = m.state.remove_conn(a.id, Departure::Dropped);
    let (k, epoch) = &timers[0];
    m.state.expire(k, *epoch);
    assert_eq!(b.take(), ["peer_left alice"]);
    assert!(m.listed("alice", "a1").is_none());
    assert!(m.state.session_by_name("alice").is_none());
    // A second expiry of the same timer does nothing.
    m.state.expire(k, *epoch);
    assert_eq!(b.take(), Vec::<String>::new());
}

#[test]
fn a_quick_reconnect_within_grace_is_silent_and_outlives_the_old_timer() {
    let mut m = Mesh::new();
    let a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&a, "a1", "alice").unwrap();
    b.take();
    let timers = m.state.remove_conn(a.id, Departure::Dropped);
    let mut a2 = m.session_conn("alice");
    assert_eq!(m.open(&a2, "a1", "alice"), Ok("alice".into()));
    assert_eq!(b.take(), Vec::<String>::new());
    assert_eq!(a2.take(), Vec::<String>::new());
    let s = m.listed("alice", "a1").unwrap();
    assert_eq!(s.conn, Some(a2.id));
    assert!(s.epoch > timers[0].1);
    // The timer of the earlier drop fires: its epoch is stale.
    m.state.expire(&timers[0].0, timers[0].1);
    assert!(m.listed("alice", "a1").is_some());
    assert_eq!(b.take(), Vec::<String>::new());
    // Dropped again: the first timer still does nothing, only the second
    // one ends it.
    let again = m.state.remove_conn(a2.id, Departure::Dropped);
    m.state.expire(&timers[0].0, timers[0].1);
    assert!(m.listed("alice", "a1").is_some());
    assert_eq!(b.take(), Vec::<String>::new());
    m.state.expire(&again[0].0, again[0].1);
    assert_eq!(b.take(), ["peer_left alice"]);
}

#[test]
fn a_reconnect_that_changes_what_others_see_is_one_update() {
    let mut m = Mesh::new();
    let a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&a, "a1", "alice").unwrap();
    b.take();
    m.state.remove_conn(a.id, Departure::Dropped);
    let a2 = m.session_conn("alice");
    let mut moved = spec("a1", "alice");
    moved.cwd = "/elsewhere".into();
    m.state.open_session(a2.id, moved, NOW + 5).unwrap();
    let peer = b.last_peer();
    assert_eq!(peer["cwd"], "/elsewhere");
    assert_eq!(peer["connectedAt"], NOW);
}

#[test]
fn a_hello_without_summary_groups_or_status_keeps_the_sessions_own() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    let mut b = m.session_conn("bob");
    let mut full = spec("s1", "dev");
    full.summary = Some("fixing the parser".into());
    full.groups = Some(vec!["@backend".into(), "backend".into(), " ".into()]);
    full.status = Some(PeerStatus::Working);
    m.state.open_session(d.id, full, NOW).unwrap();
    b.take();
    m.state.remove_conn(d.id, Departure::Dropped);
    let d2 = m.daemon_conn("alice");
    m.open(&d2, "s1", "dev").unwrap();
    assert_eq!(b.take(), Vec::<String>::new());
    let peer = &m.listed("alice", "s1").unwrap().peer;
    assert_eq!(peer.summary, "fixing the parser");
    assert_eq!(peer.groups, ["backend"]);
    assert_eq!(peer.status, PeerStatus::Working);
}

#[test]
fn a_live_session_opened_elsewhere_closes_a_session_connection() {
    let mut m = Mesh::new();
    let mut a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&a, "a1", "alice").unwrap();
    b.take();
    let a2 = m.session_conn("alice");
    assert_eq!(m.open(&a2, "a1", "alice"), Ok("alice".into()));
    assert_eq!(a.closed(), Some((1000, "session_taken_over".into())));
    assert!(!m.state.carries(a.id, "a1"));
    assert!(m.state.carries(a2.id, "a1"));
    assert_eq!(m.listed("alice", "a1").unwrap().conn, Some(a2.id));
    // Nobody saw it leave or join.
    assert_eq!(b.take(), Vec::<String>::new());
    assert_eq!(a.take(), Vec::<String>::new());
    // When the old connection then goes, the session stays.
    assert!(m.state.remove_conn(a.id, Departure::Dropped).is_empty());
    assert_eq!(m.listed("alice", "a1").unwrap().conn, Some(a2.id));
}

#[test]
fn a_live_session_opened_elsewhere_is_an_error_to_a_daemon() {
    let mut m = Mesh::new();
    let mut d = m.daemon_conn("alice");
    m.open(&d, "s1", "dev").unwrap();
    m.open(&d, "s2", "ops").unwrap();
    let d2 = m.daemon_conn("alice");
    m.open(&d2, "s1", "dev").unwrap();
    assert_eq!(d.take(), ["error session_taken_over"]);
    assert_eq!(d.closed(), None);
    assert!(!m.state.carries(d.id, "s1"));
    assert!(m.state.carries(d.id, "s2"));
    assert_eq!(m.state.session_count(), 2);
}

#[test]
fn closing_a_session_announces_it_at_once() {
    let mut m = Mesh::new();
    let mut d = m.daemon_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&d, "s1", "dev").unwrap();
    b.take();
    assert_eq!(m.state.close_session(d.id, "s1"), Ok(()));
    assert_eq!(b.take(), ["peer_left dev"]);
    assert_eq!(d.take(), Vec::<String>::new());
    assert!(m.listed("alice", "s1").is_none());
    assert_eq!(
        m.state.close_session(d.id, "s1"),
        Err(SessionError::Unknown)
    );
    // Only the connection carrying it may close it.
    m.open(&d, "s2", "dev").unwrap();
    assert_eq!(
        m.state.close_session(b.id, "s2"),
        Err(SessionError::Unknown)
    );
}

#[test]
fn a_shutdown_departure_removes_sessions_silently() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&d, "s1", "dev").unwrap();
    m.open(&d, "s2", "ops").unwrap();
    b.take();
    let timers = m.state.remove_conn(d.id, Departure::Shutdown);
    assert!(timers.is_empty());
    assert_eq!(m.state.session_count(), 0);
    assert_eq!(b.take(), Vec::<String>::new());
    assert!(m.state.session_by_name("dev").is_none());
    // Removing it again does nothing.
    assert!(m.state.remove_conn(d.id, Departure::Shutdown).is_empty());
}

#[test]
fn a_revoked_member_is_closed_out_and_the_others_see_it_leave() {
    let mut m = Mesh::new();
    let mut d = m.daemon_conn("alice");
    let mut a = m.session_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&d, "s1", "dev").unwrap();
    m.open(&a, "a1", "alice").unwrap();
    // A third session in its grace period goes too.
    let gone = m.session_conn("alice");
    m.open(&gone, "g1", "ghost").unwrap();
    m.state.remove_conn(gone.id, Departure::Dropped);
    d.take();
    a.take();
    b.take();
    m.state.revoke_member("alice");
    assert_eq!(d.closed(), Some((1008, "revoked".into())));
    assert_eq!(a.closed(), Some((1008, "revoked".into())));
    assert_eq!(b.closed(), None);
    let mut left = b.take();
    left.sort();
    assert_eq!(
        left,
        ["peer_left alice", "peer_left dev", "peer_left ghost"]
    );
    assert_eq!(d.take(), Vec::<String>::new());
    assert_eq!(a.take(), Vec::<String>::new());
    assert_eq!(m.state.member_session_count("alice"), 0);
    assert!(!m.state.carries(d.id, "s1"));
    assert_eq!(m.state.member_of(&pubkey("alice")), None);
    assert_eq!(m.state.member_of(&pubkey("bob")), Some("bob"));
}

#[test]
fn a_connection_carries_a_bounded_number_of_sessions() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    for i in 0..MAX_SESSIONS_PER_CONNECTION {
        m.open(&d, &format!("s{i}"), "dev").unwrap();
    }
    assert_eq!(
        m.open(&d, "one-more", "dev"),
        Err(SessionError::TooManyOnConnection)
    );
    assert!(m.listed("alice", "one-more").is_none());
    // One it already carries may be opened again.
    assert!(m.open(&d, "s0", "dev").is_ok());
    let (code, message) = SessionError::TooManyOnConnection.code_and_message("x");
    assert_eq!(code, "too_many_sessions");
    assert!(message.contains(&MAX_SESSIONS_PER_CONNECTION.to_string()));
}

#[test]
fn a_member_lists_a_bounded_number_of_sessions_grace_included() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    for i in 0..MAX_SESSIONS_PER_MEMBER - 1 {
        m.open(&d, &format!("s{i}"), "dev").unwrap();
    }
    let a = m.session_conn("alice");
    m.open(&a, "a1", "alice").unwrap();
    m.state.remove_conn(a.id, Departure::Dropped);
    let d2 = m.daemon_conn("alice");
    assert_eq!(m.open(&d2, "new", "x"), Err(SessionError::TooManyForMember));
    // The one in its grace period can come back; another member is free.
    assert!(m.open(&d2, "a1", "alice").is_ok());
    let b = m.daemon_conn("bob");
    assert!(m.open(&b, "b1", "bob").is_ok());
    assert_eq!(
        SessionError::TooManyForMember.code_and_message("x").0,
        "too_many_sessions"
    );
    assert_eq!(
        SessionError::Unknown.code_and_message("s9"),
        (
            ErrorCode::UnknownSession,
            "session s9 is not open on this connection".to_owned()
        )
    );
}

#[test]
fn status_summary_and_group_changes_are_announced_only_when_they_change() {
    let mut m = Mesh::new();
    let mut d = m.daemon_conn("alice");
    let mut b = m.session_conn("bob");
    m.open(&d, "s1", "dev").unwrap();
    b.take();
    let st = &mut m.state;
    st.update_session(d.id, "s1", set_status(PeerStatus::Working))
        .unwrap();
    assert_eq!(b.take(), ["peer_updated dev"]);
    st.update_session(d.id, "s1", set_status(PeerStatus::Working))
        .unwrap();
    assert_eq!(b.take(), Vec::<String>::new());
    st.update_session(d.id, "s1", |p| {
        p.summary = "reviewing".into();
        true
    })
    .unwrap();
    assert_eq!(b.last_peer()["summary"], "reviewing");
    st.update_session(d.id, "s1", |p| {
        p.groups.push("ops".into());
        true
    })
    .unwrap();
    assert_eq!(b.last_peer()["groups"], serde_json::json!(["ops"]));
    assert_eq!(d.take(), Vec::<String>::new());
    assert_eq!(
        st.update_session(b.id, "s1", |_| true),
        Err(SessionError::Unknown)
    );
    assert_eq!(
        st.update_session(99, "s1", |_| true),
        Err(SessionError::Unknown)
    );
}

#[test]
fn the_peer_list_leaves_out_the_asker_and_is_sorted_by_name() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    let b = m.daemon_conn("bob");
    m.open(&d, "s1", "zed").unwrap();
    m.open(&b, "s2", "amy").unwrap();
    m.open(&d, "s3", "max").unwrap();
    let all = m.state.peers(None);
    assert!(!all.truncated);
    let names: Vec<&str> = all.peers.iter().map(|p| p.display_name.as_str()).collect();
    assert_eq!(names, ["amy", "max", "zed"]);
    let without = m.state.peers(Some(&key("alice", "s3")));
    let names: Vec<&str> = without
        .peers
        .iter()
        .map(|p| p.display_name.as_str())
        .collect();
    assert_eq!(names, ["amy", "zed"]);
}

fn peer(member: &str, name: &str) -> Peer {
    Peer {
        member: pubkey(member),
        session_id: name.to_owned(),
        display_name: name.to_owned(),
        status: PeerStatus::Idle,
        summary: String::new(),
        groups: Vec::new(),
        cwd: String::new(),
        host: String::new(),
        connected_at: NOW,
    }
}

fn size(p: &Peer) -> usize {
    serde_json::to_string(p).unwrap().len() + 1
}

#[test]
fn a_cut_peer_list_gives_each_member_a_turn() {
    // Alice has five sessions, Bob and Carol one each; room for four.
    let many: Vec<Peer> = (1..=5).map(|i| peer("alice", &format!("a{i}"))).collect();
    let bob = peer("bob", "b1");
    let carol = peer("carol", "c1");
    let mut listed: Vec<&Peer> = many.iter().collect();
    listed.push(&bob);
    listed.push(&carol);
    let room = size(&many[0]) * 4;
    let list = bounded_peers(listed.clone(), room);
    assert!(list.truncated);
    // Members in key order, each one's sessions in name order.
    let names: Vec<&str> = list.peers.iter().map(|p| p.display_name.as_str()).collect();
    assert_eq!(names, ["a1", "b1", "c1", "a2"]);
    // All of them fit: nothing cut, the order as given.
    let list = bounded_peers(listed, room * 2);
    assert!(!list.truncated);
    assert_eq!(list.peers.len(), 7);
}

#[test]
fn a_large_peer_does_not_keep_smaller_ones_out() {
    let mut big = peer("alice", "a1");
    big.summary = "x".repeat(500);
    let small = peer("bob", "b1");
    let list = bounded_peers(vec![&big, &small], size(&small) + 10);
    assert!(list.truncated);
    let names: Vec<&str> = list.peers.iter().map(|p| p.display_name.as_str()).collect();
    assert_eq!(names, ["b1"]);
}

#[test]
fn last_seen_is_set_when_a_members_last_connection_goes() {
    let mut m = Mesh::new();
    let d = m.daemon_conn("alice");
    let a = m.session_conn("alice");
    assert_eq!(m.state.last_seen("alice"), None);
    m.state.remove_conn(d.id, Departure::Dropped);
    assert_eq!(m.state.last_seen("alice"), None);
    let before = crate::clock::system_now_ms();
    m.state.remove_conn(a.id, Departure::Shutdown);
    let seen = m.state.last_seen("alice").unwrap();
    assert!(seen >= before, "{seen} < {before}");
    assert_eq!(m.state.last_seen("bob"), None);
}

#[test]
fn groups_are_named_without_at_and_without_repeats() {
    assert_eq!(
        normalize_groups(vec![
            "@ops".into(),
            "ops".into(),
            " dev ".into(),
            "".into(),
            "@".into(),
        ]),
        ["ops", "dev"]
    );
    let long = "g".repeat(MAX_GROUP_CHARS + 10);
    assert_eq!(normalize_group(&long).chars().count(), MAX_GROUP_CHARS);
    assert_eq!(normalize_group("a\u{7}b"), "ab");
}

#[test]
fn broadcast_and_member_sends_reach_the_right_connections() {
    let mut m = Mesh::new();
    let mut a1 = m.session_conn("alice");
    let mut a2 = m.daemon_conn("alice");
    let mut b = m.session_conn("bob");
    let ping = Message::Text(
        "{\"type\":\"event\",\"event\":\"peer_left\",\"peer\":{\"displayName\":\"x\"}}".into(),
    );
    m.state.broadcast(&ping, Some(a1.id));
    assert_eq!(a1.take().len(), 0);
    assert_eq!(a2.take().len(), 1);
    assert_eq!(b.take().len(), 1);
    m.state.send_to_member("alice", &ping);
    assert_eq!(a1.take().len(), 1);
    assert_eq!(a2.take().len(), 1);
    assert_eq!(b.take().len(), 0);
}
