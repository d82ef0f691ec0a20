//! Resolving a `send`'s `to` into recipient members and sessions.
//!
//! | form | recipients |
//! |---|---|
//! | `*` | every listed session of the mesh but the sending one |
//! | `@group` | every listed session in the group but the sending one |
//! | `<pubkey>/<sessionId>` | that session |
//! | `<pubkey>` | the whole member (every session, now and on return) |
//! | anything else | the session with that display name; with no such |
//! | | session, the active member enrolled with that name (whole member) |
//!
//! "Listed" includes sessions in their grace period: a message for one of
//! them waits in the database and reaches it when it comes back.

use std::collections::HashMap;

use claudemesh_protocol::encoding::is_lower_hex;

use crate::hub::presence::normalize_group;
use crate::hub::{MeshState, SessionKey};

/// A parsed `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    All,
    Group(String),
    Session {
        pubkey: &'a str,
        session_id: &'a str,
    },
    Member(&'a str),
    Name(&'a str),
}

/// Parses `to`; `None` when it is empty.
pub fn parse(to: &str) -> Option<Target<'_>> {
    if to.is_empty() {
        return None;
    }
    if to == "*" {
        return Some(Target::All);
    }
    if let Some(g) = to.strip_prefix('@') {
        return Some(Target::Group(normalize_group(g)));
    }
    if let Some((pk, sid)) = to.split_once('/')
        && is_lower_hex(pk, 64)
        && !sid.is_empty()
    {
        return Some(Target::Session {
            pubkey: pk,
            session_id: sid,
        });
    }
    if is_lower_hex(to, 64) {
        return Some(Target::Member(to));
    }
    Some(Target::Name(to))
}

/// One recipient member and the sessions the message is for (empty: the
/// whole member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub member_id: String,
    pub pubkey: String,
    pub sessions: Vec<String>,
}

/// Why a target did not resolve from live state alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// Names nothing known: `unknown_target`.
    Unknown,
    /// A member with no listed session: ask the member table whether the
    /// key is an active member. `session` is set for `pubkey/sessionId`.
    AskMembers {
        pubkey: String,
        session: Option<String>,
    },
    /// A display name no listed session has: ask the member table for an
    /// active member enrolled with that name (docs/protocol.md, "Targets").
    AskMemberName(String),
}

fn group_by_member<'a>(
    state: &MeshState,
    keys: impl Iterator<Item = &'a SessionKey>,
) -> Vec<Recipient> {
    let mut order: Vec<String> = Vec::new();
    let mut by_member: HashMap<String, Recipient> = HashMap::new();
    for key in keys {
        let Some(entry) = state.session(key) else {
            continue;
        };
        by_member
            .entry(key.0.clone())
            .or_insert_with(|| {
                order.push(key.0.clone());
                Recipient {
                    member_id: key.0.clone(),
                    pubkey: entry.peer.member.clone(),
                    sessions: Vec::new(),
                }
            })
            .sessions
            .push(key.1.clone());
    }
    let mut out: Vec<Recipient> = order
        .into_iter()
        .filter_map(|m| by_member.remove(&m))
        .collect();
    for r in &mut out {
        r.sessions.sort();
    }
    out
}

/// Resolves `target` against the mesh's live state. `sender` is excluded
/// from `*` and `@group`.
pub fn resolve(
    state: &MeshState,
    target: &Target<'_>,
    sender: &SessionKey,
) -> Result<Vec<Recipient>, Unresolved> {
    match target {
        Target::All => {
            let keys: Vec<&SessionKey> = state
                .sessions()
                .map(|(k, _)| k)
                .filter(|k| *k != sender)
                .collect();
            Ok(group_by_member(state, keys.into_iter()))
        }
        Target::Group(g) => {
            let in_group: Vec<&SessionKey> = state
                .sessions()
                .filter(|(_, e)| e.peer.groups.iter().any(|x| x == g))
                .map(|(k, _)| k)
                .collect();
            if in_group.is_empty() {
                return Err(Unresolved::Unknown);
            }
            Ok(group_by_member(
                state,
                in_group.into_iter().filter(|k| *k != sender),
            ))
        }
        Target::Name(name) => match state.session_by_name(name) {
            Some((key, entry)) => Ok(vec![Recipient {
                member_id: key.0.clone(),
                pubkey: entry.peer.member.clone(),
                sessions: vec![key.1.clone()],
            }]),
            None => Err(Unresolved::AskMemberName((*name).to_owned())),
        },
        Target::Session { pubkey, session_id } => {
            if let Some(member_id) = state.member_of(pubkey) {
                let key = (member_id.to_owned(), (*session_id).to_owned());
                if state.session(&key).is_some() {
                    return Ok(vec![Recipient {
                        member_id: key.0,
                        pubkey: (*pubkey).to_owned(),
                        sessions: vec![key.1],
                    }]);
                }
                if !state.member_conns(member_id).is_empty() {
                    // The member is online and has no such session.
                    return Err(Unresolved::Unknown);
                }
            }
            Err(Unresolved::AskMembers {
                pubkey: (*pubkey).to_owned(),
                session: Some((*session_id).to_owned()),
            })
        }
        Target::Member(pubkey) => match state.member_of(pubkey) {
            Some(member_id) => Ok(vec![Recipient {
                member_id: member_id.to_owned(),
                pubkey: (*pubkey).to_owned(),
                sessions: Vec::new(),
            }]),
            None => Err(Unresolved::AskMembers {
                pubkey: (*pubkey).to_owned(),
                session: None,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        let pk = "ab".repeat(32);
        assert_eq!(parse(""), None);
        assert_eq!(parse("*"), Some(Target::All));
        assert_eq!(parse("@ops"), Some(Target::Group("ops".into())));
        assert_eq!(parse(&pk), Some(Target::Member(&pk)));
        let s = format!("{pk}/s1");
        assert_eq!(
            parse(&s),
            Some(Target::Session {
                pubkey: &pk,
                session_id: "s1"
            })
        );
        assert_eq!(parse("alice"), Some(Target::Name("alice")));
        assert_eq!(parse("x/y"), Some(Target::Name("x/y")));
    }
}
