//! Durable file I/O: every write whole or not at all, also across a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CERT_MODE, KEY_MODE, TEMP_PREFIX};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` whole or not at all: a temporary file in the same
/// directory, fsync, rename over the target, fsync of the directory.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_whole(path, data, mode, None, false)
}

/// Writes a private key as [`atomic_write`] does: mode 0600, or 0640 and
/// owned by `group` when a key group is configured.
pub fn write_key(path: &Path, data: &[u8], group: Option<u32>) -> io::Result<()> {
    match group {
        // SAFETY: getuid cannot fail.
        Some(gid) => write_whole(
            path,
            data,
            0o640,
            Some((unsafe { libc::getuid() }, gid)),
            true,
        ),
        None => write_whole(path, data, KEY_MODE, None, false),
    }
}

/// Writes a file back as it was, with its mode and, where allowed, its
/// owner (the undo of a removal).
pub(super) fn write_as_before(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> io::Result<()> {
    write_whole(path, data, mode, Some(owner), false)
}

/// Replaces the content of an existing file atomically, as
/// [`atomic_write`], keeping its mode and, where allowed, its owner. A
/// symlink is followed, so the link itself stays.
pub fn atomic_rewrite(path: &Path, data: &[u8]) -> io::Result<()> {
    let target = match fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(e),
    };
    let meta = fs::metadata(&target).ok();
    let mode = meta
        .as_ref()
        .map_or(CERT_MODE, |m| m.permissions().mode() & 0o7777);
    let owner = meta.map(|m| (m.uid(), m.gid()));
    write_whole(&target, data, mode, owner, false)
}

/// The name of the intent record of a group write in its directory.
pub const GROUP_RECORD_NAME: &str = ".evsecd-group-write";

/// Writes several new files of one directory whole, all or none, also
/// across a crash: each goes to a temporary file first (fsync), then an
/// intent record naming every rename is made durable, then the renames and
/// the directory fsync, then the record goes. After a crash,
/// [`Layout::finish_group_writes`] completes the renames of a record that
/// exists; without a record, the temporary files are stale and removed.
pub fn write_group(files: &[(PathBuf, Vec<u8>)], mode: u32) -> io::Result<()> {
    let Some(dir) = files.first().and_then(|(p, _)| p.parent()) else {
        return Ok(());
    };
    if files.iter().any(|(p, _)| p.parent() != Some(dir)) {
        return Err(io::Error::other("a group write stays in one directory"));
    }
    let mut renames: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| {
        let mut record = String::new();
        for (path, data) in files {
            let tmp = write_temp(path, data, mode, None, false)?;
            let (Some(t), Some(f)) = (
                tmp.file_name().and_then(|n| n.to_str()),
                path.file_name().and_then(|n| n.to_str()),
            ) else {
                let _ = fs::remove_file(&tmp);
                return Err(io::Error::other("file names must be UTF-8"));
            };
            record.push_str(&format!("{t}\t{f}\n"));
            renames.push((tmp, path.clone()));
        }
        let record_path = dir.join(GROUP_RECORD_NAME);
        let record_tmp = write_temp(&record_path, record.as_bytes(), CERT_MODE, None, false)?;
        fs::rename(&record_tmp, &record_path)?;
        sync_dir(dir)?;
        // From here on the write is decided: a crash is finished at start.
        for (tmp, path) in &renames {
            fs::rename(tmp, path)?;
        }
        sync_dir(dir)?;
        // Not synced: a record that outlives a crash names only renames
        // that are done, and is dropped at the next start.
        fs::remove_file(&record_path)
    })();
    if result.is_err() {
        for (tmp, _) in &renames {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// Completes the group write that a crash interrupted in `dir`: every
/// rename its record names whose temporary file is still there. Returns
/// whether any was left to do.
pub(super) fn finish_group_write(dir: &Path) -> io::Result<bool> {
    let record_path = dir.join(GROUP_RECORD_NAME);
    let record = match fs::read_to_string(&record_path) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut completed = false;
    for line in record.lines() {
        let Some((tmp, name)) = line.split_once('\t') else {
            continue;
        };
        if tmp.contains('/') || name.contains('/') || !tmp.starts_with(TEMP_PREFIX) {
            continue;
        }
        let tmp = dir.join(tmp);
        if tmp.exists() {
            fs::rename(&tmp, dir.join(name))?;
            completed = true;
        }
    }
    sync_dir(dir)?;
    remove_durably(&record_path)?;
    Ok(completed)
}

/// The atomic write; `must_own`: fail rather than leave the file with
/// another owner than `owner` (a key that its group cannot read).
fn write_whole(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    must_own: bool,
) -> io::Result<()> {
    let tmp = write_temp(path, data, mode, owner, must_own)?;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no directory"))?;
    let result = fs::rename(&tmp, path).and_then(|()| sync_dir(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `data` in a new temporary file beside `path`, with its mode (and owner)
/// set and synced to disk; returns its path.
fn write_temp(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    must_own: bool,
) -> io::Result<PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    // At most 64 characters of the target's name, so that the temporary
    // name stays within NAME_MAX whatever the target is called.
    let short: String = name.to_string_lossy().chars().take(64).collect();
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{short}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            // A rewrite keeps the owner where the daemon may set it; a key
            // that cannot be handed to its group is not written at all.
            let handed = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
            if must_own {
                handed?;
            }
        }
        file.write_all(data)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes a file and makes the removal durable. A file that is already
/// gone counts as removed.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    path.parent().map_or(Ok(()), sync_dir)
}

/// fsync of a directory, so that renames and unlinks in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Identity and version of a file: a change in any field means the file
/// must be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds.
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("evsec-store-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        atomic_write(&path, b"one", KEY_MODE).unwrap();
        atomic_write(&path, b"two", KEY_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.key")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
