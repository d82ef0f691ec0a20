//! Numeric limits fixed by PROTOCOL.md, in one place so that every side
//! enforces the same numbers.

/// A hello (or leave request) is accepted only within this many
/// milliseconds of the verifier's clock, in either direction.
pub const HELLO_SKEW_MS: i64 = 60_000;

/// A client that has not sent `hello` within this long is closed.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// Frames larger than this close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// `meshId`, `memberId`, `sessionId` and send `id` are at most this long.
pub const MAX_ID_CHARS: usize = 64;

/// Undelivered messages wait this long for their member.
pub const QUEUE_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A session whose connection dropped stays listed this long.
pub const PRESENCE_GRACE_MS: u64 = 60_000;

/// A connection silent for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 75_000;

/// Length of an envelope nonce in bytes.
pub const NONCE_BYTES: usize = 24;

// ---------------------------------------------------------------------
// Resource limits: what one member or one stranger may make the broker
// hold. docs/security.md lists each with the test that pushes past it.
// ---------------------------------------------------------------------

/// Sessions one connection may carry (a daemon's `session_open`s).
pub const MAX_SESSIONS_PER_CONNECTION: usize = 256;

/// Sessions one member may have listed at once, over all its connections
/// (sessions in their grace period count).
pub const MAX_SESSIONS_PER_MEMBER: usize = 256;

/// A display name (hello, `session_open`, `/v1/join`) is at most this many
/// characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// A group name is at most this many characters.
pub const MAX_GROUP_CHARS: usize = 64;

/// A session belongs to at most this many groups.
pub const MAX_GROUPS_PER_SESSION: usize = 32;

/// A session's `cwd` is at most this many bytes (Linux's `PATH_MAX`).
pub const MAX_CWD_BYTES: usize = 4096;

/// A session's `host` is at most this many bytes (a DNS name's limit).
pub const MAX_HOST_BYTES: usize = 255;

/// A session's summary is at most this many bytes.
pub const MAX_SUMMARY_BYTES: usize = 4096;

/// The hello's `client` string is at most this many bytes.
pub const MAX_CLIENT_BYTES: usize = 128;

/// The `peers` of a `hello_ack` or `peers_list` take at most this many
/// bytes of JSON; beyond it the list is cut (fairly between members) and
/// the frame says `"truncated": true`. Far below [`MAX_FRAME_BYTES`], so a
/// client that accepts 1 MiB frames always gets its `hello_ack`.
pub const MAX_PEERS_LIST_BYTES: usize = 256 * 1024;

/// Room a `push` needs besides its ciphertext: the sender, the target, the
/// sessions it names (at most [`MAX_SESSIONS_PER_CONNECTION`] ids of
/// [`MAX_ID_CHARS`]) and the JSON around them.
pub const PUSH_HEADROOM_BYTES: usize = 32 * 1024;

/// An envelope's ciphertext is at most this many characters of base64, so
/// that the `push` carrying it fits in [`MAX_FRAME_BYTES`] and every
/// recipient can read it (a push it cannot read would come back on every
/// reconnect and keep it from ever connecting).
pub const MAX_CIPHERTEXT_CHARS: usize = MAX_FRAME_BYTES - PUSH_HEADROOM_BYTES;

/// Bytes of frames waiting to be written to one connection; a connection
/// that lets more pile up (it does not read) is closed with 1013
/// `slow_consumer`. Its messages stay queued in the database.
pub const MAX_OUTBOUND_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Frames waiting to be written to one connection, whatever their size.
pub const MAX_OUTBOUND_QUEUE_FRAMES: usize = 8192;

/// A write to a connection's socket that makes no progress for this long
/// closes the connection (its peer stopped reading).
pub const WRITE_STALL_TIMEOUT_MS: u64 = 30_000;

/// `seen` receipts one member may send per second (token bucket refill) …
pub const RECEIPT_RATE_PER_SEC: f64 = 200.0;

/// … and at once (bucket size). Over it a receipt gets `rate_limited`.
pub const RECEIPT_BURST: f64 = 1000.0;

/// A connection that has not completed a hello (or an HTTP request that is
/// not a WebSocket) is closed this long after it was accepted, whatever it
/// is doing: this bounds slow headers, slow bodies and idle keep-alive.
pub const UNAUTHENTICATED_DEADLINE_MS: u64 = 30_000;

/// Connections not yet authenticated (HTTP requests, WebSockets before
/// their hello), over all clients; the broker lowers it to half of what its
/// open-file limit leaves. When they are full the oldest is closed to make
/// room for a new one, so whoever fills them cannot lock anyone out;
/// authenticated ones are not counted and never evicted.
pub const MAX_UNAUTHENTICATED_CONNECTIONS: usize = 1024;

/// Connections not yet authenticated from one client address (the peer's,
/// or the one a trusted proxy names); further ones are refused.
pub const MAX_UNAUTHENTICATED_PER_IP: usize = 64;

/// An HTTP request body (`/v1/join`, `/v1/leave`) is at most this many bytes.
pub const MAX_HTTP_BODY_BYTES: usize = 16 * 1024;

// ---------------------------------------------------------------------
// Limits of the local socket (`docs/ipc.md`): what a client may ask of
// its daemon in one request.
// ---------------------------------------------------------------------

/// The longest message text a session may send. Leaves room for JSON and
/// per-recipient envelopes under the broker's 1 MiB frame limit.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The longest `to` of a send, once trimmed (a `key/sessionId` is
/// 64 + 1 + [`MAX_ID_CHARS`]; the rest is room for names).
pub const MAX_TARGET_BYTES: usize = 512;

/// Message ids one `mark_seen`, `mark_pushed` or `hook_confirm` may name.
pub const MAX_MESSAGE_IDS_PER_REQUEST: usize = 10_000;

/// Why a free-text field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("`{field}` is limited to {max} {unit}")]
    TooLong {
        field: &'static str,
        max: usize,
        unit: &'static str,
    },
    #[error("`{field}` must not contain control characters (newline, escape, NUL, …)")]
    ControlCharacter { field: &'static str },
}

impl TextError {
    /// The protocol error code: `too_large` or `malformed`.
    pub fn code(&self) -> crate::wire::ErrorCode {
        use crate::wire::ErrorCode;
        match self {
            Self::TooLong { .. } => ErrorCode::TooLarge,
            Self::ControlCharacter { .. } => ErrorCode::Malformed,
        }
    }
}

/// Checks a free-text field of at most `max_bytes` bytes. Control
/// characters are allowed (a summary may have newlines).
pub fn check_text_bytes(
    field: &'static str,
    value: &str,
    max_bytes: usize,
) -> Result<(), TextError> {
    if value.len() > max_bytes {
        return Err(TextError::TooLong {
            field,
            max: max_bytes,
            unit: "bytes",
        });
    }
    Ok(())
}

/// Checks a name: no control character (a name is printed on terminals
/// and must not carry escape sequences) and at most `max_chars`
/// characters once trimmed (names are stored trimmed).
pub fn check_name(field: &'static str, value: &str, max_chars: usize) -> Result<(), TextError> {
    if value.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter { field });
    }
    if value.trim().chars().count() > max_chars {
        return Err(TextError::TooLong {
            field,
            max: max_chars,
            unit: "characters",
        });
    }
    Ok(())
}

/// Checks a single-line field of at most `max_bytes` bytes: no control
/// characters (a `cwd` or `host` is printed in peer lists).
pub fn check_line(field: &'static str, value: &str, max_bytes: usize) -> Result<(), TextError> {
    if value.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter { field });
    }
    check_text_bytes(field, value, max_bytes)
}

/// Why a message to send (its `to` and `text`) was refused. The daemon is
/// the one that checks; a client may check first (the shim must: a text
/// over the limit should not cross the socket) but only with these, so
/// the user reads the same words whoever refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(
        "the message is {bytes} bytes; the limit is {max}; split it or send a file path instead",
        max = MAX_TEXT_BYTES
    )]
    TooLarge { bytes: usize },
    #[error("the message text is empty")]
    Empty,
    #[error("`to` must be a display name, @group, *, a member key or key/sessionId")]
    BadTarget,
}

/// Checks a message's text: not empty, at most [`MAX_TEXT_BYTES`].
pub fn check_message_text(text: &str) -> Result<(), MessageError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(MessageError::TooLarge { bytes: text.len() });
    }
    if text.is_empty() {
        return Err(MessageError::Empty);
    }
    Ok(())
}

/// Checks a message's `to` and returns it trimmed, as it is stored and
/// routed: not empty, at most [`MAX_TARGET_BYTES`], no control characters.
pub fn check_message_target(to: &str) -> Result<&str, MessageError> {
    let to = to.trim();
    if to.is_empty() || to.len() > MAX_TARGET_BYTES || to.chars().any(char::is_control) {
        return Err(MessageError::BadTarget);
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_text_is_checked_against_the_limit_it_names() {
        assert_eq!(check_message_text(&"x".repeat(MAX_TEXT_BYTES)), Ok(()));
        let over = check_message_text(&"x".repeat(MAX_TEXT_BYTES + 1)).unwrap_err();
        assert_eq!(
            over,
            MessageError::TooLarge {
                bytes: MAX_TEXT_BYTES + 1
            }
        );
        assert_eq!(over.code(), "too_large");
        let words = over.to_string();
        assert!(
            words.contains(&format!("the limit is {MAX_TEXT_BYTES}")),
            "{words}"
        );
        assert_eq!(check_message_text(""), Err(MessageError::Empty));
        assert_eq!(MessageError::Empty.code(), "malformed");
    }

    #[test]
    fn a_message_target_is_trimmed_and_bounded() {
        assert_eq!(check_message_target("  alice \t"), Ok("alice"));
        assert_eq!(check_message_target("@team"), Ok("@team"));
        let longest = "a".repeat(MAX_TARGET_BYTES);
        assert_eq!(check_message_target(&longest), Ok(longest.as_str()));
        for bad in [
            String::new(),
            "   ".into(),
            "a".repeat(MAX_TARGET_BYTES + 1),
            "al\u{1b}ice".into(),
        ] {
            assert_eq!(
                check_message_target(&bad),
                Err(MessageError::BadTarget),
                "{bad:?}"
            );
        }
        assert_eq!(MessageError::BadTarget.code(), "malformed");
    }
}
