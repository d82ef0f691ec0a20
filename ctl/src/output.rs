//! Output for people and for scripts.
//!
//! Everything a person reads goes through `anstream`, which drops colour
//! when the stream is not a terminal and honours `NO_COLOR`,
//! `CLICOLOR=0` and `CLICOLOR_FORCE`. `--json` output is plain
//! `serde_json` on stdout, one document per command. Progress (the
//! spinner) and diagnostics go to stderr so that stdout stays parseable.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anstyle::{AnsiColor, Style};

pub const BOLD: Style = Style::new().bold();
pub const DIM: Style = Style::new().dimmed();
pub const GREEN: Style = AnsiColor::Green.on_default();
pub const YELLOW: Style = AnsiColor::Yellow.on_default();
pub const RED: Style = AnsiColor::Red.on_default();
pub const RED_BOLD: Style = AnsiColor::Red.on_default().bold();
pub const YELLOW_BOLD: Style = AnsiColor::Yellow.on_default().bold();
pub const CYAN: Style = AnsiColor::Cyan.on_default();

/// `text` wrapped in `style` (stripped later by anstream if need be).
pub fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// One line on stdout.
pub fn line(text: impl std::fmt::Display) {
    anstream::println!("{text}");
}

/// `warning: …` on stderr.
pub fn warn(text: impl std::fmt::Display) {
    anstream::eprintln!("{} {text}", paint(YELLOW_BOLD, "warning:"));
}

/// `note: …` on stderr.
pub fn note(text: impl std::fmt::Display) {
    anstream::eprintln!("{} {text}", paint(CYAN, "note:"));
}

/// `error: …` and an optional hint, on stderr.
pub fn error(message: &str, hint: Option<&str>) {
    anstream::eprintln!("{} {message}", paint(RED_BOLD, "error:"));
    if let Some(hint) = hint {
        anstream::eprintln!("  {} {hint}", paint(BOLD, "hint:"));
    }
}

/// Debug output for `CLAUDEMESH_DEBUG=1` (or `-v`).
pub fn debug(text: impl std::fmt::Display) {
    if debug_enabled() {
        anstream::eprintln!("{} {text}", paint(DIM, "debug:"));
    }
}

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Prints a JSON document on stdout.
pub fn json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// An aligned table: a bold header row, then the rows, columns separated by
/// two spaces. Cells may carry styles; widths count visible characters.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines (with escapes; anstream strips them if need be).
    pub fn render(&self) -> Vec<String> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| visible_len(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(visible_len(cell));
            }
        }
        let render_row = |cells: &[String], header: bool| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate().take(columns) {
                let cell = if header {
                    paint(BOLD, cell)
                } else {
                    cell.clone()
                };
                out.push_str(&cell);
                if i + 1 < columns {
                    let pad = widths[i] - visible_len(&cell) + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.trim_end().to_owned()
        };
        let mut lines = vec![render_row(&self.header, true)];
        lines.extend(self.rows.iter().map(|r| render_row(r, false)));
        lines
    }

    pub fn print(&self) {
        for l in self.render() {
            line(l);
        }
    }
}

/// The number of characters a terminal shows for `s` (ANSI escapes skipped).
pub fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

/// A spinner on stderr while waiting on the network; only on a terminal.
/// Stops and clears its line when dropped.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spinner {
    pub fn start(message: impl Into<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let quiet = !std::io::stderr().is_terminal()
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if quiet {
            return Self { stop, thread: None };
        }
        let message = message.into();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut i = 0;
            // A short grace period: answers that come quickly show no spinner.
            std::thread::sleep(Duration::from_millis(150));
            while !flag.load(Ordering::Relaxed) {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{} {message}", FRAMES[i % FRAMES.len()]);
                let _ = err.flush();
                drop(err);
                i += 1;
                std::thread::sleep(Duration::from_millis(80));
            }
            if i > 0 {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_millis(ms: i64) -> String {
    format_secs(ms.div_euclid(1000))
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_secs(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A short, human "how long ago" for a millisecond timestamp.
pub fn ago(ms: i64, now_ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_secs(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_secs(1_764_168_000), "2025-11-26 14:40:00 UTC");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn tables_align_on_visible_width() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec![paint(GREEN, "xyz"), "1".into()]);
        t.row(vec!["q".into(), "22".into()]);
        let plain: Vec<String> = t
            .render()
            .iter()
            .map(|l| {
                let mut s = String::new();
                let mut skip = false;
                for c in l.chars() {
                    if c == '\u{1b}' {
                        skip = true;
                    } else if skip {
                        if c.is_ascii_alphabetic() {
                            skip = false;
                        }
                    } else {
                        s.push(c);
                    }
                }
                s
            })
            .collect();
        assert_eq!(plain, vec!["A    LONGER", "xyz  1", "q    22"]);
    }
}
