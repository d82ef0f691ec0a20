//! `join` and `leave`.
//!
//! `join` is atomic from the user's point of view: the link is checked
//! (shape, signature, expiry) before anything is touched; then a fresh key
//! is stored, the broker enrolls it, and only then is the config written.
//! A failure after the key was stored deletes it again, so a failed join
//! leaves no key and no config behind.

use claudemesh_daemon::config::MeshConfig;
use claudemesh_daemon::keystore::Keystore;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::invite::{self, Invite, InviteError};
use claudemesh_protocol::leave::LeaveRequest;
use claudemesh_protocol::wire::ErrorCode;
use serde_json::{Value, json};

use crate::broker_http::{self, HttpError, broker_override, http_origin};
use crate::ctx;
use crate::daemon::{self, Reload, reload_json, report_reload};
use crate::error::{CtlError, Exit, Result};
use crate::output::{self, BOLD, GREEN, paint};

const ASK_FOR_NEW: &str = "ask the mesh owner for a new invite link";

/// The error for a link that failed a local check, naming the check.
pub fn invite_error(e: &InviteError) -> CtlError {
    let (check, message, hint) = match e {
        InviteError::BadPrefix => (
            "format",
            e.to_string(),
            "paste the whole link the mesh owner sent you, in quotes: \
             claudemesh-ctl join 'ic://join/…'"
                .to_owned(),
        ),
        InviteError::BadEncoding | InviteError::BadPayload(_) => (
            "payload",
            e.to_string(),
            format!(
                "the link was probably cut or altered while being copied; copy it again in full, or {ASK_FOR_NEW}"
            ),
        ),
        InviteError::UnsupportedVersion(_) => (
            "version",
            e.to_string(),
            "upgrade claudemesh, or ask the mesh owner for a version 1 link".to_owned(),
        ),
        InviteError::BadField(_) => (
            "fields",
            e.to_string(),
            format!("the link is damaged or was not made by claudemesh; {ASK_FOR_NEW}"),
        ),
        InviteError::BadSignature => (
            "signature",
            e.to_string(),
            format!("do not use this link; {ASK_FOR_NEW}"),
        ),
        InviteError::Expired { expires_at } => (
            "expiry",
            format!(
                "the invite expired at {} ({})",
                output::format_secs(*expires_at),
                output::ago(expires_at * 1000, ctx::now_ms())
            ),
            ASK_FOR_NEW.to_owned(),
        ),
    };
    CtlError::new(
        Exit::InviteInvalid,
        format!("invalid invite link ({check} check failed): {message}"),
    )
    .hint(hint)
}

/// The error for a `POST /v1/join` the broker refused or never answered.
fn enroll_error(e: HttpError, origin: &str, invite: &Invite) -> CtlError {
    match e {
        HttpError::Unreachable(detail) => CtlError::new(
            Exit::BrokerUnreachable,
            format!("could not reach the broker at {origin}: {detail}"),
        )
        .hint(if broker_override().is_some() {
            "check the network, and CLAUDEMESH_BROKER_URL (it replaces the invite's broker)"
                .to_owned()
        } else {
            format!(
                "check the network and try again; the invite names {} (set CLAUDEMESH_BROKER_URL \
                 to use another broker)",
                invite.broker
            )
        }),
        HttpError::Status {
            status,
            code,
            message,
        } => {
            let said = message.clone().unwrap_or_default();
            let (text, hint): (String, String) = match code.as_deref().map(ErrorCode::parse) {
                Some(ErrorCode::BadInvite) => (
                    format!("the broker refused the invite as malformed: {said}"),
                    ASK_FOR_NEW.into(),
                ),
                Some(ErrorCode::BadSignature) => (
                    "the broker says the invite is not signed by the mesh's owner key".into(),
                    format!("do not use this link; {ASK_FOR_NEW}"),
                ),
                Some(ErrorCode::Expired) => (
                    "the broker says the invite has expired".into(),
                    ASK_FOR_NEW.into(),
                ),
                Some(ErrorCode::Revoked) => (
                    "the invite was revoked by the mesh owner".into(),
                    ASK_FOR_NEW.into(),
                ),
                Some(ErrorCode::Exhausted) => (
                    "the invite has already been used as many times as it allows".into(),
                    ASK_FOR_NEW.into(),
                ),
                Some(ErrorCode::UnknownMesh) => (
                    format!(
                        "the broker at {origin} does not know mesh `{}` ({})",
                        invite.mesh_slug, invite.mesh_id
                    ),
                    if broker_override().is_some() {
                        "CLAUDEMESH_BROKER_URL points at a broker that does not hold this mesh; \
                         unset it or point it at the mesh's broker"
                            .into()
                    } else {
                        format!("the mesh may have been deleted; {ASK_FOR_NEW}")
                    },
                ),
                _ => {
                    return CtlError::failure(format!(
                        "the broker at {origin} refused to enroll this member: HTTP {status}{}{}",
                        code.map(|c| format!(" {c}")).unwrap_or_default(),
                        message.map(|m| format!(": {m}")).unwrap_or_default()
                    ))
                    .hint("try again later; if it persists, tell the broker's operator");
                }
            };
            CtlError::new(Exit::InviteInvalid, format!("invite refused: {text}")).hint(hint)
        }
        HttpError::BadAnswer(detail) => CtlError::failure(format!(
            "the broker at {origin} answered the enrollment oddly: {detail}"
        ))
        .hint("is this URL a claudemesh broker? check CLAUDEMESH_BROKER_URL"),
    }
}

pub struct JoinArgs {
    pub link: String,
    pub name: Option<String>,
    /// `--default`: new sessions and ctl commands use this mesh from now on.
    pub make_default: bool,
    pub json: bool,
}

pub fn join(args: JoinArgs) -> Result<()> {
    // 1. The link, before anything else.
    let link = args.link.trim().to_owned();
    let invite = invite::decode_and_verify(&link, ctx::now_secs()).map_err(|e| invite_error(&e))?;
    output::debug(format_args!(
        "invite for mesh {} ({}) at {}, expires {}",
        invite.mesh_slug,
        invite.mesh_id,
        invite.broker,
        output::format_secs(invite.expires_at)
    ));

    // 2. Already joined?
    let paths = ctx::paths()?;
    let config = ctx::load_config(&paths)?;
    if let Some(m) = config.meshes.iter().find(|m| m.mesh_id == invite.mesh_id) {
        if args.make_default {
            // The membership is there; --default still does what it says.
            return crate::default_mesh::run(Some(&m.mesh_id), args.json);
        }
        if args.json {
            output::json(&json!({"joined": false, "alreadyJoined": true, "mesh": mesh_json(m)}));
        } else {
            output::line(format!(
                "Already a member of mesh {} ({}) as {}; nothing to do.",
                paint(BOLD, &m.slug),
                m.mesh_id,
                m.member_id
            ));
        }
        return Ok(());
    }
    if let Some(other) = config.meshes.iter().find(|m| m.slug == invite.mesh_slug) {
        output::warn(format!(
            "another joined mesh is also called `{}` ({}); use mesh ids to tell them apart",
            other.slug, other.mesh_id
        ));
    }

    let broker_url = broker_override().unwrap_or_else(|| invite.broker.clone());
    let origin = http_origin(&broker_url).map_err(|e| {
        CtlError::failure(format!("cannot use broker URL: {e}"))
            .hint("CLAUDEMESH_BROKER_URL must look like wss://host/ws or https://host")
    })?;
    if broker_override().is_some() {
        output::note(format!(
            "CLAUDEMESH_BROKER_URL is set: enrolling with {origin} instead of {}",
            invite.broker
        ));
    }

    // 3. A fresh key, stored before the broker hears of it.
    let keystore = ctx::keystore(&paths, !args.json)?;
    let key = MemberSecretKey::generate()
        .map_err(|e| CtlError::failure(format!("cannot generate a member key: {e}")))?;
    keystore
        .store(&invite.mesh_id, &key)
        .map_err(|e| CtlError::failure(format!("cannot store the member key: {e}")))?;
    let pubkey = key.public_key().to_hex();

    // 4. Enrollment; on any failure the key goes again.
    let display_name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}@{}", ctx::username(), ctx::hostname()));
    let body = json!({"invite": link, "pubkey": pubkey, "displayName": display_name});
    let spinner = output::Spinner::start(format!("enrolling with {origin}…"));
    let answer = broker_http::post_json(&origin, "/v1/join", &body);
    drop(spinner);
    let enrolled = answer
        .map_err(|e| enroll_error(e, &origin, &invite))
        .and_then(|v| parse_enrollment(&v, &invite));
    let (member_id, slug, answered_broker) = match enrolled {
        Ok(x) => x,
        Err(e) => {
            forget_key(&keystore, &invite.mesh_id);
            return Err(e);
        }
    };

    // 5. The config, last (re-read: the daemon may have written it meanwhile).
    let mesh = MeshConfig {
        mesh_id: invite.mesh_id.clone(),
        slug,
        member_id,
        pubkey,
        broker_url: answered_broker.unwrap_or_else(|| invite.broker.clone()),
        // The name enrolled: ctl sends under it and reads what is sent to it.
        display_name: Some(display_name.clone()),
        local: false,
        joined_at: ctx::now_ms(),
    };
    let mut default_before = None;
    let saved = ctx::load_config(&paths).and_then(|mut config| {
        default_before = crate::default_mesh::slug(&config);
        config.upsert(mesh.clone());
        if args.make_default {
            config.default_mesh = Some(mesh.mesh_id.clone());
        }
        ctx::save_config(&paths, &config)
    });
    if let Err(e) = saved {
        // Undo the enrollment as far as we can, then the key.
        let request = LeaveRequest::signed(&key, &mesh.mesh_id, &mesh.member_id, ctx::now_ms());
        let _ = broker_http::post_json(
            &origin,
            "/v1/leave",
            &serde_json::to_value(&request).expect("serializes"),
        );
        forget_key(&keystore, &invite.mesh_id);
        return Err(e);
    }

    // 6. The daemon.
    let reload = daemon::reload(&paths);
    let default = ctx::load_config(&paths)
        .ok()
        .and_then(|c| crate::default_mesh::slug(&c))
        .unwrap_or_else(|| mesh.slug.clone());
    let (default_line, default_changed) = crate::default_mesh::after_join(
        default_before.as_deref(),
        &default,
        &mesh.slug,
        args.make_default,
    );
    if args.json {
        output::json(&json!({
            "joined": true,
            "alreadyJoined": false,
            "mesh": mesh_json(&mesh),
            "name": display_name,
            "defaultMesh": default,
            "defaultChanged": default_changed,
            "keystore": keystore.kind().as_str(),
            "daemon": reload_json(&reload),
        }));
        return Ok(());
    }
    output::line(format!(
        "{} Joined mesh {} ({}) as member {}",
        paint(GREEN, "✓"),
        paint(BOLD, &mesh.slug),
        mesh.mesh_id,
        mesh.member_id
    ));
    output::line(format!("  broker:   {}", mesh.effective_broker_url()));
    output::line(format!("  key:      {}", keystore.location()));
    output::line(format!(
        "  name:     {display_name} (messages to it reach `claudemesh-ctl inbox`)"
    ));
    let default_line = format!("  default:  {default_line}");
    output::line(if default_changed || default == mesh.slug {
        default_line
    } else {
        // Said loudly: the Quickstart's sessions stay where they were.
        paint(BOLD, &default_line)
    });
    report_reload(&reload, &mesh.slug);
    Ok(())
}

fn forget_key(keystore: &Keystore, mesh_id: &str) {
    if let Err(e) = keystore.delete(mesh_id) {
        output::warn(format!(
            "could not delete the key stored for mesh {mesh_id} after the failed join: {e}"
        ));
    }
}

/// `{"meshId","memberId","meshSlug","broker"}` → (memberId, slug, broker).
fn parse_enrollment(v: &Value, invite: &Invite) -> Result<(String, String, Option<String>)> {
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let bad = |what: &str| {
        CtlError::failure(format!("the broker's enrollment answer {what}: {v}"))
            .hint("is this a claudemesh broker of the same protocol version?")
    };
    let mesh_id = field("meshId").ok_or_else(|| bad("has no meshId"))?;
    if mesh_id != invite.mesh_id {
        return Err(bad(&format!(
            "names mesh {mesh_id}, not the invite's {}",
            invite.mesh_id
        )));
    }
    let member_id = field("memberId")
        .filter(|m| claudemesh_protocol::encoding::is_valid_id(m))
        .ok_or_else(|| bad("has no valid memberId"))?;
    let slug = field("meshSlug").unwrap_or_else(|| invite.mesh_slug.clone());
    let broker = field("broker").filter(|b| b.starts_with("ws://") || b.starts_with("wss://"));
    Ok((member_id, slug, broker))
}

pub fn mesh_json(m: &MeshConfig) -> Value {
    json!({
        "slug": m.slug,
        "meshId": m.mesh_id,
        "memberId": m.member_id,
        "member": m.pubkey,
        "broker": m.effective_broker_url(),
        "local": m.local,
        "joinedAt": m.joined_at,
    })
}

pub struct LeaveArgs {
    pub mesh: String,
    pub json: bool,
}

pub fn leave(args: LeaveArgs) -> Result<()> {
    let paths = ctx::paths()?;
    let config = ctx::load_config(&paths)?;
    let mesh = config
        .find(&args.mesh)
        .cloned()
        .ok_or_else(|| ctx::not_joined(&config, &args.mesh))?;
    if mesh.local {
        return Err(CtlError::failure(format!(
            "`{}` is the daemon's own local mesh; it cannot be left",
            mesh.slug
        ))
        .hint("it only links the sessions on this machine; nothing leaves it"));
    }
    let keystore = ctx::keystore(&paths, !args.json)?;
    let mut warnings = Vec::new();

    // 1. The config (re-read); the daemon closes that link when it
    // reloads, before the broker revokes the member: a voluntary leave is
    // then not reported by the daemon as a revocation.
    let mut config = ctx::load_config(&paths)?;
    // (no longer the default mesh either, if it was)
    config.remove(&mesh.mesh_id);
    ctx::save_config(&paths, &config)?;
    let reload = daemon::reload(&paths);

    // 2. Tell the broker (signed), if we can.
    let broker_url = mesh.effective_broker_url();
    let key = match keystore.load(&mesh.mesh_id) {
        Ok(Some(k)) => Some(k),
        Ok(None) => {
            warnings.push(format!(
                "no member key for mesh {} in the keystore; the broker could not be told",
                mesh.slug
            ));
            None
        }
        Err(e) => {
            warnings.push(format!(
                "cannot read the member key ({e}); the broker could not be told"
            ));
            None
        }
    };
    let mut broker_state = "not_told";
    if let Some(key) = &key {
        if key.public_key().to_hex() != mesh.pubkey {
            warnings.push(
                "the stored key does not match the config's public key; telling the broker anyway"
                    .into(),
            );
        }
        match http_origin(&broker_url) {
            Err(e) => warnings.push(format!("cannot use broker URL: {e}")),
            Ok(origin) => {
                let request =
                    LeaveRequest::signed(key, &mesh.mesh_id, &mesh.member_id, ctx::now_ms());
                let spinner = output::Spinner::start(format!("leaving via {origin}…"));
                let result = broker_http::post_json(
                    &origin,
                    "/v1/leave",
                    &serde_json::to_value(&request).expect("serializes"),
                );
                drop(spinner);
                match result {
                    Ok(_) => broker_state = "left",
                    Err(HttpError::Unreachable(detail)) => {
                        broker_state = "unreachable";
                        warnings.push(format!(
                            "could not reach the broker ({detail}): it still lists this member \
                             until the mesh owner revokes it (the key is deleted here, so it \
                             cannot be used again)"
                        ));
                    }
                    Err(e) => {
                        broker_state = "refused";
                        warnings.push(format!("the broker did not accept the leave request: {e}"));
                    }
                }
            }
        }
    }

    // 3. The key, last: it signed the leave.
    if let Err(e) = keystore.delete(&mesh.mesh_id) {
        warnings.push(format!("could not delete the member key: {e}"));
    }
    if args.json {
        output::json(&json!({
            "left": true,
            "mesh": mesh_json(&mesh),
            "broker": broker_state,
            "daemon": reload_json(&reload),
            "warnings": warnings,
        }));
        return Ok(());
    }
    for w in &warnings {
        output::warn(w);
    }
    output::line(format!(
        "{} Left mesh {} ({}){}",
        paint(GREEN, "✓"),
        paint(BOLD, &mesh.slug),
        mesh.mesh_id,
        if broker_state == "left" {
            ""
        } else {
            " locally"
        }
    ));
    match reload {
        Reload::Done => output::line("  daemon:   told to close its link"),
        Reload::NotRunning => output::line("  daemon:   not running"),
        Reload::Failed(e) => output::warn(format!("could not tell the daemon ({e}); restart it")),
    }
    Ok(())
}
