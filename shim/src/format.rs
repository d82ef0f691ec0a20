//! Turning the daemon's answers into what a model reads: short text it
//! can act on, plus the same facts as structured content.

use std::time::{SystemTime, UNIX_EPOCH};

use claudemesh_protocol::ipc::{InboxMessage, PeerView, RecipientView, SentInfo};
use serde_json::{Value, json};

/// The note appended to tool results while messages wait.
pub fn unread_note(count: u32) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("📬 {count} unread mesh message{s} — call check_messages")
}

pub fn peers(mesh: &str, peers: &[PeerView]) -> (String, Value) {
    let others = peers.iter().filter(|p| !p.is_self).count();
    // The list below also has this session: the count says so, so that
    // "1 other session" is not followed by two lines.
    let and_you = if peers.iter().any(|p| p.is_self) {
        ", and you"
    } else {
        ""
    };
    let mut text = match others {
        0 => format!("No other sessions in mesh \"{mesh}\" right now."),
        1 => format!("1 other session in mesh \"{mesh}\"{and_you}:"),
        n => format!("{n} other sessions in mesh \"{mesh}\"{and_you}:"),
    };
    // Yourself last, so the list starts with whom you can message.
    let mut ordered: Vec<&PeerView> = peers.iter().filter(|p| !p.is_self).collect();
    ordered.extend(peers.iter().filter(|p| p.is_self));
    for view in &ordered {
        let p = &view.peer;
        text.push_str("\n- ");
        text.push_str(&p.display_name);
        if view.is_self {
            text.push_str(" (you)");
        }
        text.push_str(&format!(" — {}", p.status.as_str()));
        if !p.summary.is_empty() {
            text.push_str(&format!(" — \"{}\"", p.summary));
        }
        match (p.cwd.is_empty(), p.host.is_empty()) {
            (false, false) => text.push_str(&format!(" — {} on {}", p.cwd, p.host)),
            (false, true) => text.push_str(&format!(" — {}", p.cwd)),
            (true, false) => text.push_str(&format!(" — on {}", p.host)),
            (true, true) => {}
        }
        if !p.groups.is_empty() {
            let groups: Vec<String> = p.groups.iter().map(|g| format!("@{g}")).collect();
            text.push_str(&format!(" — {}", groups.join(" ")));
        }
    }
    if others > 0 {
        text.push_str("\nMessage one with send_message (to: its name, an @group, or * for all).");
    }
    let list: Vec<Value> = ordered
        .iter()
        .map(|v| {
            let p = &v.peer;
            // Only what the model can use: names address sessions, keys
            // and session ids only cost tokens.
            let mut peer = json!({
                "name": p.display_name,
                "status": p.status.as_str(),
                "cwd": p.cwd,
                "host": p.host,
            });
            if v.is_self {
                peer["self"] = json!(true);
            }
            if !p.summary.is_empty() {
                peer["summary"] = json!(p.summary);
            }
            if !p.groups.is_empty() {
                peer["groups"] = json!(p.groups);
            }
            peer
        })
        .collect();
    (text, json!({ "mesh": mesh, "peers": list }))
}

pub fn sent(to: &str, info: &SentInfo) -> (String, Value) {
    let mut text = format!("Sent message {} to {to}", info.message_id);
    if info.recipients.is_empty() {
        text.push_str(
            ": queued (stored; the mesh link is down, it is delivered once it is back). \
             Check later with message_status.",
        );
    } else {
        text.push_str(" (");
        text.push_str(&recipients_line(&info.recipients));
        text.push_str(").");
        if info.recipients.iter().any(|r| r.state.as_str() == "queued") {
            text.push_str(" Queued recipients are offline and get it when they return.");
        }
    }
    (
        text,
        json!({
            "messageId": info.message_id,
            "recipients": recipients_json(&info.recipients),
        }),
    )
}

pub fn status(message_id: &str, recipients: &[RecipientView]) -> (String, Value) {
    let text = if recipients.is_empty() {
        format!("Message {message_id}: queued, not yet accepted by the mesh (the link is down).")
    } else {
        format!("Message {message_id} ({}).", recipients_line(recipients))
    };
    (
        text,
        json!({ "messageId": message_id, "recipients": recipients_json(recipients) }),
    )
}

fn recipient_name(r: &RecipientView) -> String {
    match (&r.display_name, &r.session_id) {
        (Some(name), _) => name.clone(),
        (None, Some(session)) => format!("{}/{}", short(&r.member), session),
        (None, None) => format!("member {}", short(&r.member)),
    }
}

fn recipients_line(recipients: &[RecipientView]) -> String {
    recipients
        .iter()
        .map(|r| format!("{}: {}", recipient_name(r), r.state.as_str()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn recipients_json(recipients: &[RecipientView]) -> Vec<Value> {
    recipients
        .iter()
        .map(|r| {
            json!({
                "name": recipient_name(r),
                "state": r.state.as_str(),
            })
        })
        .collect()
}

pub fn inbox(messages: &[InboxMessage]) -> (String, Value) {
    let now = now_millis();
    let text = match messages.len() {
        0 => "No new messages.".to_owned(),
        n => {
            let mut text = if n == 1 {
                "1 new message:".to_owned()
            } else {
                format!("{n} new messages:")
            };
            for m in messages {
                text.push_str(&format!(
                    "\n\n[{}] from {} ({}, {}, priority {}):\n{}",
                    m.message_id,
                    m.from.display_name,
                    addressed(&m.to),
                    ago(now, m.sent_at),
                    m.priority.as_str(),
                    m.text
                ));
            }
            text.push_str("\n\nReply with send_message to the sender's name.");
            text
        }
    };
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "from": m.from.display_name,
                "to": m.to,
                "priority": m.priority.as_str(),
                "text": m.text,
            })
        })
        .collect();
    (text, json!({ "messages": list }))
}

fn addressed(to: &str) -> String {
    match to {
        "*" => "to everyone".to_owned(),
        t if t.starts_with('@') => format!("to {t}"),
        _ => "to you".to_owned(),
    }
}

fn short(member: &str) -> &str {
    &member[..member.len().min(12)]
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(now: i64, then: i64) -> String {
    let secs = (now - then).max(0) / 1000;
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => {
            let days = secs / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claudemesh_protocol::wire::{DeliveryState, MessageSender, Peer, PeerStatus, Priority};

    fn peer(name: &str, me: bool) -> PeerView {
        PeerView {
            peer: Peer {
                member: "a".repeat(64),
                session_id: format!("s-{name}"),
                display_name: name.into(),
                status: PeerStatus::Working,
                summary: "auth refactor".into(),
                groups: vec!["backend".into()],
                cwd: "/src/api".into(),
                host: "box".into(),
                connected_at: 0,
            },
            is_self: me,
        }
    }

    #[test]
    fn peers_lists_others_first_and_marks_self() {
        let (text, value) = peers("local", &[peer("me", true), peer("api", false)]);
        // The count names the caller too, since the list has it.
        assert!(
            text.starts_with("1 other session in mesh \"local\", and you:"),
            "{text}"
        );
        let api = text.find("- api").unwrap();
        let me = text.find("- me (you)").unwrap();
        assert!(api < me, "{text}");
        assert!(text.contains("\"auth refactor\" — /src/api on box — @backend"));
        assert_eq!(value["peers"][0]["name"], "api");
        assert_eq!(value["peers"][1]["self"], true);
        assert!(value["peers"][0].get("self").is_none());
    }

    #[test]
    fn sent_says_per_recipient_state() {
        let info = SentInfo {
            message_id: "m1".into(),
            recipients: vec![RecipientView {
                member: "b".repeat(64),
                session_id: Some("s".into()),
                display_name: Some("web".into()),
                state: DeliveryState::Queued,
            }],
        };
        let (text, value) = sent("web", &info);
        assert!(text.contains("(web: queued)."), "{text}");
        assert_eq!(value["recipients"][0]["state"], "queued");
    }

    #[test]
    fn ago_is_human() {
        assert_eq!(ago(100_000, 99_000), "just now");
        assert_eq!(ago(10 * 60_000, 0), "10 min ago");
        assert_eq!(ago(2 * 86_400_000, 0), "2 days ago");
        assert_eq!(
            unread_note(1),
            "📬 1 unread mesh message — call check_messages"
        );
        assert_eq!(
            unread_note(2),
            "📬 2 unread mesh messages — call check_messages"
        );
    }

    /// What the model reads from each tool's typical result, in tokens
    /// estimated as bytes / 4 (text and structured content each; Claude
    /// Code 2.1.332 shows the structured content when there is one).
    /// Prints the figures (`cargo test -p claudemesh-shim --bin
    /// claudemesh-shim result_sizes -- --nocapture`) and holds every
    /// result free of 64-hex keys.
    #[test]
    fn result_sizes() {
        let member = "b".repeat(64);
        let mut web = peer("web@laptop", false);
        web.peer.member = member.clone();
        web.peer.session_id = "s-1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c".into();
        let recipient = RecipientView {
            member: member.clone(),
            session_id: Some("s-1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c".into()),
            display_name: Some("web@laptop".into()),
            state: DeliveryState::Delivered,
        };
        let info = SentInfo {
            message_id: "m-0123456789abcdef01234567".into(),
            recipients: vec![recipient.clone()],
        };
        let message = InboxMessage {
            message_id: "m-0123456789abcdef01234567".into(),
            mesh_slug: "local".into(),
            from: MessageSender {
                member: member.clone(),
                session_id: "s-1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c".into(),
                display_name: "web@laptop".into(),
            },
            to: "api@laptop".into(),
            priority: Priority::Next,
            text: "The users table gained a non-null `tenant_id`; please update the API queries."
                .into(),
            sent_at: now_millis(),
            received_at: now_millis(),
        };
        let results = [
            (
                "list_peers",
                peers("local", &[peer("api@laptop", true), web]),
            ),
            ("send_message", sent("web@laptop", &info)),
            ("check_messages", inbox(std::slice::from_ref(&message))),
            (
                "message_status",
                status("m-0123456789abcdef01234567", &[recipient]),
            ),
        ];
        let hex64 = |s: &str| {
            s.as_bytes()
                .windows(64)
                .any(|w| w.iter().all(u8::is_ascii_hexdigit))
        };
        let mut with_keys = Vec::new();
        for (tool, (text, data)) in results {
            let data = data.to_string();
            println!(
                "{tool}: text {} tokens, structuredContent {} tokens",
                text.len() / 4,
                data.len() / 4
            );
            if hex64(&text) || hex64(&data) {
                with_keys.push(format!("{tool}: {text} {data}"));
            }
        }
        assert!(with_keys.is_empty(), "{with_keys:#?}");
    }
}
