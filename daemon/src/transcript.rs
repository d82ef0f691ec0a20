//! Reading a Claude Code session transcript (JSON lines) for the claudemesh
//! messages it shows as channel messages: Claude Code puts a pushed
//! notification in the conversation as
//! `<channel source="claudemesh" message_id="…" …>text</channel>`, each
//! `meta` key an attribute; every string of every line is searched, so it
//! is found wherever Claude Code records it. The daemon reads a session's
//! transcript from where it last stopped, so each part is read once
//! (`docs/shim.md`, "Message states").

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

/// The transcript is read in chunks of this size (memory stays bounded
/// however long it is).
const CHUNK: u64 = 8 * 1024 * 1024;

/// The message ids of every `<channel …>` tag in `text` that has a
/// `message_id` attribute.
pub fn channel_ids_in(text: &str, out: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("<channel ") {
        let tag = &rest[start..];
        let end = tag.find('>').unwrap_or(tag.len());
        if let Some(id) = attribute(&tag[..end], "message_id") {
            out.insert(id.to_owned());
        }
        rest = &tag[end..];
    }
}

/// The value of `name="…"` in a tag's text.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let at = tag.find(&needle)? + needle.len();
    let len = tag[at..].find('"')?;
    Some(&tag[at..at + len]).filter(|v| !v.is_empty())
}

/// Every string inside a JSON value, depth first.
fn strings(value: &Value, out: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => out(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The channel message ids in complete JSON lines of `chunk`, and how many
/// bytes of it those lines take (a partly written last line is left for
/// the next read).
pub fn channel_ids_in_lines(chunk: &[u8], ids: &mut BTreeSet<String>) -> usize {
    let complete = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in chunk[..complete].split(|b| *b == b'\n') {
        // Cheap filter first: most lines carry no channel message.
        if !line.windows(9).any(|w| w == b"<channel ") {
            continue;
        }
        if let Ok(value) = serde_json::from_slice::<Value>(line) {
            strings(&value, &mut |s| channel_ids_in(s, ids));
        }
    }
    complete
}

/// The channel message ids of the transcript's complete lines from byte
/// `offset` on, and the offset to read from next time. A file shorter
/// than `offset` is a new transcript at the same path: it is read whole.
/// Only a regular file is read (a FIFO or a device named by mistake would
/// block or never end).
pub fn read_from(transcript: &Path, offset: u64) -> std::io::Result<(BTreeSet<String>, u64)> {
    let meta = std::fs::metadata(transcript)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut file = std::fs::File::open(transcript)?;
    let len = file.metadata()?.len();
    let mut at = if offset > len { 0 } else { offset };
    let mut ids = BTreeSet::new();
    loop {
        file.seek(SeekFrom::Start(at))?;
        let mut chunk = Vec::new();
        (&mut file).take(CHUNK).read_to_end(&mut chunk)?;
        let full = chunk.len() as u64 == CHUNK;
        let used = channel_ids_in_lines(&chunk, &mut ids) as u64;
        // One line longer than a chunk (a huge tool result, never a channel
        // message) is stepped over; its rest fails to parse as a line.
        at += if full && used == 0 { CHUNK } else { used };
        if !full {
            return Ok((ids, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(text: &str) -> String {
        let v = json!({"type": "user", "message": {"role": "user", "content": [
            {"type": "text", "text": text}
        ]}});
        format!("{v}\n")
    }

    #[test]
    fn finds_the_ids_of_channel_tags_only() {
        let mut ids = BTreeSet::new();
        channel_ids_in(
            "<channel source=\"claudemesh\" from=\"web\" message_id=\"m1\" priority=\"now\">hi</channel> \
             and message_id=\"m2\" outside a tag, <channel source=\"x\">no id</channel>\
             <channel source=\"claudemesh\" message_id=\"m3\">",
            &mut ids,
        );
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["m1", "m3"]);
    }

    #[test]
    fn reads_complete_lines_and_escaped_json() {
        let text = format!(
            "{}{}{{\"partial\": \"<channel source=\\\"claudemesh\\\" message_id=\\\"m9\\\"",
            line("<channel source=\"claudemesh\" message_id=\"m1\">a</channel>"),
            line("plain")
        );
        let mut ids = BTreeSet::new();
        let used = channel_ids_in_lines(text.as_bytes(), &mut ids);
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["m1"]);
        assert_eq!(
            used,
            text.rfind('\n').unwrap() + 1,
            "the partial line is left"
        );
    }

    #[test]
    fn reads_only_the_new_part_and_survives_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let transcript = dir.path().join("t.jsonl");
        std::fs::write(&transcript, line("<channel message_id=\"m1\">a</channel>")).unwrap();
        let (ids, at) = read_from(&transcript, 0).unwrap();
        assert_eq!(ids.len(), 1);
        let mut more = std::fs::read_to_string(&transcript).unwrap();
        more.push_str(&line("<channel message_id=\"m2\">b</channel>"));
        std::fs::write(&transcript, &more).unwrap();
        let (ids, at) = read_from(&transcript, at).unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["m2"]);
        assert_eq!(at, more.len() as u64);
        std::fs::write(&transcript, line("<channel message_id=\"m3\">c</channel>")).unwrap();
        let (ids, _) = read_from(&transcript, at).unwrap();
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            ["m3"],
            "shorter: read again"
        );
    }

    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_from(dir.path(), 0).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        let e = read_from(&dir.path().join("none.jsonl"), 0).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
