use super::*;
use crate::wire::Priority;

#[test]
fn requests_round_trip() {
    let frames = [
        Request::Hello {
            protocol: IPC_VERSION,
            client: "claudemesh-shim/0.1.0".into(),
        },
        Request::Attach(AttachArgs {
            mesh: None,
            display_name: Some("api".into()),
            cwd: "/tmp".into(),
            claude_pid: 42,
            groups: vec!["backend".into()],
            transient: true,
            transcript_path: Some("/home/u/.claude/projects/-tmp/s.jsonl".into()),
        }),
        Request::Detach,
        Request::Send(SendArgs {
            to: "@backend".into(),
            text: "hi".into(),
            priority: Priority::Now,
        }),
        Request::MarkSeen {
            message_ids: vec!["m1".into()],
        },
        Request::MarkPushed {
            message_ids: vec!["m2".into()],
        },
        Request::HookConfirm {
            message_ids: vec!["m3".into()],
        },
        Request::HookContext(HookContextArgs {
            transcript_path: Some("/t/s.jsonl".into()),
        }),
        Request::HookContext(HookContextArgs::default()),
        Request::DaemonStatus,
        Request::WaitWake(WaitWakeArgs {
            wake: WakeLevel::Next,
            timeout_ms: 600_000,
            transcript_path: Some("/home/u/.claude/projects/-w/s.jsonl".into()),
        }),
        Request::HookSession,
    ];
    for request in frames {
        let frame = RequestFrame { id: 7, request };
        let line = frame.to_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(RequestFrame::parse(line.trim_end()).unwrap(), frame);
    }
}

#[test]
fn wait_wake_reads_as_documented() {
    let f =
        RequestFrame::parse(r#"{"id":9,"op":"wait_wake","args":{"wake":"now","timeoutMs":1000}}"#)
            .unwrap();
    assert_eq!(
        f.request,
        Request::WaitWake(WaitWakeArgs {
            wake: WakeLevel::Now,
            timeout_ms: 1000,
            transcript_path: None,
        })
    );
    let e =
        RequestFrame::parse(r#"{"id":9,"op":"wait_wake","args":{"wake":"low","timeoutMs":1000}}"#)
            .unwrap_err();
    assert_eq!(e.error.code, "malformed");
    assert!(WakeLevel::Next.wakes_for(Priority::Next));
    assert!(!WakeLevel::Now.wakes_for(Priority::Next));
    assert!(!WakeLevel::Next.wakes_for(Priority::Low));
    let answer = DaemonFrame::Ok {
        id: 9,
        result: Response::Woken {
            session: None,
            outcome: WakeOutcome::NoSession,
            messages: vec![],
        },
    };
    let line = answer.to_line();
    assert!(
        line.contains(r#""type":"woken""#) && line.contains(r#""outcome":"no_session""#),
        "{line}"
    );
    assert_eq!(DaemonFrame::parse(line.trim_end()).unwrap(), answer);
}

#[test]
fn unit_ops_parse_without_args() {
    let f = RequestFrame::parse(r#"{"id":3,"op":"list_peers"}"#).unwrap();
    assert_eq!(f.request, Request::ListPeers);
    // An older hook sends hook_context without args.
    let f = RequestFrame::parse(r#"{"id":4,"op":"hook_context"}"#).unwrap();
    assert_eq!(f.request, Request::HookContext(HookContextArgs::default()));
}

#[test]
fn bad_requests_get_typed_errors_with_their_id() {
    let e = RequestFrame::parse(r#"{"id":4,"op":"launch_missiles"}"#).unwrap_err();
    assert_eq!((e.id, e.error.code.as_str()), (Some(4), "unknown_op"));
    let e = RequestFrame::parse(r#"{"id":5,"op":"send","args":{"to":"x"}}"#).unwrap_err();
    assert_eq!((e.id, e.error.code.as_str()), (Some(5), "malformed"));
    assert!(e.error.message.contains("text"), "{}", e.error.message);
    let e = RequestFrame::parse("not json").unwrap_err();
    assert_eq!((e.id, e.error.code.as_str()), (None, "malformed"));
    let e = RequestFrame::parse(r#"{"id":-1,"op":"detach"}"#).unwrap_err();
    assert_eq!(e.error.code, "malformed");
}

#[test]
fn every_error_code_round_trips_as_its_string() {
    for code in IpcErrorCode::KNOWN {
        let json = serde_json::to_string(code).unwrap();
        assert_eq!(json, format!("\"{}\"", code.as_str()));
        assert_eq!(&serde_json::from_str::<IpcErrorCode>(&json).unwrap(), code);
    }
    let strings: std::collections::BTreeSet<_> = IpcErrorCode::KNOWN
        .iter()
        .map(IpcErrorCode::as_str)
        .collect();
    assert_eq!(
        strings.len(),
        IpcErrorCode::KNOWN.len(),
        "two variants share a string"
    );
    assert_eq!(
        IpcError::new(IpcErrorCode::NotAClaudeProcess, "x"),
        serde_json::from_str(r#"{"code":"not_a_claude_process","message":"x"}"#).unwrap()
    );
}

#[test]
fn an_unknown_error_code_parses_into_other_and_is_sent_back_unchanged() {
    let line = r#"{"kind":"err","id":3,"error":{"code":"quota_exceeded","message":"m"}}"#;
    let frame = DaemonFrame::parse(line).unwrap();
    let DaemonFrame::Err { error, .. } = &frame else {
        panic!("{frame:?}")
    };
    assert_eq!(error.code, IpcErrorCode::Other("quota_exceeded".into()));
    assert_eq!(frame.to_line().trim_end(), line);
}

#[test]
fn a_broker_code_passed_on_keeps_its_string() {
    use crate::wire::ErrorCode;
    for code in ErrorCode::KNOWN {
        assert_eq!(IpcErrorCode::from(code).as_str(), code.as_str());
    }
    assert_eq!(
        IpcErrorCode::from(&ErrorCode::UnknownTarget),
        IpcErrorCode::UnknownTarget
    );
}

#[test]
fn a_sent_answer_still_says_accepted() {
    let sent = Response::Sent(SentInfo {
        message_id: "m-1".into(),
        recipients: Vec::new(),
    });
    let json = serde_json::to_string(&sent).unwrap();
    assert_eq!(
        json,
        r#"{"type":"sent","messageId":"m-1","accepted":true,"recipients":[]}"#
    );
    assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), sent);
}

#[test]
fn daemon_frames_round_trip() {
    let frames = [
        DaemonFrame::Ok {
            id: 1,
            result: Response::Pending { count: 2 },
        },
        DaemonFrame::Ok {
            id: 2,
            result: Response::MarkedPushed {
                message_ids: vec!["m1".into()],
            },
        },
        DaemonFrame::Err {
            id: None,
            error: IpcError::new("no_hello", "say hello first"),
        },
        DaemonFrame::Event {
            event: Event::LinkState {
                mesh: "local".into(),
                state: LinkState::Connected,
                detail: None,
            },
        },
    ];
    for frame in frames {
        assert_eq!(
            DaemonFrame::parse(frame.to_line().trim_end()).unwrap(),
            frame
        );
    }
}
