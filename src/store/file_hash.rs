//! Hashing a file for `VerifyFileSignature`, with the caller's rights.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// SHA-256 of a regular file named by path, read as [`sha256_of_open_file`]
/// does. With a `reader`, only a file that caller could reach and read
/// itself is hashed: every directory on the way must let it search, the
/// file must let it read, and none of them may carry an ACL (whose grants
/// the mode bits do not show) unless the caller owns it. Nothing but a
/// regular file is ever opened for reading: each component is opened
/// `O_PATH` and without following links, checked, and only the file is
/// opened again to be read.
pub fn sha256_of_regular_file(
    path: &Path,
    reader: Option<&crate::access::Caller>,
    bounds: &HashBounds,
) -> io::Result<Vec<u8>> {
    let file = open_regular_as(path, reader)?;
    sha256_of_open_file(&file, bounds)
}

/// What stops the hashing of a file: a size cap, and a flag another thread
/// sets when the answer is no longer wanted (the caller left the bus).
#[derive(Debug)]
pub struct HashBounds {
    /// Largest file hashed, in bytes.
    pub max_bytes: u64,
    /// Set: stop at the next piece.
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn open_regular_as(path: &Path, reader: Option<&crate::access::Caller>) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Component;
    let denied = |what: &str| io::Error::new(io::ErrorKind::PermissionDenied, what.to_owned());
    let open_at = |dir: Option<&OwnedFd>, name: &Path, flags: libc::c_int| -> io::Result<OwnedFd> {
        let c_name = std::ffi::CString::new(name.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds NUL"))?;
        let base = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
        // SAFETY: a valid C string and a directory descriptor (or
        // AT_FDCWD); the result is checked before it is owned.
        let fd = unsafe { libc::openat(base, c_name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // Links are resolved once, up front; the walk below then refuses any
    // component that is (or has become) a link.
    let real = fs::canonicalize(path)?;
    let mut dir = open_at(None, Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)?;
    let mut components: Vec<&std::ffi::OsStr> = real
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let Some(name) = components.pop() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    };
    let check = |fd: &OwnedFd, search: bool| -> io::Result<fs::Metadata> {
        let meta = File::from(fd.try_clone()?).metadata()?;
        if let Some(caller) = reader {
            let allowed = if search {
                caller.may_search(meta.uid(), meta.gid(), meta.mode())
            } else {
                caller.may_read(meta.uid(), meta.gid(), meta.mode())
            };
            if !allowed {
                return Err(denied("the caller may not read this file"));
            }
            if caller.uid != 0 && meta.uid() != caller.uid && has_acl(fd)? {
                return Err(denied("an ACL decides who may read this file"));
            }
        }
        Ok(meta)
    };
    check(&dir, true)?;
    for component in components {
        dir = open_at(
            Some(&dir),
            Path::new(component),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?;
        check(&dir, true)?;
    }
    let target = open_at(Some(&dir), Path::new(name), libc::O_PATH | libc::O_NOFOLLOW)?;
    let meta = check(&target, false)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // A regular file: open it for reading, through the checked descriptor,
    // never through the path again.
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(proc_path)?;
    let reopened = file.metadata()?;
    if (reopened.dev(), reopened.ino()) != (meta.dev(), meta.ino()) {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(file)
}

/// Whether the file behind an `O_PATH` descriptor has an access ACL.
fn has_acl(fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::other("descriptor path"))?;
    // SAFETY: valid C strings; a zero-sized query writes nothing.
    let size = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    if size >= 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(error),
    }
}

/// SHA-256 of an open regular file from its first byte, read in 64 KiB
/// pieces so that memory does not grow with the file. Reads are positioned,
/// so a descriptor shared with a caller keeps its offset.
pub fn sha256_of_open_file(file: &File, bounds: &HashBounds) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let size = regular_file_metadata(file)?.len();
    if size > bounds.max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "{size} bytes, over limits.max_file_bytes ({})",
                bounds.max_bytes
            ),
        ));
    }
    let mut hasher = openssl::hash::Hasher::new(openssl::hash::MessageDigest::sha256())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        if bounds.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the caller left",
            ));
        }
        // A file that grows while it is read is not the file that was
        // signed; and it must not keep the hash going for ever.
        if offset > size {
            return Err(io::Error::other("the file grew while it was read"));
        }
        let n = match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n])?;
        offset += n as u64;
    }
    Ok(hasher.finish()?.to_vec())
}

fn regular_file_metadata(file: &File) -> io::Result<fs::Metadata> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(meta)
}
