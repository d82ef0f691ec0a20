//! Knowing when the config file may have changed without looking at it
//! on a clock: on Linux an inotify watch on its directory (the file is
//! saved by a rename and may not exist yet, so the directory is watched,
//! not the file); elsewhere, or when inotify cannot be had or the watch
//! is lost (the directory removed), a look every `fallback`.
//!
//! A change only says "look": the caller compares the file's modification
//! time, so events for other files of the directory cost one `stat`.

use std::path::Path;
use std::time::Duration;

/// Resolves [`ConfigWatch::changed`] when the directory may have changed.
pub struct ConfigWatch {
    #[cfg(target_os = "linux")]
    inotify: Option<inotify::Inotify>,
    poll: tokio::time::Interval,
}

impl ConfigWatch {
    /// Watches `dir`; falls back to a look every `fallback`.
    pub fn new(dir: &Path, fallback: Duration) -> Self {
        let mut poll = tokio::time::interval(fallback);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            #[cfg(target_os = "linux")]
            inotify: match inotify::Inotify::watch(dir) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; looking at the file every few seconds instead");
                    None
                }
            },
            poll,
        }
    }

    /// Whether changes are heard without a clock.
    pub fn is_event_driven(&self) -> bool {
        #[cfg(target_os = "linux")]
        let driven = self.inotify.is_some();
        #[cfg(not(target_os = "linux"))]
        let driven = false;
        driven
    }

    /// The next moment the config may have changed.
    pub async fn changed(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(w) = &self.inotify {
            match w.next().await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        "the config directory's watch was lost; looking at the file every few seconds instead"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the config directory's watch failed; looking at the file every few seconds instead");
                }
            }
            self.inotify = None;
            self.poll.reset();
        }
        self.poll.tick().await;
    }
}

#[cfg(target_os = "linux")]
mod inotify {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use tokio::io::unix::AsyncFd;

    /// Changes to a directory's entries.
    const MASK: u32 = libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_TO
        | libc::IN_MOVED_FROM
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_ATTRIB
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF;
    /// The watch ended (its directory removed or moved away).
    const GONE: u32 = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;

    pub struct Inotify {
        fd: AsyncFd<OwnedFd>,
    }

    impl Inotify {
        pub fn watch(dir: &Path) -> io::Result<Self> {
            let path = CString::new(dir.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
            // SAFETY: plain syscalls; the descriptor is owned at once.
            let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: `path` is a valid C string for the call's duration.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is an open descriptor the `AsyncFd` owns from
            // here on; nothing else closes or replaces it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
            Ok(Self { fd })
        }

        /// Waits for events and reads them all: true for a change, false
        /// when the watch is gone.
        pub async fn next(&self) -> io::Result<bool> {
            let mut buf = [0u8; 4096];
            loop {
                let mut guard = self.fd.readable().await?;
                let mut alive = true;
                let mut any = false;
                loop {
                    // SAFETY: reads into a buffer of the length given.
                    let n = unsafe {
                        libc::read(
                            self.fd.get_ref().as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                        )
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::WouldBlock {
                            guard.clear_ready();
                            break;
                        }
                        return Err(e);
                    }
                    let n = usize::try_from(n).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    any = true;
                    alive &= !masks(&buf[..n]).any(|m| m & GONE != 0);
                }
                if !alive {
                    return Ok(false);
                }
                if any {
                    return Ok(true);
                }
            }
        }
    }

    /// The masks of the events in `buf` (each: wd, mask, cookie, len,
    /// then `len` bytes of name).
    pub(super) fn masks(buf: &[u8]) -> impl Iterator<Item = u32> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let head = buf.get(at..at + 16)?;
            let mask = u32::from_ne_bytes(head[4..8].try_into().ok()?);
            let len = u32::from_ne_bytes(head[12..16].try_into().ok()?) as usize;
            at += 16 + len;
            Some(mask)
        })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn event_masks_are_read_in_order() {
        let mut buf = Vec::new();
        for (mask, name) in [
            (libc::IN_CREATE, &b"config.json.tmp\0\0"[..]),
            (libc::IN_IGNORED, &b""[..]),
        ] {
            buf.extend_from_slice(&1i32.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            buf.extend_from_slice(name);
        }
        // A truncated tail is ignored.
        buf.extend_from_slice(&[1, 2, 3]);
        let got: Vec<u32> = inotify::masks(&buf).collect();
        assert_eq!(got, vec![libc::IN_CREATE, libc::IN_IGNORED]);
    }

    #[tokio::test]
    async fn a_file_saved_in_the_directory_is_heard_and_a_removed_directory_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let watched = dir.path().join("cfg");
        std::fs::create_dir(&watched).unwrap();
        let mut w = ConfigWatch::new(&watched, Duration::from_millis(50));
        assert!(w.is_event_driven());
        let path = watched.join("config.json");
        let tmp = watched.join("config.json.tmp");
        std::fs::write(&tmp, b"{}").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the save was heard");
        // Nothing more: no wakeup on a clock.
        let idle = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
        assert!(idle.is_err(), "woke with nothing changed");
        std::fs::remove_dir_all(&watched).unwrap();
        // The loss is heard, then it looks on the fallback clock.
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the removal was heard");
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("the fallback looks");
        assert!(!w.is_event_driven());
    }
}
