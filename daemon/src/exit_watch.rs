//! Hearing a process exit without looking on a clock: on Linux a pidfd
//! (`pidfd_open`), readable once the process has exited. The reaper holds
//! one per session's Claude Code process, so an idle daemon with sessions
//! attached does not wake to check on them; where a pidfd cannot be had
//! (another system, an old kernel) the reaper looks every couple of
//! seconds instead.

use crate::process_info::{self, ProcessId};

/// A future that resolves when `id` has exited (at once if it already has
/// or its pid now names a later process); `None` when its exit cannot be
/// heard here.
pub fn watch(id: ProcessId) -> Option<impl Future<Output = ()> + Send + 'static> {
    #[cfg(target_os = "linux")]
    {
        let fd = linux::open(id.pid).ok()?;
        // Opened after the process was identified: if the pid was reused in
        // between, the pidfd names the newcomer, so check it is still ours.
        let ours = process_info::is_alive(id);
        Some(async move {
            if ours {
                let _ = fd.readable().await;
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (id, process_info::is_alive);
        None::<std::future::Ready<()>>
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    pub struct PidFd(AsyncFd<OwnedFd>);

    impl PidFd {
        pub async fn readable(&self) -> io::Result<()> {
            self.0.readable().await.map(|_| ())
        }
    }

    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = i32::try_from(raw).map_err(|_| io::Error::other("a descriptor out of range"))?;
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is open and owned by the `AsyncFd` from here on.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(PidFd(fd))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_exit_is_heard_and_a_live_process_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = process_info::identify(child.id()).unwrap();
        let exited = watch(id).expect("a pidfd");
        let mut exited = Box::pin(exited);
        let early = tokio::time::timeout(Duration::from_millis(200), &mut exited).await;
        assert!(early.is_err(), "heard an exit of a live process");
        child.kill().unwrap();
        tokio::time::timeout(Duration::from_secs(5), exited)
            .await
            .expect("the exit was heard");
        child.wait().unwrap();
        // A process that is gone: resolves at once.
        let gone = watch(id);
        if let Some(f) = gone {
            tokio::time::timeout(Duration::from_secs(1), f)
                .await
                .expect("at once");
        }
    }
}
