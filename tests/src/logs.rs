//! On a failed test, the logs of the processes it ran are printed with the
//! failure (libtest shows a failing test's stderr): an end-to-end failure
//! is then diagnosed from the CI output alone, without the temp dirs.

use std::path::Path;

/// How much of each log is shown: the end is where the failure is.
const TAIL_LINES: usize = 500;

/// Prints the tail of every `*.log` directly in `dir` and in `dir/data`,
/// if the current thread is panicking.
pub fn print_if_panicking(owner: &str, dir: &Path) {
    if !std::thread::panicking() {
        return;
    }
    for dir in [dir.to_path_buf(), dir.join("data")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut logs: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
            eprintln!(
                "----- {owner}: {} (last {} of {} lines) -----\n{}",
                log.display(),
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
    }
}
