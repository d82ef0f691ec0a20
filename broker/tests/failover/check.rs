//! What a failover must leave true: every acknowledged message reached
//! every recipient session exactly once, from its sender, with its text;
//! nothing reached anyone else; nothing refused was delivered; presence
//! lists exactly the sessions there were, with the same session ids, and
//! nobody saw them leave or join again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use claudemesh_e2e::scenario::peers;

use super::world::{World, peer_key};
use crate::common::cluster::wait_for;

/// Waits until every direct send is answered and every acknowledged
/// message has reached each recipient at least once (exactly once is
/// checked after), then reads what is still in flight.
/// The end of every scenario: a last round once the cluster is whole,
/// every message read, then each promise checked (`refusable`: the phase
/// whose direct sends may be refused; `quiet_from`: when presence had to
/// stop changing), and the counts printed.
pub fn settle_and_verify(w: &mut World, refusable: Option<&str>, quiet_from: Instant) {
    w.rounds_until("settled", 3, "", |_| true);
    drain(w);
    assert_settled_acks(w, "settled");
    let repeats = assert_delivered_exactly_once(w, refusable);
    assert_presence(w, quiet_from);
    eprintln!(
        "{}; {repeats} repeated pushes dropped by direct clients",
        summary(w)
    );
}

pub fn drain(w: &mut World) {
    let cap = Instant::now() + Duration::from_secs(60);
    loop {
        w.read_shims();
        let missing = missing(w);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < cap,
            "after the traffic stopped, still missing:\n{}\n{}",
            missing.join("\n"),
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A peer list round trip: every frame sent to a client before its
    // answer has then been read and recorded.
    for d in &w.directs {
        assert!(d.peers(&w.rt).is_some(), "{} does not answer", d.name);
    }
    w.read_shims();
}

/// Unanswered direct sends, and acknowledged messages a recipient has not
/// got yet.
fn missing(w: &World) -> Vec<String> {
    let mut out = Vec::new();
    for s in &w.sent {
        match acknowledged(w, s) {
            Some(true) => {}
            Some(false) => continue,
            None => {
                out.push(format!("no answer to {}'s send {:?}", s.sender, s.text));
                continue;
            }
        }
        for r in &s.recipients {
            if copies(w, r, &s.text) == 0 {
                out.push(format!("{r} never got {:?}", s.text));
            }
        }
    }
    out
}

/// Whether `s` was acknowledged: `Some(false)` when it was refused, `None`
/// while a direct send is unanswered. A daemon's send is acknowledged when
/// `send_message` answers (stored in its durable outbox).
fn acknowledged(w: &World, s: &super::world::Sent) -> Option<bool> {
    let Some(id) = &s.direct_id else {
        return Some(true);
    };
    let d = w.directs.iter().find(|d| d.name == s.sender).unwrap();
    let r = d.record.lock().unwrap();
    if r.acked.contains_key(id) {
        Some(true)
    } else if r.refused.contains_key(id) {
        Some(false)
    } else {
        None
    }
}

/// How many times session `name` was given `text` (for a direct client:
/// distinct message ids, the protocol's receivers drop repeats).
fn copies(w: &World, name: &str, text: &str) -> usize {
    if let Some(shim) = w.shims.iter().find(|s| s.name == name) {
        return shim.shown.get(text).map_or(0, Vec::len);
    }
    let d = w.directs.iter().find(|d| d.name == name).unwrap();
    let r = d.record.lock().unwrap();
    r.received
        .iter()
        .filter(|x| x.text.as_deref() == Ok(text))
        .map(|x| x.message_id.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// The delivery assertions; `refusable`: the phase whose direct sends may
/// be refused (`unavailable`), if any. Returns the number of repeats the
/// direct clients dropped (a push again on a new connection after the one
/// it came on broke: at least once, as the protocol says).
pub fn assert_delivered_exactly_once(w: &World, refusable: Option<&str>) -> usize {
    let mut problems = Vec::new();
    let by_text: BTreeMap<&str, &super::world::Sent> =
        w.sent.iter().map(|s| (s.text.as_str(), s)).collect();
    let session_id: BTreeMap<&str, &str> = w
        .baseline
        .iter()
        .map(|(_, s, n)| (n.as_str(), s.as_str()))
        .collect();
    let mut repeats = 0;

    for s in &w.sent {
        let Some(true) = acknowledged(w, s) else {
            continue;
        };
        for r in &s.recipients {
            let n = copies(w, r, &s.text);
            if n != 1 {
                problems.push(format!("{r} got {:?} {n} times", s.text));
            }
        }
    }
    for shim in &w.shims {
        for (text, froms) in &shim.shown {
            match by_text.get(text.as_str()) {
                None => problems.push(format!("{} was shown an unknown text {text:?}", shim.name)),
                Some(s) if !s.recipients.contains(&shim.name) => problems.push(format!(
                    "{} was shown {text:?}, not meant for it",
                    shim.name
                )),
                Some(s) if acknowledged(w, s) == Some(false) => {
                    problems.push(format!("{} was shown the refused {text:?}", shim.name))
                }
                Some(s) if froms.iter().any(|f| *f != s.sender) => problems.push(format!(
                    "{} was shown {text:?} from {froms:?}, sent by {}",
                    shim.name, s.sender
                )),
                Some(_) => {}
            }
        }
    }
    for d in &w.directs {
        let r = d.record.lock().unwrap();
        let mut per_connection: BTreeMap<(u32, &str), usize> = BTreeMap::new();
        let mut ids_of_text: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for x in &r.received {
            *per_connection
                .entry((x.connection, x.message_id.as_str()))
                .or_default() += 1;
            let text = match &x.text {
                Ok(t) => t.as_str(),
                Err(e) => {
                    problems.push(format!("{} got {} that {e}", d.name, x.message_id));
                    continue;
                }
            };
            ids_of_text.entry(text).or_default().insert(&x.message_id);
            match by_text.get(text) {
                None => problems.push(format!("{} got an unknown text {text:?}", d.name)),
                Some(s) if !s.recipients.contains(&d.name) => {
                    problems.push(format!("{} got {text:?}, not meant for it", d.name))
                }
                Some(s) if acknowledged(w, s) == Some(false) => {
                    problems.push(format!("{} got the refused {text:?}", d.name))
                }
                Some(s)
                    if x.from_member != w.member_of[&s.sender]
                        || x.from_session != session_id[s.sender.as_str()] =>
                {
                    problems.push(format!(
                        "{} got {text:?} from {}/{}, sent by {}",
                        d.name, x.from_member, x.from_session, s.sender
                    ))
                }
                Some(_) => {}
            }
        }
        for ((connection, id), n) in per_connection {
            if n > 1 {
                problems.push(format!(
                    "{} was pushed {id} {n} times on its connection {connection}",
                    d.name
                ));
            }
        }
        repeats += r.received.len()
            - r.received
                .iter()
                .map(|x| x.message_id.as_str())
                .collect::<BTreeSet<_>>()
                .len();
        for (text, ids) in ids_of_text {
            if ids.len() > 1 {
                problems.push(format!("{} got {text:?} under ids {ids:?}", d.name));
            }
        }
        for (id, err) in &r.refused {
            let phase = w
                .sent
                .iter()
                .find(|s| s.direct_id.as_deref() == Some(id.as_str()))
                .map(|s| s.phase);
            if err["code"] != "unavailable" || phase.is_none() || phase != refusable {
                problems.push(format!(
                    "{}'s send {id} ({phase:?}) was refused: {err}",
                    d.name
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} delivery problem(s):\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        w.logs()
    );
    repeats
}

/// Once the cluster is whole again, a direct client's ack lists every
/// recipient session as `delivered` (a session wrongly left in its
/// grace would be `queued`).
pub fn assert_settled_acks(w: &World, phase: &str) {
    let name_of: BTreeMap<(&str, &str), &str> = w
        .baseline
        .iter()
        .map(|(m, s, n)| ((m.as_str(), s.as_str()), n.as_str()))
        .collect();
    let mut problems = Vec::new();
    for s in w.sent.iter().filter(|s| s.phase == phase) {
        let Some(id) = &s.direct_id else { continue };
        let d = w.directs.iter().find(|d| d.name == s.sender).unwrap();
        let ack = d.record.lock().unwrap().acked.get(id).cloned();
        let Some(ack) = ack else {
            problems.push(format!("{id} ({:?}) was not acked", s.text));
            continue;
        };
        let mut got = BTreeSet::new();
        for r in ack["recipients"].as_array().cloned().unwrap_or_default() {
            let key = (
                r["member"].as_str().unwrap_or(""),
                r["sessionId"].as_str().unwrap_or(""),
            );
            let name = name_of.get(&key).copied().unwrap_or("?");
            if r["state"] != "delivered" {
                problems.push(format!("{id} to {} acked {name} as {}", s.to, r["state"]));
            }
            got.insert(name.to_owned());
        }
        if got != s.recipients {
            problems.push(format!(
                "{id} to {}: ack lists {got:?}, not {:?}",
                s.to, s.recipients
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "acks after the cluster recovered:\n{}\n{}",
        problems.join("\n"),
        w.logs()
    );
}

/// Presence, once any session wrongly left in its grace would have left
/// (`quiet_from` + the grace + the time a node takes to notice a dead
/// one + a margin): every peer list is exactly the sessions at the start,
/// with the same ids, and nobody saw a session leave or join since.
pub fn assert_presence(w: &mut World, quiet_from: Instant) {
    // This wait is not measured: a session kept wrongly in its grace
    // period can only be seen leaving once that grace has run out.
    let until = quiet_from + Duration::from_secs(super::world::GRACE_SECS + 5 + 3);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));

    let mut problems = Vec::new();
    for d in &w.directs {
        let list = d.peers(&w.rt).unwrap_or_default();
        let keys: Vec<(String, String, String)> = list.iter().map(peer_key).collect();
        let set: BTreeSet<_> = keys.iter().cloned().collect();
        // A session's own list leaves it out.
        let others: BTreeSet<_> = w
            .baseline
            .iter()
            .filter(|(_, _, n)| *n != d.name)
            .cloned()
            .collect();
        if set != others || keys.len() != others.len() {
            problems.push(format!("{} lists {keys:?}, not {others:?}", d.name));
        }
    }
    let names = {
        let mut n = w.names();
        n.sort();
        n
    };
    for shim in &mut w.shims {
        let (mut seen, me) = peers(&mut shim.client);
        seen.sort();
        if seen != names || me.as_deref() != Some(shim.name.as_str()) {
            problems.push(format!(
                "{} lists {seen:?} (self {me:?}), not {names:?}",
                shim.name
            ));
        }
    }
    for (k, d) in w.directs.iter().enumerate() {
        let r = d.record.lock().unwrap();
        for (connection, e) in &r.events[w.events_at_baseline[k]..] {
            if matches!(e["event"].as_str(), Some("peer_left" | "peer_joined")) {
                problems.push(format!("{} saw (connection {connection}) {e}", d.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "presence after the failover:\n{}\n{}",
        problems.join("\n"),
        w.logs()
    );
}

/// Waits until HAProxy and every node are healthy and every direct
/// client is connected.
pub fn wait_whole(w: &World) {
    for n in &w.cluster.nodes {
        n.wait_health(200);
        w.cluster.proxy().wait_status(&n.id, "UP");
    }
    let back = wait_for(|| w.all_directs_connected().then_some(()));
    assert!(
        back.is_some(),
        "a direct client never reconnected:\n{}",
        w.logs()
    );
}

/// Per phase: sends by daemons, and direct sends acked / refused.
pub fn summary(w: &World) -> String {
    let mut phases: Vec<&str> = Vec::new();
    for s in &w.sent {
        if !phases.contains(&s.phase) {
            phases.push(s.phase);
        }
    }
    let mut out = Vec::new();
    for p in phases {
        let of: Vec<_> = w.sent.iter().filter(|s| s.phase == p).collect();
        let daemon = of.iter().filter(|s| s.direct_id.is_none()).count();
        let acked = of
            .iter()
            .filter(|s| s.direct_id.is_some() && acknowledged(w, s) == Some(true))
            .count();
        let refused = of
            .iter()
            .filter(|s| acknowledged(w, s) == Some(false))
            .count();
        out.push(format!(
            "{p}: {daemon} daemon sends, {acked} direct acked, {refused} direct refused"
        ));
    }
    out.join("; ")
}
