//! The mesh a failover scenario runs on: 3 `claudemesh-broker serve`
//! nodes on one private PostgreSQL behind HAProxy; two real `claudemeshd`
//! processes (each in its own home) joined by an invite link through
//! HAProxy, with shims attached (alice on daemon A; bob and carol on
//! daemon B; alice and carol in `@backend`); four direct protocol clients
//! (`d1`…`d4`, one member each) through HAProxy. And the traffic they
//! exchange: every send carries a unique text and is recorded with the
//! sessions that must receive it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use claudemesh_broker::admin::{Admin, InviteRole};
use claudemesh_e2e::home::Home;
use claudemesh_e2e::mcp::McpClient;
use claudemesh_e2e::process::Guarded;
use claudemesh_e2e::scenario::wait_for_peers;

use super::direct::Direct;
use crate::common::Member;
use crate::common::cluster::{Cluster, ClusterSpec, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_claudemesh-broker");

/// The presence grace the nodes run with: short, so that a session
/// wrongly left in its grace would be seen leaving within the test.
pub const GRACE_SECS: u64 = 10;

/// A shim session: its client and every message `check_messages` showed it
/// (text → the senders' names, one per showing).
pub struct Shim {
    pub name: String,
    pub client: McpClient,
    pub shown: BTreeMap<String, Vec<String>>,
}

/// One send: who, to what, the unique text, and who must receive it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub phase: &'static str,
    pub sender: String,
    pub to: String,
    pub text: String,
    /// The send id of a direct client; `None` for a daemon's (its
    /// `send_message` answered: stored in the daemon's durable outbox).
    pub direct_id: Option<String>,
    pub recipients: BTreeSet<String>,
}

pub struct World {
    pub scenario: &'static str,
    pub rt: tokio::runtime::Runtime,
    pub cluster: Cluster,
    pub homes: Vec<Home>,
    pub daemons: Vec<Guarded>,
    pub shims: Vec<Shim>,
    pub directs: Vec<Direct>,
    /// Session name → its member's pubkey.
    pub member_of: BTreeMap<String, String>,
    /// Member id → session names on it (for reading node logs).
    pub sessions_of_member_id: BTreeMap<String, Vec<String>>,
    /// `@backend`'s sessions.
    pub backend: BTreeSet<String>,
    /// Daemon B's member pubkey (a `<pubkey>` target: bob and carol).
    pub member_b: String,
    /// (member, sessionId, displayName) of every session, from the
    /// first full peer list.
    pub baseline: BTreeSet<(String, String, String)>,
    /// Events each direct client had seen when the mesh was complete.
    pub events_at_baseline: Vec<usize>,
    pub sent: Vec<Sent>,
    round: usize,
}

impl World {
    pub fn start(scenario: &'static str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = Cluster::start(
            BIN.as_ref(),
            ClusterSpec {
                nodes: 3,
                haproxy: true,
                serve_flags: vec!["--presence-grace".into(), GRACE_SECS.to_string()],
            },
        );
        let admin = Admin::open_store(cluster.dir.path(), Some(&cluster.database_url)).unwrap();
        let mesh = admin.create_mesh("team").unwrap();
        let (_, link) = admin
            .create_invite("team", InviteRole::Member, Some(2), 3600, "")
            .unwrap();
        let mut world = Self {
            scenario,
            rt,
            cluster,
            homes: Vec::new(),
            daemons: Vec::new(),
            shims: Vec::new(),
            directs: Vec::new(),
            member_of: BTreeMap::new(),
            sessions_of_member_id: BTreeMap::new(),
            backend: ["alice", "carol"].map(str::to_owned).into(),
            member_b: String::new(),
            baseline: BTreeSet::new(),
            events_at_baseline: Vec::new(),
            sent: Vec::new(),
            round: 0,
        };
        // One connection at a time, each waited for in the node logs, so
        // that HAProxy's leastconn spreads them over the three nodes.
        for name in ["a", "b"] {
            let home = Home::new(&format!("{scenario}-{name}"));
            let daemon = home.start_daemon_answering(&["--no-local"]);
            let before = world.accepted_total();
            home.ctl_ok(&["join", &link]);
            world.wait_accepted_total(before + 1, "a daemon's connection");
            world.homes.push(home);
            world.daemons.push(daemon);
        }
        for (name, home, groups) in [
            ("alice", 0, "backend"),
            ("bob", 1, ""),
            ("carol", 1, "backend"),
        ] {
            let client = McpClient::start(
                &world.homes[home],
                name,
                &[("CLAUDEMESH_CHANNEL", "0"), ("CLAUDEMESH_GROUPS", groups)],
            );
            world.shims.push(Shim {
                name: name.to_owned(),
                client,
                shown: BTreeMap::new(),
            });
        }
        {
            let mut clients: Vec<&mut McpClient> =
                world.shims.iter_mut().map(|s| &mut s.client).collect();
            wait_for_peers(&mut clients, &["alice", "bob", "carol"]);
        }
        let direct_members: Vec<Arc<Member>> = (1..=4)
            .map(|k| Arc::new(Member::enroll(&admin, &mesh, &format!("d{k}"))))
            .collect();
        let members = admin.list_members("team").unwrap();
        let all_pubkeys: Vec<String> = members.iter().map(|m| m.pubkey.clone()).collect();
        for (k, member) in direct_members.into_iter().enumerate() {
            let before = world.accepted_total();
            let name = format!("d{}", k + 1);
            let url = world.cluster.proxy().ws_url();
            let d = Direct::start(&world.rt, &url, member, &name, all_pubkeys.clone());
            world.wait_accepted_total(before + 1, &format!("{name}'s connection"));
            world.directs.push(d);
        }
        world.learn_baseline(&members);
        world
    }

    /// Waits until every direct client lists the 6 other sessions (a
    /// session's own list leaves it out), and records them all and who is
    /// who.
    fn learn_baseline(&mut self, members: &[claudemesh_broker::admin::MemberInfo]) {
        let names: BTreeSet<String> = self.names().into_iter().collect();
        let mut last = Vec::new();
        let full = wait_for(|| {
            let lists: Vec<Vec<Value>> = self
                .directs
                .iter()
                .map(|d| d.peers(&self.rt).unwrap_or_default())
                .collect();
            let complete = self.directs.iter().zip(&lists).all(|(d, l)| {
                let seen: BTreeSet<String> = l
                    .iter()
                    .filter_map(|p| p["displayName"].as_str().map(str::to_owned))
                    .collect();
                let mut others = names.clone();
                others.remove(&d.name);
                seen == others && l.len() == others.len()
            });
            last = lists.clone();
            complete.then(|| lists.concat())
        })
        .unwrap_or_else(|| panic!("the direct clients never listed {names:?}; last: {last:?}"));
        for p in &full {
            let (member, session, name) = peer_key(p);
            self.member_of.insert(name.clone(), member.clone());
            self.baseline.insert((member, session, name));
        }
        assert_eq!(
            self.baseline.len(),
            names.len(),
            "one (member, session) per name: {:?}",
            self.baseline
        );
        for m in members {
            let on: Vec<String> = self
                .member_of
                .iter()
                .filter(|(_, pk)| **pk == m.pubkey)
                .map(|(n, _)| n.clone())
                .collect();
            self.sessions_of_member_id.insert(m.id.clone(), on);
        }
        self.member_b = self.member_of["bob"].clone();
        assert_eq!(
            self.member_of["carol"], self.member_b,
            "bob and carol share daemon B"
        );
        self.events_at_baseline = self
            .directs
            .iter()
            .map(|d| d.record.lock().unwrap().events.len())
            .collect();
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shims.iter().map(|s| s.name.clone()).collect();
        v.extend(self.directs.iter().map(|d| d.name.clone()));
        v
    }

    /// "connection accepted" lines over every node's log.
    fn accepted_total(&self) -> usize {
        self.cluster
            .nodes
            .iter()
            .map(|n| n.log().matches("connection accepted").count())
            .sum()
    }

    fn wait_accepted_total(&self, want: usize, what: &str) {
        let got = wait_for(|| (self.accepted_total() >= want).then_some(()));
        assert!(
            got.is_some(),
            "{what} never reached a node:\n{}",
            self.logs()
        );
    }

    /// Node id → the sessions whose member has a connection accepted in
    /// that node's log (each member's latest accepted connection wins).
    pub fn placement(&self) -> BTreeMap<String, BTreeSet<String>> {
        // Member id → (timestamp, node) of its latest accepted connection
        // (RFC 3339 timestamps of one format order as strings).
        let mut latest: BTreeMap<String, (String, String)> = BTreeMap::new();
        for node in &self.cluster.nodes {
            for line in node.log().lines() {
                if !line.contains("connection accepted") {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let Some(member) = v["member"].as_str() else {
                    continue;
                };
                let ts = v["timestamp"].as_str().unwrap_or("").to_owned();
                if latest.get(member).is_none_or(|(seen, _)| *seen <= ts) {
                    latest.insert(member.to_owned(), (ts, node.id.clone()));
                }
            }
        }
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (member, (_, node)) in latest {
            let sessions = self
                .sessions_of_member_id
                .get(&member)
                .cloned()
                .unwrap_or_default();
            out.entry(node).or_default().extend(sessions);
        }
        out
    }

    /// The node to kill: one carrying a daemon's sessions and a direct
    /// client's.
    pub fn victim(&self) -> String {
        let placement = self.placement();
        placement
            .iter()
            .find(|(_, s)| {
                s.iter().any(|n| n.starts_with('d')) && s.iter().any(|n| !n.starts_with('d'))
            })
            .map(|(node, _)| node.clone())
            .unwrap_or_else(|| {
                panic!("no node carries both a daemon and a direct client: {placement:?}")
            })
    }

    /// Who must receive a send from `sender` to `to`.
    /// An acknowledged send, with the sessions it must reach.
    fn record(
        &mut self,
        phase: &'static str,
        sender: String,
        to: String,
        text: String,
        direct_id: Option<String>,
    ) {
        let recipients = self.recipients(&sender, &to);
        self.sent.push(Sent {
            phase,
            sender,
            to,
            text,
            direct_id,
            recipients,
        });
    }

    fn recipients(&self, sender: &str, to: &str) -> BTreeSet<String> {
        let all = self.names().into_iter().filter(|n| n != sender);
        match to {
            "*" => all.collect(),
            "@backend" => self
                .backend
                .iter()
                .filter(|n| *n != sender)
                .cloned()
                .collect(),
            pk if pk == self.member_b => all.filter(|n| self.member_of[n] == *pk).collect(),
            name => BTreeSet::from([name.to_owned()]),
        }
    }

    /// One round of traffic: every session sends one message (targets
    /// rotate over every form), and every shim reads its new messages.
    pub fn round(&mut self, phase: &'static str) {
        let r = self.round;
        self.round += 1;
        self.send_from_shims(phase, r);
        self.send_from_directs(phase, r);
        self.read_shims();
        std::thread::sleep(Duration::from_millis(100));
    }

    /// A round of the direct clients' sends alone, which never wait (a
    /// shim's `send_message` waits up to 2 s for the broker's ack).
    pub fn direct_round(&mut self, phase: &'static str) {
        let r = self.round;
        self.round += 1;
        self.send_from_directs(phase, r);
        std::thread::sleep(Duration::from_millis(100));
    }

    fn send_from_shims(&mut self, phase: &'static str, r: usize) {
        let shim_targets = [
            ["d1", "*", "bob"],
            ["d2", "*", "@backend"],
            ["d3", "*", "alice"],
        ];
        for i in 0..self.shims.len() {
            let to = shim_targets[i][(r + i) % 3].to_owned();
            let sender = self.shims[i].name.clone();
            let text = format!("{} {phase} #{r} {sender} -> {to}", self.scenario);
            let (is_error, answer, _) = self.shims[i].client.call_tool(
                "send_message",
                json!({"to": to, "text": text, "priority": "next"}),
            );
            assert!(
                !is_error,
                "{sender}'s send_message to {to} failed: {answer}"
            );
            self.record(phase, sender, to, text, None);
        }
    }

    fn send_from_directs(&mut self, phase: &'static str, r: usize) {
        for j in 0..self.directs.len() {
            let sender = self.directs[j].name.clone();
            let other = format!("d{}", (j + 1) % self.directs.len() + 1);
            let to = match (r + j) % 5 {
                0 => self.shims[(r + j) % self.shims.len()].name.clone(),
                1 => other,
                2 => "*".to_owned(),
                3 => "@backend".to_owned(),
                _ => self.member_b.clone(),
            };
            let label = if to == self.member_b {
                "<pubkey B>"
            } else {
                &to
            };
            let text = format!("{} {phase} #{r} {sender} -> {label}", self.scenario);
            let id = format!("{sender}-{r}");
            self.directs[j].send(&id, &to, &text);
            self.record(phase, sender, to, text, Some(id));
        }
    }

    /// A round with `disruption` (a node killed, the database stopped)
    /// happening on another thread meanwhile, while sends are in flight.
    pub fn round_during(&mut self, phase: &'static str, disruption: impl FnOnce() + Send) {
        std::thread::scope(|s| {
            s.spawn(move || {
                // Into the round: the first sends are on their way.
                std::thread::sleep(Duration::from_millis(20));
                disruption();
            });
            self.round(phase);
        });
    }

    /// Rounds until `done` holds, at least `min` of them; panics with
    /// `what` after a cap.
    pub fn rounds_until(
        &mut self,
        phase: &'static str,
        min: usize,
        what: &str,
        mut done: impl FnMut(&World) -> bool,
    ) {
        let cap = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        loop {
            self.round(phase);
            n += 1;
            if n >= min && done(self) {
                return;
            }
            assert!(
                Instant::now() < cap,
                "{what} did not happen; logs:\n{}",
                self.logs()
            );
        }
    }

    /// Every shim's `check_messages`, recorded.
    pub fn read_shims(&mut self) {
        for shim in &mut self.shims {
            let (is_error, answer, result) = shim.client.call_tool("check_messages", json!({}));
            assert!(!is_error, "{}'s check_messages failed: {answer}", shim.name);
            for m in result["structuredContent"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let text = m["text"].as_str().unwrap_or("<no text>").to_owned();
                let from = m["from"].as_str().unwrap_or("").to_owned();
                shim.shown.entry(text).or_default().push(from);
            }
        }
    }

    pub fn all_directs_connected(&self) -> bool {
        self.directs.iter().all(Direct::is_connected)
    }

    /// Every node's log, HAProxy's, and the daemons', for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.cluster.nodes {
            out.push_str(&format!("----- node {} -----\n{}\n", n.id, tail(&n.log())));
        }
        if let Some(p) = &self.cluster.haproxy {
            out.push_str(&format!("----- haproxy -----\n{}\n", tail(&p.log())));
        }
        for h in &self.homes {
            out.push_str(&format!(
                "----- daemon {} -----\n{}\n",
                h.name,
                tail(&h.daemon_log())
            ));
        }
        out
    }
}

/// Sends `signal` (`KILL`, `INT`…) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Stops the PostgreSQL server whose directory is `root` (the harness's
/// layout: `data/postmaster.pid`) as `pg_ctl stop -m fast` does, with
/// SIGINT to the postmaster, and waits until it is gone. By signal
/// because this runs on another thread while the test drives traffic.
pub fn stop_postgres(root: &std::path::Path) {
    let pid_file = root.join("data").join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
    let pid: u32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the postmaster's pid");
    signal(pid, "INT");
    let gone = wait_for(|| (!pid_file.exists()).then_some(()));
    assert!(gone.is_some(), "PostgreSQL did not stop");
}

/// The end of a log: where a failure shows.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(150)..].join("\n")
}

/// (member, sessionId, displayName) of a peer.
pub fn peer_key(p: &Value) -> (String, String, String) {
    let s = |k: &str| p[k].as_str().unwrap_or("").to_owned();
    (s("member"), s("sessionId"), s("displayName"))
}
