//! Each reconnect rule, event by event, with the jitter fixed so that the
//! delays are exact.

use super::*;

/// The lowest jitter: every delay is half its ceiling.
fn low() -> f64 {
    0.0
}

fn rules(accepted_before: bool) -> Reconnect {
    Reconnect::new(accepted_before, Backoff::for_links().with_jitter(low))
}

fn rejected(code: &str) -> ConnectError {
    ConnectError::Rejected {
        code: code.into(),
        message: "the broker said no".into(),
    }
}

fn unreachable_broker() -> ConnectError {
    ConnectError::Transport("cannot reach the broker: connection refused".into())
}

fn retry(ms: u64, detail: &str) -> Next {
    Next::RetryAfter {
        delay: Duration::from_millis(ms),
        detail: detail.into(),
    }
}

fn delay_of(next: Next) -> Duration {
    match next {
        Next::RetryAfter { delay, .. } => delay,
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[test]
fn failed_attempts_wait_longer_each_time_up_to_the_cap() {
    let mut r = rules(false);
    let delays: Vec<u64> = (0..9)
        .map(|_| delay_of(r.attempted(Err(&unreachable_broker()))).as_millis() as u64)
        .collect();
    // Half of 0.5 s doubling, capped at half of 30 s.
    assert_eq!(
        delays,
        [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]
    );
}

#[test]
fn a_failed_attempt_reports_why() {
    let mut r = rules(false);
    assert_eq!(
        r.attempted(Err(&unreachable_broker())),
        retry(250, "cannot reach the broker: connection refused")
    );
    assert_eq!(
        r.attempted(Err(&rejected("timestamp_skew"))),
        retry(500, "the broker said no (timestamp_skew)")
    );
}

#[test]
fn an_accepted_hello_serves_and_starts_the_backoff_again() {
    let mut r = rules(false);
    for _ in 0..5 {
        r.attempted(Err(&unreachable_broker()));
    }
    assert_eq!(r.attempted(Ok(())), Next::Serve);
    // Even a connection lost at once waits only the base delay: the reset
    // comes with the accepted hello, not with a stable connection.
    assert_eq!(
        r.ended(Ended::Lost("connection error: reset".into())),
        retry(250, "connection error: reset")
    );
    assert_eq!(
        delay_of(r.ended(Ended::Lost("again".into()))).as_millis(),
        500
    );
}

#[test]
fn lost_connections_back_off_like_failed_attempts() {
    let mut r = rules(true);
    assert_eq!(r.attempted(Ok(())), Next::Serve);
    assert_eq!(
        delay_of(r.ended(Ended::Lost("gone".into()))).as_millis(),
        250
    );
    assert_eq!(
        delay_of(r.attempted(Err(&unreachable_broker()))).as_millis(),
        500
    );
    assert_eq!(
        delay_of(r.attempted(Err(&unreachable_broker()))).as_millis(),
        1000
    );
}

#[test]
fn unauthorized_before_any_accepted_hello_is_retried() {
    // A member not enrolled yet: the link keeps trying.
    let mut r = rules(false);
    for ms in [250, 500, 1000] {
        assert_eq!(
            r.attempted(Err(&rejected("unauthorized"))),
            retry(ms, "the broker said no (unauthorized)")
        );
    }
    assert_eq!(
        delay_of(r.attempted(Err(&rejected("member_revoked")))).as_millis(),
        2000
    );
}

#[test]
fn unauthorized_after_an_accepted_hello_in_this_run_is_final() {
    let mut r = rules(false);
    assert_eq!(r.attempted(Ok(())), Next::Serve);
    r.ended(Ended::Lost("gone".into()));
    assert_eq!(
        r.attempted(Err(&rejected("unauthorized"))),
        Next::GiveUp {
            detail: "the broker said no (unauthorized)".into()
        }
    );
}

#[test]
fn unauthorized_after_an_accepted_hello_in_an_earlier_run_is_final() {
    let mut r = rules(true);
    assert_eq!(
        r.attempted(Err(&rejected("unauthorized"))),
        Next::GiveUp {
            detail: "the broker said no (unauthorized)".into()
        }
    );
}

#[test]
fn any_code_naming_revocation_is_final_once_accepted() {
    for code in ["revoked", "member_revoked", "REVOKED", "Unauthorized"] {
        let mut r = rules(true);
        assert!(
            matches!(r.attempted(Err(&rejected(code))), Next::GiveUp { .. }),
            "{code}"
        );
    }
}

#[test]
fn other_refusals_and_transport_errors_are_retried_once_accepted() {
    let mut r = rules(true);
    for e in [
        rejected("timestamp_skew"),
        rejected("replayed"),
        rejected("closed"),
        rejected("unavailable"),
        unreachable_broker(),
    ] {
        assert!(
            matches!(r.attempted(Err(&e)), Next::RetryAfter { .. }),
            "{e:?}"
        );
    }
}

#[test]
fn a_revocation_while_connected_is_final() {
    let mut r = rules(false);
    r.attempted(Ok(()));
    let detail = "the broker closed the connection: revoked";
    assert_eq!(
        r.ended(Ended::Revoked(detail.into())),
        Next::GiveUp {
            detail: detail.into()
        }
    );
}

#[test]
fn once_revoked_every_later_event_gives_up_the_same_way() {
    let mut r = rules(true);
    let first = r.attempted(Err(&rejected("unauthorized")));
    assert!(matches!(first, Next::GiveUp { .. }));
    assert_eq!(r.attempted(Ok(())), first);
    assert_eq!(r.attempted(Err(&unreachable_broker())), first);
    assert_eq!(r.ended(Ended::Lost("gone".into())), first);
    assert_eq!(r.ended(Ended::Shutdown), first);
}

#[test]
fn a_shutdown_stops_the_link() {
    let mut r = rules(false);
    r.attempted(Ok(()));
    assert_eq!(r.ended(Ended::Shutdown), Next::Stop);
}

#[test]
fn close_frames_are_lost_connections_unless_they_name_revocation() {
    assert_eq!(
        on_close(""),
        Ended::Lost("the broker closed the connection".into())
    );
    assert_eq!(
        on_close("shutdown"),
        Ended::Lost("the broker closed the connection: shutdown".into())
    );
    assert_eq!(
        on_close("slow_consumer"),
        Ended::Lost("the broker closed the connection: slow_consumer".into())
    );
    assert_eq!(
        on_close("revoked"),
        Ended::Revoked("the broker closed the connection: revoked".into())
    );
    assert_eq!(
        on_close("unauthorized"),
        Ended::Revoked("the broker closed the connection: unauthorized".into())
    );
}

#[test]
fn only_a_connection_level_revocation_error_ends_the_connection() {
    let frame = |code: &str, id: Option<&str>| ErrorFrame {
        code: code.into(),
        message: "you are out".into(),
        id: id.map(str::to_owned),
    };
    assert_eq!(
        on_error_frame(&frame("revoked", None)),
        Some(Ended::Revoked("you are out (revoked)".into()))
    );
    assert_eq!(
        on_error_frame(&frame("unauthorized", None)),
        Some(Ended::Revoked("you are out (unauthorized)".into()))
    );
    // An answer to one request, or any other code, leaves it open.
    assert_eq!(on_error_frame(&frame("unauthorized", Some("r1"))), None);
    assert_eq!(on_error_frame(&frame("malformed", None)), None);
    assert_eq!(on_error_frame(&frame("session_taken_over", None)), None);
}

#[test]
fn a_broker_silent_for_the_idle_timeout_is_gone() {
    let start = Instant::now();
    let limit = Duration::from_millis(IDLE_TIMEOUT_MS);
    let mut l = Liveness::new(start);
    assert_eq!(l.on_tick(start + Duration::from_secs(20)), Tick::Ping);
    assert_eq!(
        l.on_tick(start + limit - Duration::from_millis(1)),
        Tick::Ping
    );
    assert_eq!(
        l.on_tick(start + limit),
        Tick::Silent(Ended::Lost("the broker went silent for 75 s".into()))
    );
    // Hearing anything starts the count again.
    l.heard(start + Duration::from_secs(60));
    assert_eq!(l.on_tick(start + limit), Tick::Ping);
    assert!(matches!(
        l.on_tick(start + Duration::from_secs(60) + limit),
        Tick::Silent(_)
    ));
    // A tick that reads a clock from before the last frame is no silence.
    assert_eq!(l.on_tick(start), Tick::Ping);
}
