//! Helpers shared by the integration tests: the libsodium vectors from
//! `shared/vectors/libsodium.json`, and keys built from their seeds.
//!
//! `shared/` sits beside the repository checkout (`<repo>/../shared`); set
//! `CLAUDEMESH_SHARED_DIR` to point elsewhere.

#![allow(dead_code)]

use std::path::PathBuf;

use claudemesh_protocol::MemberSecretKey;
use serde::Deserialize;

/// Where the vectors are when `shared/` sits beside the checkout.
pub const DEFAULT_VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/libsodium.json"
);

/// The alice vector's mesh, member and timestamp: the clock of most tests.
pub const NOW: i64 = 1_764_168_000_000;
pub const MESH: &str = "mesh_7Hq2";
pub const MEMBER: &str = "mem_alice01";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloVector {
    pub name: String,
    pub seed: Option<String>,
    #[serde(rename = "secret_key_libsodium")]
    pub secret_key_libsodium: Option<String>,
    pub mesh_id: String,
    pub member_id: String,
    pub pubkey: String,
    pub timestamp: i64,
    pub canonical: Option<String>,
    pub signature: String,
    pub valid: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyConversionVector {
    pub seed: String,
    pub ed25519_pubkey: String,
    pub x25519_pubkey: String,
    pub x25519_secret: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BoxVector {
    pub name: Option<String>,
    pub sender_seed: String,
    pub sender_ed25519_pubkey: String,
    pub recipient_seed: String,
    pub recipient_ed25519_pubkey: String,
    pub nonce_b64: String,
    pub plaintext_utf8: String,
    pub ciphertext_b64: String,
    /// Absent means the box opens.
    pub opens: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vectors {
    pub hello: Vec<HelloVector>,
    pub key_conversion: Vec<KeyConversionVector>,
    #[serde(rename = "box")]
    pub boxes: Vec<BoxVector>,
}

/// The vectors file: `$CLAUDEMESH_SHARED_DIR/vectors/libsodium.json` when
/// that variable is set and the file is there, else the default path.
pub fn vectors_path() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("CLAUDEMESH_SHARED_DIR") {
        let path = PathBuf::from(dir).join("vectors").join("libsodium.json");
        if path.is_file() {
            return path;
        }
        tried.push(path);
    }
    let path = PathBuf::from(DEFAULT_VECTORS_PATH);
    if path.is_file() {
        return path;
    }
    tried.push(path);
    panic!(
        "the libsodium test vectors are missing; looked for {}. \
         Put a copy of shared/ beside the repository checkout, or set \
         CLAUDEMESH_SHARED_DIR to the directory that holds vectors/libsodium.json",
        tried
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(" and ")
    );
}

pub fn vectors() -> Vectors {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    let vectors: Vectors = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`{}` is not the expected shape: {e}", path.display()));
    assert!(!vectors.hello.is_empty(), "no hello vectors");
    assert!(
        !vectors.key_conversion.is_empty(),
        "no key_conversion vectors"
    );
    assert!(!vectors.boxes.is_empty(), "no box vectors");
    vectors
}

pub fn seed(hex_seed: &str) -> [u8; 32] {
    hex::decode(hex_seed)
        .expect("vector seeds are hex")
        .try_into()
        .expect("vector seeds are 32 bytes")
}

pub fn key_from_seed(hex_seed: &str) -> MemberSecretKey {
    MemberSecretKey::from_seed(&seed(hex_seed))
}

fn named_key(name: &str) -> MemberSecretKey {
    let v = vectors()
        .hello
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no hello vector named {name}"));
    key_from_seed(v.seed.as_deref().expect("valid vectors carry a seed"))
}

/// The `valid:alice` vector's key: its pubkey is `2b0cef56…`.
pub fn alice() -> MemberSecretKey {
    named_key("valid:alice")
}

/// The `valid:bob` vector's key.
pub fn bob() -> MemberSecretKey {
    named_key("valid:bob")
}
