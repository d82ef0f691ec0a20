//! The local socket: a Unix socket file, mode 0600, in a 0700 directory,
//! whose every connection is checked to come from this user.
//!
//! A file path (not a Linux abstract name) is used on purpose: an abstract
//! socket has no permissions at all. The uid check on each connection
//! stands even if the directory or file mode were loosened.

mod conn;
mod framing;

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio::sync::{Semaphore, watch};

use crate::core::Core;

/// More connections than this at once are refused (`busy`), so that a
/// runaway client cannot exhaust the daemon's file descriptors.
pub const MAX_CONNECTIONS: usize = 8192;

/// Removes a socket file left by a previous daemon that died. Call only
/// while holding the single-instance lock: then no live daemon owns it.
/// Anything at that path that is not our own socket is left alone.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; move it aside",
                        path.display()
                    ),
                ));
            }
            if meta.uid() != crate::paths::current_uid() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{} belongs to another user", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Binds the socket at `path` with mode 0600 (set before `bind`, so there
/// is no window with looser permissions).
pub fn bind(path: &Path) -> io::Result<Listener> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    ListenerOptions::new().name(name).mode(0o600).create_tokio()
}

/// Accepts connections until `stop` turns true.
pub async fn serve(
    core: Arc<Core>,
    listener: Listener,
    socket: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    core.sessions.note_change();
                    let permit = slots.clone().try_acquire_owned().ok();
                    let core = core.clone();
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        conn::handle(core, stream, socket, permit.is_some()).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tracing::debug!("stopped accepting connections");
}
