//! Invite links: `ic://join/<base64url, no padding, of a signed JSON object>`.
//!
//! [`decode`] checks the shape, [`Invite::verify`] the owner's signature and
//! the expiry; [`InviteError`] says which check failed so that `join` and the
//! broker can tell the user exactly what is wrong with a link.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::encoding::is_valid_id;
use crate::keys::{MemberPublicKey, MemberSecretKey, Signature};

pub const LINK_PREFIX: &str = "ic://join/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteRole {
    Member,
    Admin,
}

impl InviteRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }
}

/// The signed JSON object inside a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invite {
    pub v: u32,
    pub mesh_id: String,
    pub mesh_slug: String,
    pub broker: String,
    pub invite_id: String,
    pub role: InviteRole,
    /// Unix seconds.
    pub expires_at: i64,
    pub owner_pubkey: String,
    pub signature: String,
}

/// Which check an invite link failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    #[error("this is not an invite link: it must start with `ic://join/`")]
    BadPrefix,
    #[error("the invite link is damaged: its payload is not valid base64url")]
    BadEncoding,
    #[error("the invite link is damaged: its payload is not a valid invite ({0})")]
    BadPayload(String),
    #[error("the invite has version {0}; this claudemesh understands version 1")]
    UnsupportedVersion(u32),
    #[error("the invite's {0} is malformed")]
    BadField(&'static str),
    #[error(
        "the invite's signature does not match its mesh owner key: the link was altered or forged"
    )]
    BadSignature,
    #[error("the invite expired at {expires_at} (unix seconds); ask for a new one")]
    Expired { expires_at: i64 },
}

impl InviteError {
    /// The `POST /v1/join` error code for this failure.
    pub fn code(&self) -> crate::wire::ErrorCode {
        use crate::wire::ErrorCode;
        match self {
            Self::BadSignature => ErrorCode::BadSignature,
            Self::Expired { .. } => ErrorCode::Expired,
            _ => ErrorCode::BadInvite,
        }
    }
}

impl Invite {
    /// `v1|${meshId}|${meshSlug}|${broker}|${inviteId}|${role}|${expiresAt}|${ownerPubkey}`.
    pub fn canonical(&self) -> String {
        format!(
            "v{}|{}|{}|{}|{}|{}|{}|{}",
            self.v,
            self.mesh_id,
            self.mesh_slug,
            self.broker,
            self.invite_id,
            self.role.as_str(),
            self.expires_at,
            self.owner_pubkey
        )
    }

    /// A new invite signed by the mesh owner key.
    pub fn signed(
        owner: &MemberSecretKey,
        mesh_id: &str,
        mesh_slug: &str,
        broker: &str,
        invite_id: &str,
        role: InviteRole,
        expires_at: i64,
    ) -> Self {
        let mut invite = Self {
            v: 1,
            mesh_id: mesh_id.to_owned(),
            mesh_slug: mesh_slug.to_owned(),
            broker: broker.to_owned(),
            invite_id: invite_id.to_owned(),
            role,
            expires_at,
            owner_pubkey: owner.public_key().to_hex(),
            signature: String::new(),
        };
        invite.signature = owner.sign(invite.canonical().as_bytes()).to_hex();
        invite
    }

    /// The `ic://join/…` link.
    pub fn to_link(&self) -> String {
        let json = serde_json::to_vec(self).expect("invites always serialize");
        format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Checks the signature against `ownerPubkey`, then the expiry against
    /// `now_secs`.
    pub fn verify(&self, now_secs: i64) -> Result<MemberPublicKey, InviteError> {
        let owner = MemberPublicKey::from_hex(&self.owner_pubkey)
            .map_err(|_| InviteError::BadField("ownerPubkey"))?;
        let signature =
            Signature::from_hex(&self.signature).map_err(|_| InviteError::BadField("signature"))?;
        if !owner.verify(self.canonical().as_bytes(), &signature) {
            return Err(InviteError::BadSignature);
        }
        if now_secs >= self.expires_at {
            return Err(InviteError::Expired {
                expires_at: self.expires_at,
            });
        }
        Ok(owner)
    }

    fn check_shape(&self) -> Result<(), InviteError> {
        if self.v != 1 {
            return Err(InviteError::UnsupportedVersion(self.v));
        }
        if !is_valid_id(&self.mesh_id) || self.mesh_id.contains('|') {
            return Err(InviteError::BadField("meshId"));
        }
        if self.mesh_slug.is_empty() || self.mesh_slug.contains('|') {
            return Err(InviteError::BadField("meshSlug"));
        }
        let broker_ok = (self.broker.starts_with("wss://") || self.broker.starts_with("ws://"))
            && !self.broker.contains('|');
        if !broker_ok {
            return Err(InviteError::BadField("broker"));
        }
        if !is_valid_id(&self.invite_id) || self.invite_id.contains('|') {
            return Err(InviteError::BadField("inviteId"));
        }
        if !crate::encoding::is_lower_hex(&self.owner_pubkey, 64) {
            return Err(InviteError::BadField("ownerPubkey"));
        }
        if !crate::encoding::is_lower_hex(&self.signature, 128) {
            return Err(InviteError::BadField("signature"));
        }
        Ok(())
    }
}

/// Decodes a link and checks its shape (not its signature or expiry).
pub fn decode(link: &str) -> Result<Invite, InviteError> {
    let payload = link
        .trim()
        .strip_prefix(LINK_PREFIX)
        .ok_or(InviteError::BadPrefix)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| InviteError::BadEncoding)?;
    let invite: Invite =
        serde_json::from_slice(&json).map_err(|e| InviteError::BadPayload(e.to_string()))?;
    invite.check_shape()?;
    Ok(invite)
}

/// Decodes and fully verifies a link.
pub fn decode_and_verify(link: &str, now_secs: i64) -> Result<Invite, InviteError> {
    let invite = decode(link)?;
    invite.verify(now_secs)?;
    Ok(invite)
}
