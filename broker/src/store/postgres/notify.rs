//! The cluster's notifications: what one node tells the others through
//! PostgreSQL `NOTIFY` on one channel.
//!
//! Each is sent inside the transaction that makes it true (`pg_notify` is
//! delivered at commit, and not at all on rollback), so a node never hears
//! of a message, receipt or revocation that is not in the database.
//! Payloads carry ids and small fields only, never ciphertext: PostgreSQL
//! refuses a payload of 8000 bytes or more, so lists are split over
//! several notifications of at most [`MAX_PAYLOAD_BYTES`].

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};

use claudemesh_protocol::wire::Peer;

use crate::store::StoreError;

/// The one channel every node listens on.
pub const CHANNEL: &str = "claudemesh";

/// Below PostgreSQL's 8000-byte limit, with room to spare.
pub const MAX_PAYLOAD_BYTES: usize = 7000;

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum ClusterEvent {
    /// Messages were stored by `node`; their copies are in `recipients`.
    /// `to` names, by mesh and member, the numbers of the messages that
    /// have a copy for that member, so that a node reads only the copies
    /// of members connected to it; a number in `seqs` that `to` does not
    /// name may have copies for anyone (too many recipients to list, or
    /// a sender that does not list them).
    #[serde(rename = "msg")]
    Messages {
        node: String,
        seqs: Vec<i64>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        to: Recipients,
    },
    /// A copy was delivered or seen: relay the receipt to the sender (as
    /// nodes that send one notification per receipt announce it).
    #[serde(rename = "rcpt")]
    Receipt {
        node: String,
        #[serde(flatten)]
        receipt: ReceiptNote,
    },
    /// Receipts recorded by one batch of `node`, as many as fit.
    #[serde(rename = "rcpts")]
    Receipts {
        node: String,
        list: Vec<ReceiptNote>,
    },
    /// A session carried by `node` changed (`gone`: it left). `peer` is
    /// left out when it does not fit a payload: the receiver reads the
    /// presence row.
    #[serde(rename = "peer")]
    Presence {
        node: String,
        mesh: String,
        member: String,
        session: String,
        live: bool,
        gone: bool,
        peer: Option<Box<Peer>>,
    },
    /// A member was revoked (by any node, the admin CLI or `/v1/leave`).
    #[serde(rename = "revoke")]
    Revoked {
        seq: i64,
        mesh: String,
        member: String,
    },
}

/// A copy delivered or seen, for the sender's connections on other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptNote {
    pub mesh: String,
    pub sender: String,
    pub message_id: String,
    /// The recipient's public key.
    pub member: String,
    /// `seen`: the session that saw it.
    pub session: Option<String>,
    /// The sessions the copy named (empty: the whole member).
    pub sessions: Vec<String>,
    pub seen: bool,
    pub at: i64,
}

impl ClusterEvent {
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The node that sent it; `None` for a revocation, which the admin
    /// CLI may send too.
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Messages { node, .. }
            | Self::Receipt { node, .. }
            | Self::Receipts { node, .. }
            | Self::Presence { node, .. } => Some(node),
            Self::Revoked { .. } => None,
        }
    }

    /// `None` for a payload this broker does not understand (a newer node
    /// in a mixed cluster): ignored rather than fatal.
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

/// A presence notification, without the peer when it would not fit.
pub fn presence(event: ClusterEvent) -> ClusterEvent {
    if event.to_payload().len() <= MAX_PAYLOAD_BYTES {
        return event;
    }
    match event {
        ClusterEvent::Presence {
            node,
            mesh,
            member,
            session,
            live,
            gone,
            ..
        } => ClusterEvent::Presence {
            node,
            mesh,
            member,
            session,
            live,
            gone,
            peer: None,
        },
        other => other,
    }
}

/// Mesh id -> member id -> the numbers of the messages with a copy for it.
pub type Recipients = BTreeMap<String, BTreeMap<String, Vec<i64>>>;

/// A stored message as its notification names it.
pub struct Announced<'a> {
    pub seq: i64,
    pub mesh_id: &'a str,
    pub member_ids: Vec<&'a str>,
}

/// A number takes at most 20 bytes and a comma.
const SEQ_BYTES: usize = 21;

/// A message whose recipients would take more of a payload than this is
/// announced without them (every node reads all its copies).
const MAX_LISTED_BYTES: usize = MAX_PAYLOAD_BYTES / 4;

/// `Messages` notifications announcing `msgs`, each under the payload
/// limit, with the recipients of each message that fits.
pub fn messages(node: &str, msgs: &[Announced<'_>]) -> Vec<ClusterEvent> {
    // The fixed part, with room for the JSON around it.
    let base = node.len() + 64;
    let mut out = Vec::new();
    let mut seqs = Vec::new();
    let mut to = Recipients::new();
    let mut bytes = base;
    for m in msgs {
        // Quotes, colon, brackets and commas: at most 6 bytes around a
        // key, and ids are plain ASCII (no escapes).
        let listed: usize = m
            .member_ids
            .iter()
            .map(|id| id.len() + 6 + SEQ_BYTES)
            .sum::<usize>()
            + m.mesh_id.len()
            + 6;
        let list = listed <= MAX_LISTED_BYTES;
        let cost = SEQ_BYTES + if list { listed } else { 0 };
        if !seqs.is_empty() && bytes + cost > MAX_PAYLOAD_BYTES {
            out.push(ClusterEvent::Messages {
                node: node.to_owned(),
                seqs: std::mem::take(&mut seqs),
                to: std::mem::take(&mut to),
            });
            bytes = base;
        }
        bytes += cost;
        seqs.push(m.seq);
        if list {
            let mesh = to.entry(m.mesh_id.to_owned()).or_default();
            for id in &m.member_ids {
                mesh.entry((*id).to_owned()).or_default().push(m.seq);
            }
        }
    }
    if !seqs.is_empty() {
        out.push(ClusterEvent::Messages {
            node: node.to_owned(),
            seqs,
            to,
        });
    }
    out
}

/// `Receipts` notifications carrying `notes`, as few as fit the payload
/// limit. A receipt naming more sessions than fit one is split over
/// several (each carries some of them: the receipt frames are one per
/// session anyway).
pub fn receipts(node: &str, notes: Vec<ReceiptNote>) -> Vec<ClusterEvent> {
    // The fixed part, with room for the JSON around it.
    let base = node.len() + 64;
    let mut out = Vec::new();
    let mut list = Vec::new();
    let mut bytes = base;
    for part in notes.into_iter().flat_map(|n| split(n, base)) {
        // A comma between entries.
        let cost = note_len(&part) + 1;
        if !list.is_empty() && bytes + cost > MAX_PAYLOAD_BYTES {
            out.push(ClusterEvent::Receipts {
                node: node.to_owned(),
                list: std::mem::take(&mut list),
            });
            bytes = base;
        }
        bytes += cost;
        list.push(part);
    }
    if !list.is_empty() {
        out.push(ClusterEvent::Receipts {
            node: node.to_owned(),
            list,
        });
    }
    out
}

fn note_len(note: &ReceiptNote) -> usize {
    serde_json::to_string(note).map_or(MAX_PAYLOAD_BYTES, |s| s.len())
}

/// `note`, split by its sessions into parts that each fit a payload
/// beside `base` bytes.
fn split(note: ReceiptNote, base: usize) -> Vec<ReceiptNote> {
    if base + note_len(&note) < MAX_PAYLOAD_BYTES {
        return vec![note];
    }
    let mut empty = note.clone();
    empty.sessions.clear();
    let base = base + note_len(&empty);
    let with = |chunk: Vec<String>| ReceiptNote {
        sessions: chunk,
        ..empty.clone()
    };
    let mut out = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut bytes = 0;
    for s in note.sessions {
        // Quotes, comma and JSON escapes (control characters are not
        // allowed in session ids, so at most the quotes and comma).
        let cost = s.len() + 3;
        if !chunk.is_empty() && base + bytes + cost > MAX_PAYLOAD_BYTES {
            out.push(with(std::mem::take(&mut chunk)));
            bytes = 0;
        }
        bytes += cost;
        chunk.push(s);
    }
    if !chunk.is_empty() {
        out.push(with(chunk));
    }
    out
}

/// Sends `events` on [`CHANNEL`] in one round trip, as part of the
/// transaction `c` is in.
pub async fn send(c: &impl GenericClient, events: &[ClusterEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = events.iter().map(ClusterEvent::to_payload).collect();
    let st = c
        .prepare_cached("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) AS p")
        .await?;
    c.query(&st, &[&CHANNEL, &payloads]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced<'a>(seq: i64, mesh: &'a str, members: &[&'a str]) -> Announced<'a> {
        Announced {
            seq,
            mesh_id: mesh,
            member_ids: members.to_vec(),
        }
    }

    fn parse_messages(e: &ClusterEvent) -> (Vec<i64>, Recipients) {
        assert!(e.to_payload().len() <= MAX_PAYLOAD_BYTES);
        match ClusterEvent::parse(&e.to_payload()).unwrap() {
            ClusterEvent::Messages { seqs, to, .. } => (seqs, to),
            other => panic!("not a messages event: {other:?}"),
        }
    }

    #[test]
    fn message_numbers_and_recipients_are_split_under_the_payload_limit() {
        let member = format!("mem_{}", "a".repeat(32));
        let mesh = format!("mesh_{}", "b".repeat(32));
        let seqs: Vec<i64> = (i64::MAX - 5000..i64::MAX).collect();
        let msgs: Vec<Announced> = seqs
            .iter()
            .map(|&s| announced(s, &mesh, &[&member]))
            .collect();
        let events = messages("node-1", &msgs);
        assert!(events.len() > 1);
        let mut back = Vec::new();
        let mut listed = Vec::new();
        for e in &events {
            let (seqs, to) = parse_messages(e);
            back.extend(seqs);
            listed.extend(to[&mesh][&member].clone());
        }
        assert_eq!(back, seqs);
        assert_eq!(listed, seqs);
    }

    #[test]
    fn a_message_with_too_many_recipients_to_list_is_announced_without_them() {
        let members: Vec<String> = (0..200).map(|i| format!("mem_{i:0>32}")).collect();
        let all: Vec<&str> = members.iter().map(String::as_str).collect();
        let msgs = vec![
            announced(1, "mesh_a", &all[..1]),
            announced(2, "mesh_a", &all),
            announced(3, "mesh_b", &all[1..3]),
        ];
        let events = messages("node-1", &msgs);
        assert_eq!(events.len(), 1);
        let (seqs, to) = parse_messages(&events[0]);
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(to["mesh_a"].len(), 1);
        assert_eq!(to["mesh_a"][all[0]], vec![1]);
        assert_eq!(to["mesh_b"][all[1]], vec![3]);
        assert_eq!(to["mesh_b"][all[2]], vec![3]);
    }

    #[test]
    fn an_announcement_without_recipients_still_parses() {
        // As a node that does not list recipients sends it: every copy is
        // read.
        let (seqs, to) =
            parse_messages(&ClusterEvent::parse(r#"{"t":"msg","node":"n","seqs":[4,5]}"#).unwrap());
        assert_eq!(seqs, vec![4, 5]);
        assert!(to.is_empty());
    }

    fn note(message_id: &str, sessions: Vec<String>) -> ReceiptNote {
        ReceiptNote {
            mesh: "m".into(),
            sender: "s".into(),
            message_id: message_id.into(),
            member: "ab".repeat(32),
            session: None,
            sessions,
            seen: false,
            at: 1,
        }
    }

    fn parse_receipts(e: &ClusterEvent) -> Vec<ReceiptNote> {
        assert!(e.to_payload().len() <= MAX_PAYLOAD_BYTES);
        match ClusterEvent::parse(&e.to_payload()).unwrap() {
            ClusterEvent::Receipts { list, .. } => list,
            other => panic!("not a receipts event: {other:?}"),
        }
    }

    #[test]
    fn a_receipt_naming_many_sessions_is_split_under_the_payload_limit() {
        let sessions: Vec<String> = (0..256).map(|i| format!("{i:0>100}")).collect();
        let parts = receipts("n", vec![note("msg", sessions.clone())]);
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        for p in &parts {
            for n in parse_receipts(p) {
                assert_eq!(n.message_id, "msg");
                back.extend(n.sessions);
            }
        }
        assert_eq!(back, sessions);
    }

    #[test]
    fn a_batch_of_receipts_is_packed_into_few_notifications_under_the_limit() {
        let notes: Vec<ReceiptNote> = (0..500)
            .map(|i| note(&format!("msg_{i}"), vec![format!("session-{i}")]))
            .collect();
        let events = receipts("node-1", notes.clone());
        // About 200 bytes each: dozens per notification.
        assert!(events.len() > 1 && events.len() < 50, "{}", events.len());
        let back: Vec<ReceiptNote> = events.iter().flat_map(parse_receipts).collect();
        assert_eq!(back, notes);
    }

    #[test]
    fn a_receipt_from_a_node_sending_one_each_still_parses() {
        let payload = r#"{"t":"rcpt","node":"n","mesh":"m","sender":"s","message_id":"msg",
            "member":"k","session":"a","sessions":["a"],"seen":true,"at":7}"#;
        let Some(ClusterEvent::Receipt { node, receipt }) = ClusterEvent::parse(payload) else {
            panic!("not a receipt");
        };
        assert_eq!(node, "n");
        assert_eq!(receipt.session.as_deref(), Some("a"));
        assert!(receipt.seen);
        assert_eq!(receipt.at, 7);
    }
}
