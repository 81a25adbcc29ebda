//! Change detection for files edited by hand while the daemon runs.
//!
//! One inotify descriptor watches every directory the index reads. A call
//! first asks, without blocking, whether any event is queued (one `poll`
//! with a zero timeout, about a microsecond). Only then are the events read
//! and the named files stat'ed; a file is parsed again only when its
//! inode, size, mtime or ctime changed. The daemon's own writes produce
//! events too, which cost a stat each and no parse.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What the queued events ask the index to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Changes {
    /// Re-read these paths.
    Paths(Vec<PathBuf>),
    /// Events were lost or a watched directory went away: list everything.
    Rescan,
}

/// An inotify watch over the store's directories.
#[derive(Debug)]
pub struct Watcher {
    fd: OwnedFd,
    dirs: Mutex<HashMap<i32, PathBuf>>,
    /// Every store directory is watched; while not, each call lists them.
    complete: AtomicBool,
}

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

impl Watcher {
    /// Watches `dirs`.
    pub fn new(dirs: &[PathBuf]) -> io::Result<Watcher> {
        // SAFETY: plain syscall; the descriptor is owned right away.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let watcher = Watcher {
            fd,
            dirs: Mutex::new(HashMap::new()),
            complete: AtomicBool::new(true),
        };
        watcher.watch(dirs)?;
        Ok(watcher)
    }

    /// Adds `dirs` to the watch. A directory already watched keeps its
    /// watch; one that was removed and made again is watched anew.
    pub fn watch(&self, dirs: &[PathBuf]) -> io::Result<()> {
        let mut watched = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        for dir in dirs {
            let c = CString::new(dir.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds NUL"))?;
            // SAFETY: valid descriptor and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                return Err(io::Error::last_os_error());
            }
            watched.insert(wd, dir.clone());
        }
        Ok(())
    }

    /// Watches again whichever of `dirs` exist now (after a directory went
    /// away, or events were lost); the watch is complete when all of them
    /// do and are watched.
    pub fn watch_again(&self, dirs: &[PathBuf]) {
        let present: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
        let watched = match self.watch(&present) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the store directories");
                false
            }
        };
        let complete = watched && present.len() == dirs.len();
        let was_complete = self.complete.swap(complete, Ordering::AcqRel);
        if was_complete && !complete {
            tracing::warn!(
                "a store directory is missing; the store is listed on every call until it is back"
            );
        }
    }

    /// Whether every store directory is watched.
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// True when events are queued. Does not consume them.
    pub fn pending(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Reads every queued event.
    pub fn drain(&self) -> Changes {
        let mut paths = Vec::new();
        let mut rescan = false;
        let dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: reads into a buffer we own, of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let n = n as usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n {
                // SAFETY: the kernel wrote a whole event header at `off`;
                // read_unaligned copes with the byte buffer's alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                let name_start = off + header;
                let name_end = (name_start + ev.len as usize).min(n);
                off = name_end;
                if ev.mask
                    & (libc::IN_Q_OVERFLOW
                        | libc::IN_DELETE_SELF
                        | libc::IN_MOVE_SELF
                        | libc::IN_IGNORED)
                    != 0
                {
                    rescan = true;
                    continue;
                }
                let raw_name = &buf[name_start..name_end];
                let name = raw_name.split(|b| *b == 0).next().unwrap_or(&[]);
                if let (Some(dir), false) = (dirs.get(&ev.wd), name.is_empty()) {
                    paths.push(dir.join(OsStr::from_bytes(name)));
                }
            }
        }
        if rescan {
            return Changes::Rescan;
        }
        paths.sort();
        paths.dedup();
        Changes::Paths(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_new_file_and_a_removal() {
        let dir = std::env::temp_dir().join(format!("evsec-watch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = Watcher::new(std::slice::from_ref(&dir)).unwrap();
        assert!(!w.pending());
        std::fs::write(dir.join("a.pem"), b"x").unwrap();
        assert!(w.pending());
        assert_eq!(w.drain(), Changes::Paths(vec![dir.join("a.pem")]));
        assert!(!w.pending());
        std::fs::remove_file(dir.join("a.pem")).unwrap();
        assert_eq!(w.drain(), Changes::Paths(vec![dir.join("a.pem")]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
