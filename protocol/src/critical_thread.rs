//! Threads a process cannot serve without (the broker's database writer,
//! the daemon's database thread). If one panics, the process exits with
//! [`EXIT_THREAD_DIED`] so that its service manager (systemd
//! `Restart=on-failure`, launchd `KeepAlive`) starts it again: a process
//! whose writer is gone would otherwise stay up refusing every write, which
//! nobody notices.
//!
//! It lives here because the broker and the daemon both need it and this is
//! the crate they share.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;

/// The exit status after a critical thread died (`EX_SOFTWARE`).
pub const EXIT_THREAD_DIED: i32 = 70;

/// Spawns `body` on a thread named `name`; a panic in it ends the process.
pub fn spawn<F>(name: &str, body: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let owned = name.to_owned();
    std::thread::Builder::new()
        .name(owned.clone())
        .spawn(move || {
            if catch_unwind(AssertUnwindSafe(body)).is_err() {
                // The log may be what failed (a full disk): a failed write
                // here is ignored, the exit status says it all.
                let _ = writeln!(
                    std::io::stderr(),
                    "the {owned} thread died; exiting (status {EXIT_THREAD_DIED}) so that the \
                     service manager restarts this process"
                );
                std::process::exit(EXIT_THREAD_DIED);
            }
        })
}
