//! A target this node does not know yet. The hub's view of the other
//! nodes' sessions is a cache, filled by their notifications a moment
//! after each change; the presence table is the truth. A session is
//! acknowledged only once its row is committed (see
//! [`crate::hub::Hub::presence_committed`]), so a send that the cache
//! cannot resolve, and every `*` and `@group` (whose set the cache may
//! lack a newcomer of), asks the table too.

use std::collections::{BTreeSet, HashMap};

use crate::hub::SessionKey;
use crate::router::{Recipient, Target, Unresolved};
use crate::store::postgres::PgStore;
use crate::store::postgres::presence::PresenceRow;
use crate::store::{Store, StoreError};

/// `resolved` (the hub's answer for `target`), completed from the presence
/// table in a cluster; unchanged on one node, or when the hub's answer
/// cannot be missing anything (a session, name or member it found).
pub async fn complete(
    store: &Store,
    mesh_id: &str,
    target: &Target<'_>,
    sender: &SessionKey,
    resolved: Result<Vec<Recipient>, Unresolved>,
) -> Result<Result<Vec<Recipient>, Unresolved>, StoreError> {
    let Store::Postgres(pg) = store else {
        return Ok(resolved);
    };
    match (target, resolved) {
        (Target::All, Ok(found)) => {
            let rows = rows(pg, mesh_id).await?;
            let more = rows.iter().filter(|r| key(r) != *sender);
            Ok(Ok(merge(found, more)))
        }
        (Target::Group(g), resolved) => {
            let rows = rows(pg, mesh_id).await?;
            let in_group: Vec<&PresenceRow> = rows
                .iter()
                .filter(|r| r.peer.groups.iter().any(|x| x == g))
                .collect();
            Ok(match resolved {
                Ok(found) => Ok(merge(
                    found,
                    in_group.into_iter().filter(|r| key(r) != *sender),
                )),
                // No session of the group is known here: the table may
                // have some.
                Err(_) if in_group.is_empty() => Err(Unresolved::Unknown),
                Err(_) => Ok(merge(
                    Vec::new(),
                    in_group.into_iter().filter(|r| key(r) != *sender),
                )),
            })
        }
        (Target::Session { pubkey, session_id }, Err(miss)) => {
            let rows = rows(pg, mesh_id).await?;
            let row = rows
                .iter()
                .find(|r| r.peer.member == *pubkey && r.session_id == *session_id);
            Ok(match row {
                Some(r) => Ok(merge(Vec::new(), std::iter::once(r))),
                None => Err(miss),
            })
        }
        (Target::Name(name), Err(miss)) => {
            let rows = rows(pg, mesh_id).await?;
            let row = rows.iter().find(|r| r.peer.display_name == *name);
            Ok(match row {
                Some(r) => Ok(merge(Vec::new(), std::iter::once(r))),
                None => Err(miss),
            })
        }
        (_, resolved) => Ok(resolved),
    }
}

async fn rows(pg: &PgStore, mesh_id: &str) -> Result<Vec<PresenceRow>, StoreError> {
    pg.presence_elsewhere_in(mesh_id).await
}

fn key(r: &PresenceRow) -> SessionKey {
    (r.member_id.clone(), r.session_id.clone())
}

/// `found` with the sessions of `rows` it lacks, one recipient per
/// member, members in first-seen order, sessions sorted.
fn merge<'a>(found: Vec<Recipient>, rows: impl Iterator<Item = &'a PresenceRow>) -> Vec<Recipient> {
    let mut order: Vec<String> = Vec::new();
    let mut by_member: HashMap<String, (String, BTreeSet<String>)> = HashMap::new();
    let mut add = |member_id: &str, pubkey: &str, session: &str| {
        by_member
            .entry(member_id.to_owned())
            .or_insert_with(|| {
                order.push(member_id.to_owned());
                (pubkey.to_owned(), BTreeSet::new())
            })
            .1
            .insert(session.to_owned());
    };
    for r in &found {
        for s in &r.sessions {
            add(&r.member_id, &r.pubkey, s);
        }
    }
    for r in rows {
        add(&r.member_id, &r.peer.member, &r.session_id);
    }
    order
        .into_iter()
        .filter_map(|m| {
            let (pubkey, sessions) = by_member.remove(&m)?;
            Some(Recipient {
                member_id: m,
                pubkey,
                sessions: sessions.into_iter().collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use claudemesh_protocol::wire::Peer;

    fn row(member: &str, session: &str) -> PresenceRow {
        PresenceRow {
            mesh_id: "m".into(),
            member_id: member.into(),
            session_id: session.into(),
            node: "n2".into(),
            peer: Peer {
                member: format!("pk-{member}"),
                session_id: session.into(),
                display_name: session.into(),
                status: Default::default(),
                summary: String::new(),
                groups: Vec::new(),
                cwd: "/w".into(),
                host: "h".into(),
                connected_at: 0,
            },
            live: true,
        }
    }

    #[test]
    fn merge_adds_what_the_hub_lacks_once_per_member() {
        let found = vec![Recipient {
            member_id: "bob".into(),
            pubkey: "pk-bob".into(),
            sessions: vec!["b2".into()],
        }];
        let rows = [row("bob", "b1"), row("bob", "b2"), row("carol", "c1")];
        let merged = merge(found, rows.iter());
        assert_eq!(
            merged,
            vec![
                Recipient {
                    member_id: "bob".into(),
                    pubkey: "pk-bob".into(),
                    sessions: vec!["b1".into(), "b2".into()],
                },
                Recipient {
                    member_id: "carol".into(),
                    pubkey: "pk-carol".into(),
                    sessions: vec!["c1".into()],
                },
            ]
        );
    }
}
