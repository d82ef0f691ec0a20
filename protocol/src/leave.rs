//! The signed `POST /v1/leave` request: a member revokes itself.

use serde::{Deserialize, Serialize};

use crate::hello::{HelloRejection, decode_key_and_signature, within_skew};
use crate::keys::{MemberPublicKey, MemberSecretKey};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRequest {
    pub mesh_id: String,
    pub member_id: String,
    pub pubkey: String,
    pub timestamp: i64,
    pub signature: String,
}

/// `leave|${meshId}|${memberId}|${pubkey}|${timestamp}`.
pub fn canonical(mesh_id: &str, member_id: &str, pubkey_hex: &str, timestamp: i64) -> String {
    format!("leave|{mesh_id}|{member_id}|{pubkey_hex}|{timestamp}")
}

impl LeaveRequest {
    pub fn signed(key: &MemberSecretKey, mesh_id: &str, member_id: &str, timestamp: i64) -> Self {
        let pubkey = key.public_key().to_hex();
        let signature = key
            .sign(canonical(mesh_id, member_id, &pubkey, timestamp).as_bytes())
            .to_hex();
        Self {
            mesh_id: mesh_id.to_owned(),
            member_id: member_id.to_owned(),
            pubkey,
            timestamp,
            signature,
        }
    }

    /// The stateless checks, in the hello's order and with its reason codes;
    /// the broker then checks membership.
    pub fn verify(&self, now: i64) -> Result<MemberPublicKey, HelloRejection> {
        if !within_skew(self.timestamp, now) {
            return Err(HelloRejection::TimestampSkew);
        }
        let (pubkey, signature) = decode_key_and_signature(&self.pubkey, &self.signature)?;
        let message = canonical(&self.mesh_id, &self.member_id, &self.pubkey, self.timestamp);
        if pubkey.verify(message.as_bytes(), &signature) {
            Ok(pubkey)
        } else {
            Err(HelloRejection::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_leave_verifies_and_tampering_fails() {
        let key = MemberSecretKey::from_seed(&[3u8; 32]);
        let req = LeaveRequest::signed(&key, "mesh", "mem", 1_000_000);
        assert_eq!(req.verify(1_000_000).unwrap(), key.public_key());
        assert_eq!(
            req.verify(1_000_000 + 60_001),
            Err(HelloRejection::TimestampSkew)
        );
        let mut other = req.clone();
        other.member_id = "someone-else".into();
        assert_eq!(other.verify(1_000_000), Err(HelloRejection::BadSignature));
        let mut short = req;
        short.signature.pop();
        assert_eq!(short.verify(1_000_000), Err(HelloRejection::Malformed));
    }
}
