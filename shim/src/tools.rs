//! The six tools: their schemas and descriptions (which tell the model when
//! to use each), and what each does with the daemon.
//!
//! Every successful result carries concise text plus the same facts as
//! structured content, and, while messages wait for this session, a note
//! saying so (one of the ways an inbound message reaches the model).

use std::sync::Arc;

use claudemesh_protocol::ipc::{IpcError, IpcErrorCode, Request, Response, SendArgs};
use claudemesh_protocol::limits::{self, MessageError};
use claudemesh_protocol::wire::{PeerStatus, Priority};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::format;
use crate::session::{Failure, Session};

pub fn list() -> Vec<Tool> {
    vec![
        tool(
            "list_peers",
            "Who else is working: list the other Claude Code sessions (peers) on the mesh that \
             you can message, each with its name, status (idle/working/dnd), a one-line summary \
             of its work, folder and host; yours is marked (you). Use it before messaging a \
             session whose name you do not know, or to find who works on a given project.",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
            true,
        ),
        tool(
            "send_message",
            "Message another session: send a message to another Claude Code session (or a \
             group, or all) on the mesh, to ask the session that owns other code a question, \
             hand over a task, reply to a message, or announce a change that affects them. \
             Returns the message id and, per recipient, delivered or queued (offline; they get \
             it when back). Replies arrive later as messages to you.",
            json!({
                "type": "object",
                "properties": {
                    "to": {
                        "type": "string",
                        "description": "A session name from list_peers (e.g. \"api@laptop\"), \
                            \"@group\" for a group, \"*\" for every other session, or an id \
                            (\"<pubkey>\" or \"<pubkey>/<sessionId>\")."
                    },
                    "text": {
                        "type": "string",
                        "description": "The message, self-contained: the recipient has none of \
                            your context."
                    },
                    "priority": {
                        "type": "string",
                        "enum": ["now", "next", "low"],
                        "default": "next",
                        "description": "now: interrupts the recipient even while it works \
                            (urgent or blocking only); next: shown when it is between tasks \
                            (default); low: for information, read whenever it checks."
                    }
                },
                "required": ["to", "text"],
                "additionalProperties": false
            }),
            false,
        ),
        tool(
            "check_messages",
            "Check unread messages: read the messages other sessions sent you that you have \
             not seen yet (your inbox); each is then marked read. Call it when a result says \
             you have unread mesh messages, when you wait for a reply, or before a new task.",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
            false,
        ),
        tool(
            "message_status",
            "Delivery status of a message you sent, per recipient: queued (not yet on their \
             machine), delivered (there, not yet read) or seen (read: shown to their model). \
             Use it to decide whether to keep waiting for a reply or follow up.",
            json!({
                "type": "object",
                "properties": {
                    "message_id": {
                        "type": "string",
                        "description": "The id send_message returned."
                    }
                },
                "required": ["message_id"],
                "additionalProperties": false
            }),
            true,
        ),
        tool(
            "set_summary",
            "Tell the other sessions in one line what you are working on (they see it in \
             list_peers), so they know whom to ask about what. Set it when you start a task or \
             your focus changes.",
            json!({
                "type": "object",
                "properties": {
                    "summary": {
                        "type": "string",
                        "description": "One line, e.g. \"refactoring the auth middleware in api/\"."
                    }
                },
                "required": ["summary"],
                "additionalProperties": false
            }),
            false,
        ),
        tool(
            "set_status",
            "Set your availability, which decides when messages reach you and what peers see in \
             list_peers: idle (messages reach you at once), working (only `now` messages \
             interrupt you; the rest wait until you are idle again), dnd (tells peers not to \
             expect quick answers; messages still reach you). Set working when you start a \
             long task and idle when you finish.",
            json!({
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["idle", "working", "dnd"]}
                },
                "required": ["status"],
                "additionalProperties": false
            }),
            false,
        ),
    ]
}

fn tool(name: &'static str, description: &'static str, schema: Value, read_only: bool) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("tool schemas are objects")
    };
    let mut annotations = ToolAnnotations::default();
    annotations.read_only_hint = Some(read_only);
    annotations.destructive_hint = Some(false);
    annotations.open_world_hint = Some(true);
    Tool::new(name, description, Arc::new(schema)).with_annotations(annotations)
}

/// What a tool produced: the text the model reads, and the same as data.
struct Outcome {
    text: String,
    data: Value,
}

impl From<(String, Value)> for Outcome {
    fn from((text, data): (String, Value)) -> Self {
        Outcome { text, data }
    }
}

enum ToolError {
    /// The model passed something wrong: say what to pass instead.
    BadArgs(String),
    Failed(Failure),
}

impl From<Failure> for ToolError {
    fn from(f: Failure) -> Self {
        ToolError::Failed(f)
    }
}

/// Runs tool `name`; `None` when there is no such tool.
pub async fn call(session: &Arc<Session>, name: &str, args: &JsonObject) -> Option<CallToolResult> {
    let outcome = match name {
        "list_peers" => list_peers(session).await,
        "send_message" => send_message(session, args).await,
        "check_messages" => check_messages(session).await,
        "message_status" => message_status(session, args).await,
        "set_summary" => set_summary(session, args).await,
        "set_status" => set_status(session, args).await,
        _ => return None,
    };
    Some(match outcome {
        Ok(outcome) => with_unread_note(session, outcome).await,
        Err(e) => error_result(e),
    })
}

async fn with_unread_note(session: &Arc<Session>, outcome: Outcome) -> CallToolResult {
    let Outcome { text, mut data } = outcome;
    let mut content = vec![ContentBlock::text(text)];
    if let Ok(Response::Pending { count }) = session.call(Request::Pending).await
        && count > 0
    {
        let note = format::unread_note(count);
        if let Value::Object(map) = &mut data {
            map.insert("unread".into(), json!(count));
        }
        content.push(ContentBlock::text(note));
    }
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(data);
    result
}

fn error_result(e: ToolError) -> CallToolResult {
    let (kind, code, text) = match e {
        ToolError::BadArgs(text) => ("invalid_arguments", None, text),
        ToolError::Failed(Failure::Refused(e)) => {
            // A hint the daemon's sentence already gives is not repeated.
            let hint = match e.code {
                IpcErrorCode::UnknownTarget if !e.message.contains("list_peers") => {
                    "Call list_peers for the names you can send to."
                }
                IpcErrorCode::UnknownMesh if !e.message.contains("claudemesh-ctl") => {
                    "Run `claudemesh-ctl list` to see the joined meshes."
                }
                _ => "",
            };
            (
                "refused",
                Some(e.code.to_string()),
                sentences(&e.message, hint),
            )
        }
        ToolError::Failed(f @ Failure::Unreachable(_)) => {
            ("daemon_unreachable", None, f.to_string())
        }
        ToolError::Failed(f @ Failure::Config(_)) => ("misconfigured", None, f.to_string()),
        ToolError::Failed(f @ Failure::Unexpected(_)) => ("unexpected", None, f.to_string()),
    };
    let mut result = CallToolResult::error(vec![ContentBlock::text(text.clone())]);
    let mut data = json!({"error": kind, "message": text});
    if let Some(code) = code {
        data["code"] = json!(code);
    }
    result.structured_content = Some(data);
    result
}

/// `first` as a sentence, then `then` (if any).
fn sentences(first: &str, then: &str) -> String {
    let mut text = first.trim().to_owned();
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    if !then.is_empty() {
        text.push(' ');
        text.push_str(then);
    }
    text
}

fn string_arg(args: &JsonObject, key: &str, what: &str) -> Result<String, ToolError> {
    match args.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ToolError::BadArgs(format!("`{key}` is required: {what}.")))
        }
        Some(other) => Err(ToolError::BadArgs(format!(
            "`{key}` must be a string ({what}), not {other}."
        ))),
    }
}

fn unexpected(op: &str, got: &Response) -> ToolError {
    let kind = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    ToolError::Failed(Failure::Unexpected(format!("`{op}` answered `{kind}`")))
}

async fn list_peers(session: &Arc<Session>) -> Result<Outcome, ToolError> {
    match session.call(Request::ListPeers).await? {
        Response::Peers { peers } => {
            let mesh = session
                .attached()
                .await
                .map(|a| a.mesh_slug)
                .unwrap_or_default();
            Ok(format::peers(&mesh, &peers).into())
        }
        other => Err(unexpected("list_peers", &other)),
    }
}

async fn send_message(session: &Arc<Session>, args: &JsonObject) -> Result<Outcome, ToolError> {
    let to = string_arg(
        args,
        "to",
        "a session name from list_peers, @group, or * for everyone",
    )?;
    let text = string_arg(args, "text", "the message to send")?;
    // The daemon's own check, made here too so that a text over the limit
    // never crosses the socket; the same refusal either way.
    let refused = |e: MessageError| {
        ToolError::Failed(Failure::Refused(IpcError::new(e.code(), e.to_string())))
    };
    limits::check_message_text(&text).map_err(refused)?;
    let to = limits::check_message_target(&to)
        .map_err(refused)?
        .to_owned();
    let priority = match args.get("priority") {
        None | Some(Value::Null) => Priority::Next,
        Some(Value::String(p)) => Priority::parse(p.trim()).ok_or_else(|| {
            ToolError::BadArgs(format!("`priority` must be now, next or low, not {p:?}."))
        })?,
        Some(other) => {
            return Err(ToolError::BadArgs(format!(
                "`priority` must be now, next or low, not {other}."
            )));
        }
    };
    let request = Request::Send(SendArgs {
        to: to.clone(),
        text,
        priority,
    });
    match session.call(request).await? {
        Response::Sent(info) => Ok(format::sent(&to, &info).into()),
        other => Err(unexpected("send", &other)),
    }
}

async fn check_messages(session: &Arc<Session>) -> Result<Outcome, ToolError> {
    match session
        .call(Request::FetchInbox { mark_seen: true })
        .await?
    {
        // The daemon first confirms the pushes the session's transcript
        // shows (not returned), then returns every other unseen message,
        // pushed or not.
        Response::Inbox { messages } => Ok(format::inbox(&messages).into()),
        other => Err(unexpected("fetch_inbox", &other)),
    }
}

async fn message_status(session: &Arc<Session>, args: &JsonObject) -> Result<Outcome, ToolError> {
    let id = string_arg(args, "message_id", "the id send_message returned")?;
    let request = Request::MessageStatus {
        message_id: id.trim().to_owned(),
    };
    match session.call(request).await? {
        Response::MessageStatus {
            message_id,
            recipients,
        } => Ok(format::status(&message_id, &recipients).into()),
        other => Err(unexpected("message_status", &other)),
    }
}

async fn set_summary(session: &Arc<Session>, args: &JsonObject) -> Result<Outcome, ToolError> {
    let summary = match args.get("summary") {
        Some(Value::String(s)) => s.trim().to_owned(),
        _ => {
            return Err(ToolError::BadArgs(
                "`summary` is required: one line saying what you work on.".into(),
            ));
        }
    };
    let request = Request::SetSummary {
        summary: summary.clone(),
    };
    match session.call(request).await? {
        Response::Done => {
            let text = if summary.is_empty() {
                "Summary cleared.".to_owned()
            } else {
                format!("Summary set: \"{summary}\".")
            };
            Ok(Outcome {
                text,
                data: json!({"summary": summary}),
            })
        }
        other => Err(unexpected("set_summary", &other)),
    }
}

async fn set_status(session: &Arc<Session>, args: &JsonObject) -> Result<Outcome, ToolError> {
    let status = match args.get("status").and_then(Value::as_str).map(str::trim) {
        Some("idle") => PeerStatus::Idle,
        Some("working") => PeerStatus::Working,
        Some("dnd") => PeerStatus::Dnd,
        _ => {
            return Err(ToolError::BadArgs(
                "`status` must be idle, working or dnd.".into(),
            ));
        }
    };
    match session.call(Request::SetStatus { status }).await? {
        Response::Done => Ok(Outcome {
            text: format!("Status set to {}.", status.as_str()),
            data: json!({"status": status.as_str()}),
        }),
        other => Err(unexpected("set_status", &other)),
    }
}
