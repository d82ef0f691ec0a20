//! The `code` of a broker `error` frame (and of the close reasons that
//! share its words), as a type.

use crate::error_code::error_codes;

error_codes! {
    /// Why the broker refused a frame, a connection or an enrollment request
    /// (`/v1/join`, `/v1/leave`) (PROTOCOL.md and docs/protocol.md). Unknown
    /// codes from a newer broker land in [`ErrorCode::Other`].
    ErrorCode {
        /// A frame or field that does not parse or breaks a rule.
        Malformed = "malformed",
        /// A frame `type` the broker does not know.
        UnknownType = "unknown_type",
        /// A second `hello` on a connection.
        UnexpectedHello = "unexpected_hello",
        /// The first frame was not a `hello`.
        NoHello = "no_hello",
        /// Hello check 1: the timestamp is off the broker's clock.
        TimestampSkew = "timestamp_skew",
        /// Hello check 3: the signature does not verify.
        BadSignature = "bad_signature",
        /// Hello check 4: no active member has this key (after acceptance:
        /// revoked).
        Unauthorized = "unauthorized",
        /// Hello check 5: the signature was already used.
        Replayed = "replayed",
        /// The member was revoked (a close reason).
        Revoked = "revoked",
        /// A frame, field or list over its limit.
        TooLarge = "too_large",
        /// Too many sends or receipts from this member.
        RateLimited = "rate_limited",
        /// A `send` whose `to` names no peer, member or group.
        UnknownTarget = "unknown_target",
        /// A `send` without an envelope for some recipient member; the
        /// frame's `members` names them.
        MissingEnvelope = "missing_envelope",
        /// A session this connection does not carry.
        UnknownSession = "unknown_session",
        /// The member has all the connections it may have.
        TooManyConnections = "too_many_connections",
        /// A connection or member over its session limit.
        TooManySessions = "too_many_sessions",
        /// A daemon-only frame on a session connection.
        WrongRole = "wrong_role",
        /// `message_status` for a message this member has no part in.
        UnknownMessage = "unknown_message",
        /// Another connection of the member opened this session.
        SessionTakenOver = "session_taken_over",
        /// The broker cannot take this now (shutting down, disk full).
        Unavailable = "unavailable",
        /// The broker failed (its database); retrying may help.
        InternalError = "internal_error",
        /// Enrollment: the broker holds no mesh with this id.
        UnknownMesh = "unknown_mesh",
        /// Enrollment: the invite link does not decode or a field is bad.
        BadInvite = "bad_invite",
        /// Enrollment: the invite is past its expiry.
        Expired = "expired",
        /// Enrollment: the invite was used as many times as it allows.
        Exhausted = "exhausted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ErrorFrame, ServerFrame};

    #[test]
    fn every_code_round_trips_as_its_snake_case_string() {
        for code in ErrorCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
        }
        let strings: std::collections::BTreeSet<_> =
            ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect();
        assert_eq!(
            strings.len(),
            ErrorCode::KNOWN.len(),
            "two variants share a string"
        );
    }

    #[test]
    fn error_frames_are_byte_identical_to_the_string_codes() {
        let frame = ServerFrame::error(ErrorCode::InternalError, "try again", Some("m-1".into()));
        assert_eq!(
            frame.to_json(),
            r#"{"type":"error","code":"internal_error","message":"try again","id":"m-1"}"#
        );
    }

    #[test]
    fn an_unknown_code_lands_in_other_and_goes_out_unchanged() {
        let text = r#"{"type":"error","code":"mesh_full","message":"m"}"#;
        let frame = ServerFrame::parse(text).unwrap();
        let ServerFrame::Error(ErrorFrame { code, members, .. }) = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(*code, ErrorCode::Other("mesh_full".into()));
        assert!(members.is_empty());
        assert_eq!(frame.to_json(), text);
    }
}
