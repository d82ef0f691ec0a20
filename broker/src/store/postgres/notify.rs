//! The cluster's notifications: what one node tells the others through
//! PostgreSQL `NOTIFY` on one channel.
//!
//! Each is sent inside the transaction that makes it true (`pg_notify` is
//! delivered at commit, and not at all on rollback), so a node never hears
//! of a message, receipt or revocation that is not in the database.
//! Payloads carry ids and small fields only, never ciphertext: PostgreSQL
//! refuses a payload of 8000 bytes or more, so lists are split over
//! several notifications of at most [`MAX_PAYLOAD_BYTES`].

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
    #[serde(rename = "msg")]
    Messages { node: String, seqs: Vec<i64> },
    /// A copy was delivered or seen: relay the receipt to the sender.
    #[serde(rename = "rcpt")]
    Receipt {
        node: String,
        mesh: String,
        sender: String,
        message_id: String,
        /// The recipient's public key.
        member: String,
        /// `seen`: the session that saw it.
        session: Option<String>,
        /// The sessions the copy named (empty: the whole member).
        sessions: Vec<String>,
        seen: bool,
        at: i64,
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

/// One `Messages` notification per chunk of `seqs` that fits a payload.
pub fn messages(node: &str, seqs: &[i64]) -> Vec<ClusterEvent> {
    // A number takes at most 20 bytes and a comma.
    let per = (MAX_PAYLOAD_BYTES.saturating_sub(node.len() + 64) / 21).max(1);
    seqs.chunks(per)
        .map(|c| ClusterEvent::Messages {
            node: node.to_owned(),
            seqs: c.to_vec(),
        })
        .collect()
}

/// A receipt, split over several notifications when the sessions it
/// names do not fit one (each carries some of them: the receipt frames
/// are one per session anyway).
pub fn receipts(template: ClusterEvent) -> Vec<ClusterEvent> {
    let ClusterEvent::Receipt { sessions, .. } = &template else {
        return vec![template];
    };
    if template.to_payload().len() <= MAX_PAYLOAD_BYTES {
        return vec![template];
    }
    let mut out = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut bytes = 0;
    let base = {
        let mut t = template.clone();
        if let ClusterEvent::Receipt { sessions, .. } = &mut t {
            sessions.clear();
        }
        t
    };
    let base_len = base.to_payload().len();
    let with = |chunk: Vec<String>| {
        let mut t = base.clone();
        if let ClusterEvent::Receipt { sessions, .. } = &mut t {
            *sessions = chunk;
        }
        t
    };
    for s in sessions {
        // Quotes, comma and JSON escapes (control characters are not
        // allowed in session ids, so at most the quotes and comma).
        let cost = s.len() + 3;
        if !chunk.is_empty() && base_len + bytes + cost > MAX_PAYLOAD_BYTES {
            out.push(with(std::mem::take(&mut chunk)));
            bytes = 0;
        }
        bytes += cost;
        chunk.push(s.clone());
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

    #[test]
    fn message_numbers_are_split_under_the_payload_limit() {
        let seqs: Vec<i64> = (i64::MAX - 5000..i64::MAX).collect();
        let events = messages("node-1", &seqs);
        assert!(events.len() > 1);
        let mut back = Vec::new();
        for e in &events {
            assert!(e.to_payload().len() <= MAX_PAYLOAD_BYTES);
            let ClusterEvent::Messages { seqs, .. } = ClusterEvent::parse(&e.to_payload()).unwrap()
            else {
                panic!("not a messages event");
            };
            back.extend(seqs);
        }
        assert_eq!(back, seqs);
    }

    #[test]
    fn a_receipt_naming_many_sessions_is_split_under_the_payload_limit() {
        let sessions: Vec<String> = (0..256).map(|i| format!("{i:0>100}")).collect();
        let template = ClusterEvent::Receipt {
            node: "n".into(),
            mesh: "m".into(),
            sender: "s".into(),
            message_id: "msg".into(),
            member: "ab".repeat(32),
            session: None,
            sessions: sessions.clone(),
            seen: false,
            at: 1,
        };
        let parts = receipts(template);
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        for p in &parts {
            assert!(p.to_payload().len() <= MAX_PAYLOAD_BYTES);
            if let ClusterEvent::Receipt { sessions, .. } = p {
                back.extend(sessions.clone());
            }
        }
        assert_eq!(back, sessions);
    }
}
