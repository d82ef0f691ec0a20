//! The text encodings of PROTOCOL.md: lowercase hex for keys and
//! signatures, standard padded base64 for binary values inside JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// True when `s` is exactly `len` lowercase hexadecimal characters.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Decodes exactly `N` bytes from lowercase hex, or `None`.
pub fn decode_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if !is_lower_hex(s, N * 2) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Standard base64 with padding.
pub fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64 with padding; `None` on any deviation.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// True when `s` is a valid protocol identifier: 1 to 64 characters, none
/// of them a control character (ids are logged and printed).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= crate::limits::MAX_ID_CHARS
        && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_must_be_lowercase_and_exact_length() {
        assert!(is_lower_hex("00ff", 4));
        assert!(!is_lower_hex("00FF", 4));
        assert!(!is_lower_hex("00f", 4));
        assert!(!is_lower_hex("00fg", 4));
        assert_eq!(decode_lower_hex::<2>("00ff"), Some([0, 255]));
        assert_eq!(decode_lower_hex::<2>("00ff00"), None);
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        let bytes = [1u8, 2, 3, 250];
        assert_eq!(b64_decode(&b64_encode(&bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(b64_decode("not base64!"), None);
    }

    #[test]
    fn ids_are_bounded() {
        assert!(is_valid_id("m"));
        assert!(!is_valid_id(""));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id("s\u{1b}[2J"));
        assert!(!is_valid_id("a\nb"));
        assert!(!is_valid_id("a\0b"));
    }
}
