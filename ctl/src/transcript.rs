//! Reading a Claude Code session transcript (JSON lines, `transcript_path`
//! in the hook's input) for the claudemesh messages it shows as channel
//! messages: Claude Code puts a pushed notification in the conversation as
//! `<channel source="claudemesh" message_id="…" …>text</channel>`, each
//! `meta` key an attribute. Only the part written since the last read is
//! read; where that was is kept in a small file per session.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// At most this much new transcript is read per hook run; the rest is read
/// by the next run.
const MAX_READ: u64 = 8 * 1024 * 1024;

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
pub fn channel_ids_in_lines(chunk: &[u8]) -> (BTreeSet<String>, usize) {
    let mut ids = BTreeSet::new();
    let complete = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in chunk[..complete].split(|b| *b == b'\n') {
        // Cheap filter first: most lines carry no channel message.
        if !line.windows(9).any(|w| w == b"<channel ") {
            continue;
        }
        if let Ok(value) = serde_json::from_slice::<Value>(line) {
            strings(&value, &mut |s| channel_ids_in(s, &mut ids));
        }
    }
    (ids, complete)
}

/// Where the read position of a session's transcript is kept.
pub fn offset_file(runtime_dir: &Path, session_id: &str) -> Option<PathBuf> {
    // The session id names a file: only plain ids are accepted.
    let plain = !session_id.is_empty()
        && session_id.len() <= 128
        && session_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    plain.then(|| {
        runtime_dir
            .join("hooks")
            .join(format!("{session_id}.offset"))
    })
}

/// The new channel ids of the transcript since the offset kept in
/// `offset_file`, and the offset to keep once they are confirmed.
pub fn read_new(transcript: &Path, offset_file: &Path) -> std::io::Result<(BTreeSet<String>, u64)> {
    let mut file = std::fs::File::open(transcript)?;
    let len = file.metadata()?.len();
    let kept = std::fs::read_to_string(offset_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // A shorter file is a new transcript at the same path: read it whole.
    let from = if kept > len { 0 } else { kept };
    file.seek(SeekFrom::Start(from))?;
    let mut chunk = Vec::new();
    file.take(MAX_READ).read_to_end(&mut chunk)?;
    let (ids, used) = channel_ids_in_lines(&chunk);
    Ok((ids, from + used as u64))
}

/// Keeps the read position for the next hook run.
pub fn keep_offset(offset_file: &Path, offset: u64) -> std::io::Result<()> {
    if let Some(dir) = offset_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    claudemesh_daemon::paths::write_private_file(offset_file, offset.to_string().as_bytes())
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
        let (ids, used) = channel_ids_in_lines(text.as_bytes());
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
        let offsets = offset_file(dir.path(), "abc-123").unwrap();
        std::fs::write(&transcript, line("<channel message_id=\"m1\">a</channel>")).unwrap();
        let (ids, at) = read_new(&transcript, &offsets).unwrap();
        assert_eq!(ids.len(), 1);
        keep_offset(&offsets, at).unwrap();
        let mut more = std::fs::read_to_string(&transcript).unwrap();
        more.push_str(&line("<channel message_id=\"m2\">b</channel>"));
        std::fs::write(&transcript, &more).unwrap();
        let (ids, at) = read_new(&transcript, &offsets).unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["m2"]);
        keep_offset(&offsets, at).unwrap();
        std::fs::write(&transcript, line("<channel message_id=\"m3\">c</channel>")).unwrap();
        let (ids, _) = read_new(&transcript, &offsets).unwrap();
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            ["m3"],
            "shorter: read again"
        );
    }

    #[test]
    fn odd_session_ids_name_no_file() {
        assert!(offset_file(Path::new("/r"), "../etc").is_none());
        assert!(offset_file(Path::new("/r"), "").is_none());
        assert!(offset_file(Path::new("/r"), "a1-b2").is_some());
    }
}
