//! Who a process is, who its parent is, and whether it still lives.
//!
//! A session is tied to its Claude Code process. A bare pid is not an
//! identity: pids are reused, so a session whose Claude Code exited could be
//! "resumed" by a stranger that happened to get the same pid. A process is
//! therefore named by its pid *and* its start time ([`ProcessId`]); both
//! must match for the daemon to treat two sightings as the same process.
//!
//! Linux reads `/proc/<pid>/stat`. macOS asks the kernel through
//! `proc_pidinfo(PROC_PIDTBSDINFO)`. Other platforms have no implementation
//! yet (every lookup answers "unknown"), which makes attaching impossible
//! there rather than insecure.

/// A process named so that pid reuse cannot impersonate it: the pid plus
/// the kernel's record of when it started (clock ticks since boot on Linux,
/// microseconds since the epoch on macOS). Only compared for equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

/// What the kernel says about one live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessFacts {
    pub id: ProcessId,
    pub parent: u32,
}

/// How far up the tree [`is_ancestor_or_self`] looks; real trees are a
/// few levels deep, and a bound keeps a malformed answer from looping.
const MAX_DEPTH: usize = 128;

/// The kernel's facts about `pid`, or `None` when no such process exists
/// (or this platform cannot tell).
pub fn facts(pid: u32) -> Option<ProcessFacts> {
    if pid == 0 {
        return None;
    }
    imp::facts(pid)
}

/// The identity of `pid` right now, if it lives.
pub fn identify(pid: u32) -> Option<ProcessId> {
    facts(pid).map(|f| f.id)
}

/// True while the process named by `id` lives: its pid exists and started
/// at the same moment (a reused pid has a different start time).
pub fn is_alive(id: ProcessId) -> bool {
    identify(id.pid) == Some(id)
}

/// True when `ancestor` is `descendant` itself or one of its ancestors.
///
/// Self counts: a client may run inside the process it names (a test, or a
/// tool that is itself the session's process). Returns the ancestor's
/// identity, read in the same walk, so that the caller records the start
/// time it actually checked.
pub fn is_ancestor_or_self(ancestor: u32, descendant: u32) -> Option<ProcessId> {
    let mut current = descendant;
    for _ in 0..MAX_DEPTH {
        let f = facts(current)?;
        if current == ancestor {
            return Some(f.id);
        }
        if f.parent == 0 || f.parent == current {
            return None;
        }
        current = f.parent;
    }
    None
}

/// The pids from `pid` up to the root, `pid` first.
pub fn ancestry(pid: u32) -> Vec<ProcessId> {
    let mut out = Vec::new();
    let mut current = pid;
    for _ in 0..MAX_DEPTH {
        let Some(f) = facts(current) else { break };
        out.push(f.id);
        if f.parent == 0 || f.parent == current {
            break;
        }
        current = f.parent;
    }
    out
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{ProcessFacts, ProcessId};

    pub fn facts(pid: u32) -> Option<ProcessFacts> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(pid, &stat)
    }

    /// `pid (comm) state ppid … starttime …`: `comm` may hold spaces and
    /// parentheses, so the fields are counted from the *last* `)`.
    pub(super) fn parse_stat(pid: u32, stat: &str) -> Option<ProcessFacts> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After comm: state(0) ppid(1) … starttime is field 22 of the whole
        // line, which is index 19 here.
        let parent = fields.get(1)?.parse().ok()?;
        let start_time = fields.get(19)?.parse().ok()?;
        // A zombie has exited: its Claude Code is gone.
        if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
            return None;
        }
        Some(ProcessFacts {
            id: ProcessId { pid, start_time },
            parent,
        })
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::{ProcessFacts, ProcessId};

    /// `proc_pidinfo(PROC_PIDTBSDINFO)` gives the parent and the start time
    /// (seconds and microseconds since the epoch). Not exercised by CI,
    /// which runs on Linux.
    pub fn facts(pid: u32) -> Option<ProcessFacts> {
        let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
        // SAFETY: `info` is a properly sized, writable proc_bsdinfo, and
        // the kernel writes at most `size` bytes into it.
        let written = unsafe {
            libc::proc_pidinfo(
                pid as libc::c_int,
                libc::PROC_PIDTBSDINFO,
                0,
                (&mut info as *mut libc::proc_bsdinfo).cast(),
                size,
            )
        };
        if written != size {
            return None;
        }
        // SZOMB = 5: exited, not yet reaped by its parent.
        if info.pbi_status == 5 {
            return None;
        }
        let start_time = info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec;
        Some(ProcessFacts {
            id: ProcessId { pid, start_time },
            parent: info.pbi_ppid,
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    use super::ProcessFacts;

    /// TODO: FreeBSD (`kinfo_proc`) and Windows (toolhelp snapshots).
    pub fn facts(_pid: u32) -> Option<ProcessFacts> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_its_own_ancestor() {
        let me = std::process::id();
        let id = identify(me).expect("own process");
        assert!(is_alive(id));
        assert_eq!(is_ancestor_or_self(me, me), Some(id));
        let parent = facts(me).unwrap().parent;
        assert!(is_ancestor_or_self(parent, me).is_some());
        assert!(is_ancestor_or_self(me, parent).is_none());
        assert_eq!(ancestry(me).first(), Some(&id));
    }

    #[test]
    fn a_different_start_time_is_not_the_same_process() {
        let me = identify(std::process::id()).unwrap();
        let impostor = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!is_alive(impostor));
        assert!(facts(0).is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "42 (a) b) (c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let f = imp::parse_stat(42, line).unwrap();
        assert_eq!(f.parent, 7);
        assert_eq!(f.id.start_time, 123456);
        assert!(imp::parse_stat(1, "garbage").is_none());
        assert!(imp::parse_stat(1, "1 (x) S").is_none());
        let zombie = "43 (z) Z 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 99 0 0";
        assert!(imp::parse_stat(43, zombie).is_none());
    }
}
