//! Display names, groups and peer lists: the presence values that are
//! plain data, with no state of their own.

use claudemesh_protocol::limits::{MAX_DISPLAY_NAME_CHARS, MAX_GROUP_CHARS};
use claudemesh_protocol::wire::Peer;

/// A display name that cannot be mistaken for another target form
/// (`*`, `@group`, `pubkey`, `pubkey/session`).
pub fn sanitize_name(requested: Option<&str>, session_id: &str) -> String {
    let mut name: String = requested
        .unwrap_or("")
        .trim()
        .trim_start_matches('@')
        .replace('/', "-")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    if name.is_empty() || name == "*" {
        name = session_id
            .replace('/', "-")
            .trim_start_matches('@')
            .to_owned();
    }
    if name.is_empty() || name == "*" || claudemesh_protocol::encoding::is_lower_hex(&name, 64) {
        name = format!("peer-{}", name.chars().take(8).collect::<String>());
    }
    name
}

/// A list of peers, cut to a size.
pub struct PeerList {
    pub peers: Vec<Peer>,
    /// Some peers were left out to stay within the size.
    pub truncated: bool,
}

/// The peers whose JSON fits in `max_bytes`. When they do not all fit, the
/// members take turns (each member's first session, then each one's
/// second, …), so that a member with many or large sessions cannot push
/// the others out of the list.
pub fn bounded_peers(listed: Vec<&Peer>, max_bytes: usize) -> PeerList {
    let sized: Vec<(&Peer, usize)> = listed
        .into_iter()
        .map(|p| {
            (
                p,
                serde_json::to_string(p).map_or(usize::MAX, |j| j.len() + 1),
            )
        })
        .collect();
    let total = sized
        .iter()
        .fold(0usize, |acc, (_, n)| acc.saturating_add(*n));
    if total <= max_bytes {
        return PeerList {
            peers: sized.into_iter().map(|(p, _)| p.clone()).collect(),
            truncated: false,
        };
    }
    let mut by_member: std::collections::BTreeMap<&str, Vec<(&Peer, usize)>> =
        std::collections::BTreeMap::new();
    for (p, n) in sized {
        by_member.entry(p.member.as_str()).or_default().push((p, n));
    }
    for sessions in by_member.values_mut() {
        sessions.sort_by(|a, b| a.0.display_name.cmp(&b.0.display_name));
    }
    let mut peers = Vec::new();
    let mut used = 0usize;
    let rounds = by_member.values().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        for sessions in by_member.values() {
            if let Some((p, n)) = sessions.get(round)
                && used + n <= max_bytes
            {
                used += n;
                peers.push((*p).clone());
            }
        }
    }
    PeerList {
        peers,
        truncated: true,
    }
}

/// Groups are named without the `@` of the target form; duplicates and
/// empty names are dropped.
pub fn normalize_groups(groups: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        let g = normalize_group(&g);
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// `@backend` and `backend` name the same group.
pub fn normalize_group(g: &str) -> String {
    g.trim()
        .trim_start_matches('@')
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_GROUP_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_look_like_other_targets() {
        assert_eq!(sanitize_name(Some("alice"), "s1"), "alice");
        assert_eq!(sanitize_name(Some("@ops"), "s1"), "ops");
        assert_eq!(sanitize_name(Some("a/b"), "s1"), "a-b");
        assert_eq!(sanitize_name(Some("*"), "s1"), "s1");
        assert_eq!(sanitize_name(None, "s1"), "s1");
        let hex = "a".repeat(64);
        assert!(sanitize_name(Some(&hex), "s1").starts_with("peer-"));
    }
}
