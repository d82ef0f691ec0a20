//! A small tmpfs mounted on a temporary directory: a real filesystem that
//! runs out of space (ENOSPC), for the full-disk tests. Mounting needs
//! root; elsewhere [`Tmpfs::mount`] returns `None` and the test is skipped,
//! except under CI, where it must run. Unmounted when dropped.
//!
//! broker/tests/disk_full.rs includes this file by path.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"8m"`), or `None` when this process
    /// may not mount.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        if !running_as_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "under CI the full-disk tests need root (to mount a tmpfs)"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("cm-full-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs failed: {status}");
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free byte with one file; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        for chunk in [1 << 16, 1 << 12, 1 << 9, 1] {
            let block = vec![0xA5u8; chunk];
            while file.write_all(&block).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }

    /// Gives the filler's space back.
    pub fn free(&self, filler: &Path) {
        std::fs::remove_file(filler).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process the test started may still hold a file open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
