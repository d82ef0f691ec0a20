//! The outbox's retry rules, without I/O: given a message, the broker's
//! refusal of it, what the daemon knows and the time, what to do next.
//! `outbox.rs` gathers the inputs and carries the verdict out; each rule
//! is tested here on its own, with the row and the time given.

use std::time::Duration;

use claudemesh_protocol::encoding::is_lower_hex;
use claudemesh_protocol::wire::ErrorCode;

use crate::store::OutboxRow;

/// A message re-sealed this many times for `missing_envelope` is failed.
pub const MAX_RESEALS: u32 = 8;
/// A pending message not acked this long after its last transmission is
/// transmitted again (the ack may have been lost).
pub const RETRY_AFTER_MS: i64 = 15_000;
/// How long after a connect `unknown_target` is treated as "not back yet".
pub const SETTLE_WINDOW_MS: i64 = 30_000;
/// The wait before sending again to a target that is not back yet.
pub const TARGET_RETRY: Duration = Duration::from_secs(2);
/// The wait before sending again after a refusal that may pass.
pub const TRANSIENT_RETRY: Duration = Duration::from_secs(1);

/// What the daemon knows besides the row and the refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Situation {
    /// When the mesh's link last connected (ms), if it has.
    pub connected_at: Option<i64>,
    /// The sending client still waits for the answer to its `send`.
    pub sender_waiting: bool,
    /// `to` is a plain name that no known session has, no peer list ever
    /// had, and no member key, group or `*` is: it names no one here.
    pub target_unheard_of: bool,
}

/// What to do with a refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Failed for good: the sender hears the code, the row stays, failed.
    Fail,
    /// Bad input the sender still waits on: it hears the code, and nothing
    /// stays in the outbox.
    Withdraw,
    /// Not yet: note the refusal on the row, do this, then send again.
    Retry(Retry),
}

/// What to do before sending a refused message again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Seal for these members too (64-hex keys the refusal named), and
    /// refresh the peer list.
    Reseal(Vec<String>),
    /// Refresh the peer list (a `missing_envelope` that names no member
    /// this row does not already seal for).
    RefreshPeers,
    /// Open the sending session at the broker again.
    Reopen,
    /// Wait this long.
    After(Duration),
}

/// The rule for a message the broker refused with `code` (and, for
/// `missing_envelope`, the `members` it named) at `now`.
pub fn on_refusal(
    row: &OutboxRow,
    code: &ErrorCode,
    members: &[String],
    situation: &Situation,
    now: i64,
) -> Verdict {
    match code {
        ErrorCode::UnknownTarget => unknown_target(situation, now),
        ErrorCode::MissingEnvelope if row.attempts >= MAX_RESEALS => Verdict::Fail,
        ErrorCode::MissingEnvelope => {
            let mut new: Vec<String> = Vec::new();
            for m in members {
                if is_lower_hex(m, 64) && !row.extra_members.contains(m) && !new.contains(m) {
                    new.push(m.clone());
                }
            }
            Verdict::Retry(if new.is_empty() {
                Retry::RefreshPeers
            } else {
                Retry::Reseal(new)
            })
        }
        // The broker lost the session (it restarted, or dropped it).
        ErrorCode::UnknownSession => Verdict::Retry(Retry::Reopen),
        ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::InternalError => {
            Verdict::Retry(Retry::After(TRANSIENT_RETRY))
        }
        // Everything else is the message's own fault (malformed, too
        // large, wrong role…) or a code this build does not know: sending
        // the same bytes again cannot help.
        _ => Verdict::Fail,
    }
}

/// Right after a (re)connect the recipient's daemon may not be back yet (a
/// restarted broker knows no session until it is): a target that does not
/// resolve then is retried for a while, as it would be queued while the
/// link is down. But a name no one here has ever heard of, refused while
/// its sender still waits, is no one (the broker also checked the members
/// enrolled under that name): the sender hears it at once, and a name that
/// addresses no one is bad input, so nothing stays.
fn unknown_target(situation: &Situation, now: i64) -> Verdict {
    let settling = situation
        .connected_at
        .is_some_and(|at| now.saturating_sub(at) < SETTLE_WINDOW_MS)
        && !(situation.sender_waiting && situation.target_unheard_of);
    if settling {
        Verdict::Retry(Retry::After(TARGET_RETRY))
    } else if situation.sender_waiting {
        Verdict::Withdraw
    } else {
        Verdict::Fail
    }
}

/// True when a pending row's last transmission is old enough that its
/// ack may have been lost: the retry tick sends it again.
pub fn is_overdue(row: &OutboxRow, now: i64) -> bool {
    row.updated_at <= now - RETRY_AFTER_MS
}

#[cfg(test)]
mod tests {
    use claudemesh_protocol::wire::Priority;

    use super::*;
    use crate::store::OutboxState;

    const NOW: i64 = 1_764_168_000_000;

    fn row(attempts: u32) -> OutboxRow {
        OutboxRow {
            id: "m-1".into(),
            mesh_id: "mesh".into(),
            session_id: "s1".into(),
            to: "bob".into(),
            priority: Priority::Next,
            body: Some("{}".into()),
            extra_members: Vec::new(),
            state: OutboxState::Pending,
            broker_message_id: None,
            attempts,
            last_error: None,
            created_at: NOW - 1_000,
            updated_at: NOW - 1_000,
        }
    }

    /// Connected long ago, nobody waiting, a target heard of.
    fn settled() -> Situation {
        Situation {
            connected_at: Some(NOW - 3_600_000),
            sender_waiting: false,
            target_unheard_of: false,
        }
    }

    fn key(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn unknown_target_long_after_the_connect_fails() {
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &settled(), NOW);
        assert_eq!(v, Verdict::Fail);
    }

    #[test]
    fn unknown_target_while_the_sender_waits_is_withdrawn() {
        let s = Situation {
            sender_waiting: true,
            ..settled()
        };
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &s, NOW);
        assert_eq!(v, Verdict::Withdraw);
    }

    #[test]
    fn unknown_target_right_after_a_connect_is_retried() {
        let s = Situation {
            connected_at: Some(NOW - SETTLE_WINDOW_MS + 1),
            ..settled()
        };
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &s, NOW);
        assert_eq!(v, Verdict::Retry(Retry::After(TARGET_RETRY)));
        // A waiting sender of a name heard before also waits it out.
        let s = Situation {
            sender_waiting: true,
            ..s
        };
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &s, NOW);
        assert_eq!(v, Verdict::Retry(Retry::After(TARGET_RETRY)));
    }

    #[test]
    fn the_settle_window_ends_exactly_at_its_length() {
        let s = Situation {
            connected_at: Some(NOW - SETTLE_WINDOW_MS),
            ..settled()
        };
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &s, NOW);
        assert_eq!(v, Verdict::Fail);
    }

    #[test]
    fn a_name_unheard_of_is_withdrawn_at_once_even_right_after_a_connect() {
        let s = Situation {
            connected_at: Some(NOW - 10),
            sender_waiting: true,
            target_unheard_of: true,
        };
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &s, NOW);
        assert_eq!(v, Verdict::Withdraw);
    }

    #[test]
    fn unknown_target_before_any_connect_is_not_settling() {
        let s = Situation {
            connected_at: None,
            ..settled()
        };
        let v = on_refusal(&row(1), &ErrorCode::UnknownTarget, &[], &s, NOW);
        assert_eq!(v, Verdict::Fail);
    }

    #[test]
    fn missing_envelope_reseals_for_the_new_members_it_names() {
        let mut r = row(1);
        r.extra_members = vec![key('a')];
        let named = [key('a'), key('b'), key('b'), "not-a-key".into(), key('C')];
        let v = on_refusal(&r, &ErrorCode::MissingEnvelope, &named, &settled(), NOW);
        assert_eq!(v, Verdict::Retry(Retry::Reseal(vec![key('b')])));
    }

    #[test]
    fn missing_envelope_without_new_members_refreshes_the_peers() {
        let mut r = row(1);
        r.extra_members = vec![key('a')];
        let v = on_refusal(
            &r,
            &ErrorCode::MissingEnvelope,
            &[key('a')],
            &settled(),
            NOW,
        );
        assert_eq!(v, Verdict::Retry(Retry::RefreshPeers));
        let v = on_refusal(&r, &ErrorCode::MissingEnvelope, &[], &settled(), NOW);
        assert_eq!(v, Verdict::Retry(Retry::RefreshPeers));
    }

    #[test]
    fn missing_envelope_after_max_reseals_fails() {
        let named = [key('b')];
        let v = on_refusal(
            &row(MAX_RESEALS - 1),
            &ErrorCode::MissingEnvelope,
            &named,
            &settled(),
            NOW,
        );
        assert_eq!(v, Verdict::Retry(Retry::Reseal(vec![key('b')])));
        let v = on_refusal(
            &row(MAX_RESEALS),
            &ErrorCode::MissingEnvelope,
            &named,
            &settled(),
            NOW,
        );
        assert_eq!(v, Verdict::Fail);
    }

    #[test]
    fn unknown_session_reopens_the_session() {
        let v = on_refusal(&row(1), &ErrorCode::UnknownSession, &[], &settled(), NOW);
        assert_eq!(v, Verdict::Retry(Retry::Reopen));
    }

    #[test]
    fn refusals_that_may_pass_are_retried_after_a_second() {
        for code in [
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::InternalError,
        ] {
            let v = on_refusal(&row(1), &code, &[], &settled(), NOW);
            assert_eq!(v, Verdict::Retry(Retry::After(TRANSIENT_RETRY)), "{code}");
        }
    }

    #[test]
    fn every_other_code_fails_the_message() {
        let retried = [
            ErrorCode::UnknownTarget,
            ErrorCode::MissingEnvelope,
            ErrorCode::UnknownSession,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::InternalError,
        ];
        let others = ErrorCode::KNOWN
            .iter()
            .filter(|c| !retried.contains(c))
            .cloned()
            .chain([ErrorCode::Other("internal".into())]);
        for code in others {
            let v = on_refusal(&row(1), &code, &[], &settled(), NOW);
            assert_eq!(v, Verdict::Fail, "{code}");
        }
    }

    #[test]
    fn a_row_is_overdue_once_its_last_transmission_is_old_enough() {
        let mut r = row(1);
        r.updated_at = NOW - RETRY_AFTER_MS + 1;
        assert!(!is_overdue(&r, NOW));
        r.updated_at = NOW - RETRY_AFTER_MS;
        assert!(is_overdue(&r, NOW));
    }
}
