//! `claudemesh-ctl logs [-f]`: the daemon's log file, human-readable.
//!
//! The daemon writes one JSON object per line when its stderr is not a
//! terminal (`daemon start`, the shim's start on demand): `timestamp`,
//! `level`, `message`, `target` and the event's own fields. Each is
//! printed as `TIME LEVEL message key=value…`; any other line as it is.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::ctx;
use crate::error::{CtlError, Result};
use crate::output::{self, BOLD, CYAN, RED_BOLD, YELLOW_BOLD, paint};

/// Prints the log; with `follow`, keeps printing what is appended until
/// interrupted. `json`: the lines as they are (already JSON).
pub fn run(follow: bool, json: bool) -> Result<()> {
    let paths = ctx::paths()?;
    let path = claudemesh_daemon::client::daemon_log_path(&paths);
    let file = std::fs::File::open(&path).map_err(|e| {
        CtlError::failure(format!(
            "cannot read the daemon log {}: {e}",
            path.display()
        ))
        .hint(
            "a daemon started by `claudemesh-ctl daemon start` or by the shim logs there; \
             a systemd service logs to the journal: `journalctl --user -u claudemeshd`",
        )
    })?;
    let mut reader = BufReader::new(file);
    print_available(&mut reader, json)?;
    if !follow {
        return Ok(());
    }
    loop {
        // Polling keeps this portable; a person reads at this pace anyway.
        std::thread::sleep(Duration::from_millis(250));
        if truncated(&mut reader, &path) {
            reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
        }
        print_available(&mut reader, json)?;
    }
}

fn io_err(e: std::io::Error) -> CtlError {
    CtlError::failure(format!("reading the daemon log failed: {e}"))
}

/// True when the file is now shorter than where we are (rotated by hand).
fn truncated(reader: &mut BufReader<std::fs::File>, path: &Path) -> bool {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    reader.stream_position().is_ok_and(|pos| len < pos)
}

fn print_available(reader: &mut BufReader<std::fs::File>, json: bool) -> Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io_err)?;
        if n == 0 || !line.ends_with('\n') {
            // A partial line is read again once complete.
            if n > 0 {
                reader
                    .seek(SeekFrom::Current(-(n as i64)))
                    .map_err(io_err)?;
            }
            return Ok(());
        }
        let text = line.trim_end();
        if json {
            output::line(text);
        } else {
            output::line(human(text));
        }
    }
}

/// One log line as a person reads it.
pub fn human(line: &str) -> String {
    let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let take = |o: &mut Map<String, Value>, k: &str| match o.remove(k) {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let time = take(&mut o, "timestamp");
    let level = take(&mut o, "level");
    let message = take(&mut o, "message");
    o.remove("target");
    let level = match level.as_str() {
        "ERROR" => paint(RED_BOLD, "ERROR"),
        "WARN" => paint(YELLOW_BOLD, "WARN "),
        "INFO" => paint(BOLD, "INFO "),
        other => format!("{other:5}"),
    };
    // Fractions of a second are noise here.
    let time = time.split('.').next().unwrap_or_default().replace('T', " ");
    let mut out = format!("{} {level} {message}", paint(CYAN, time));
    for (k, v) in o {
        let v = match v {
            Value::String(s) => s,
            v => v.to_string(),
        };
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_read_as_text_and_other_lines_pass_through() {
        let line = r#"{"timestamp":"2026-12-02T02:00:00.123456Z","level":"WARN","message":"link down","target":"claudemesh_daemon::link","mesh":"team","attempt":3}"#;
        let h = human(line);
        let plain: String = anstream::adapter::strip_str(&h).to_string();
        assert_eq!(
            plain,
            "2026-12-02 02:00:00 WARN  link down attempt=3 mesh=team"
        );
        assert_eq!(human("not json at all"), "not json at all");
    }
}
