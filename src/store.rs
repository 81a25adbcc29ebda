//! The on-disk store: the EVerest layout, file names and atomic, durable I/O.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, ConfigError};
use crate::types::{CaCertificateType, LeafCertificateType};

/// Prefix of the daemon's temporary files. They are never parsed, and the
/// ones a crash left behind are removed at start.
pub const TEMP_PREFIX: &str = ".evsec-tmp-";

/// Mode of certificate and bundle files.
pub const CERT_MODE: u32 = 0o644;
/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;

/// How a CA bundle is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleMode {
    /// One PEM file holding every certificate.
    File,
    /// A directory of PEM files.
    Directory,
}

/// What a path in the store is, as far as the index is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// A file holding certificates (bundle or leaf directory).
    Certificates,
    /// A private key (`.key`, or `.tkey` for a TPM key).
    Key,
    /// A cached OCSP response or its hash file, in an `ocsp/` directory.
    Ocsp,
}

/// The resolved layout: the config's paths plus the mode of each bundle.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The configuration it came from.
    pub config: Config,
    modes: [BundleMode; 4],
}

/// True for names the index reads as certificate files.
pub fn is_certificate_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with(TEMP_PREFIX) && (name.ends_with(".pem") || name.ends_with(".der"))
}

/// True for names the index reads as private keys.
pub fn is_key_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with(TEMP_PREFIX) && (name.ends_with(".key") || name.ends_with(".tkey"))
}

impl Layout {
    /// Checks the configured paths and creates the missing ones, as EVerest
    /// does: a bundle path with an extension becomes an empty file, one
    /// without becomes a directory; leaf directories are created.
    pub fn prepare(config: Config) -> Result<Layout, ConfigError> {
        let unusable = |key: &'static str, path: &Path, why: String| ConfigError::Value {
            key,
            message: format!("{}: {why}", path.display()),
        };
        create_dir(&config.certs_directory)
            .map_err(|e| unusable("certs_directory", &config.certs_directory, e.to_string()))?;

        let mut modes = [BundleMode::File; 4];
        for ca in CaCertificateType::ALL {
            let key = Config::ca_bundle_key(*ca);
            let path = config.ca_bundle(*ca);
            let mode = if path.is_dir() {
                BundleMode::Directory
            } else if path.extension().is_none() {
                create_dir(path).map_err(|e| unusable(key, path, e.to_string()))?;
                BundleMode::Directory
            } else {
                if !is_certificate_name(path.as_os_str()) {
                    return Err(unusable(
                        key,
                        path,
                        "a bundle file must end in .pem or .der".into(),
                    ));
                }
                if let Some(parent) = path.parent() {
                    create_dir(parent).map_err(|e| unusable(key, path, e.to_string()))?;
                }
                if !path.exists() {
                    atomic_write(path, b"", CERT_MODE)
                        .map_err(|e| unusable(key, path, e.to_string()))?;
                } else if !path.is_file() {
                    return Err(unusable(key, path, "not a regular file".into()));
                }
                BundleMode::File
            };
            let dir = match mode {
                BundleMode::Directory => path,
                BundleMode::File => path.parent().unwrap_or(Path::new("/")),
            };
            probe_writable(dir).map_err(|e| unusable(key, dir, e.to_string()))?;
            modes[ca.slot()] = mode;
        }

        let leaf_keys = [
            ("csms_leaf_cert_directory", &config.csms_leaf_cert_directory),
            ("csms_leaf_key_directory", &config.csms_leaf_key_directory),
            ("secc_leaf_cert_directory", &config.secc_leaf_cert_directory),
            ("secc_leaf_key_directory", &config.secc_leaf_key_directory),
        ];
        for (key, dir) in leaf_keys {
            if dir.exists() && !dir.is_dir() {
                return Err(unusable(key, dir, "not a directory".into()));
            }
            create_dir(dir).map_err(|e| unusable(key, dir, e.to_string()))?;
            probe_writable(dir).map_err(|e| unusable(key, dir, e.to_string()))?;
            // A leaf directory that is, or holds, a CA bundle would let leaf
            // clean-up touch CA files.
            for ca in CaCertificateType::ALL {
                let bundle = config.ca_bundle(*ca);
                let holds_bundle =
                    modes[ca.slot()] == BundleMode::File && bundle.parent() == Some(dir.as_path());
                if bundle == dir.as_path() || holds_bundle {
                    return Err(unusable(
                        key,
                        dir,
                        format!("is also the place of `{}`", Config::ca_bundle_key(*ca)),
                    ));
                }
            }
        }
        let layout = Layout { config, modes };
        for dir in layout.ocsp_dirs() {
            create_dir(&dir).map_err(|e| unusable("certs_directory", &dir, e.to_string()))?;
        }
        Ok(layout)
    }

    /// Completes the group writes ([`write_group`]) a crash interrupted,
    /// before stale temporary files are removed.
    pub fn finish_group_writes(&self) {
        for dir in self.watched_dirs() {
            match finish_group_write(&dir) {
                Ok(true) => {
                    tracing::warn!("an interrupted write in {} was completed", dir.display())
                }
                Ok(false) => {}
                Err(e) => tracing::error!(
                    "cannot complete the interrupted write in {}: {e}",
                    dir.display()
                ),
            }
        }
    }

    /// Creates again the `ocsp/` directories that are missing.
    pub fn restore_ocsp_dirs(&self) {
        // Only where its parent is still there: a store directory removed
        // by hand is the operator's to restore.
        let missing = self
            .ocsp_dirs()
            .into_iter()
            .filter(|d| !d.is_dir() && d.parent().is_some_and(Path::is_dir));
        for dir in missing {
            let made = fs::create_dir(&dir).and_then(|()| dir.parent().map_or(Ok(()), sync_dir));
            match made {
                Ok(()) => tracing::warn!("{} was missing; created again", dir.display()),
                Err(e) => {
                    tracing::error!("{} is missing and cannot be created: {e}", dir.display())
                }
            }
        }
    }

    /// The path of a bundle.
    pub fn bundle_path(&self, ca: CaCertificateType) -> &Path {
        self.config.ca_bundle(ca)
    }

    /// The mode of a bundle.
    pub fn bundle_mode(&self, ca: CaCertificateType) -> BundleMode {
        self.modes[ca.slot()]
    }

    /// The directories that hold certificate files: bundle directories,
    /// the directories of bundle files, and the leaf certificate directories.
    fn certificate_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = CaCertificateType::ALL
            .iter()
            .map(|ca| {
                let path = self.bundle_path(*ca);
                match self.bundle_mode(*ca) {
                    BundleMode::Directory => path.to_owned(),
                    BundleMode::File => path.parent().map(Path::to_owned).unwrap_or_default(),
                }
            })
            .collect();
        dirs.push(self.config.csms_leaf_cert_directory.clone());
        dirs.push(self.config.secc_leaf_cert_directory.clone());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// The `ocsp/` directory for the certificates of `file` (EVerest keeps
    /// OCSP responses beside the file that holds the certificate).
    pub fn ocsp_dir_for(file: &Path) -> PathBuf {
        file.parent().unwrap_or(Path::new("/")).join("ocsp")
    }

    /// Every `ocsp/` directory of the store.
    pub fn ocsp_dirs(&self) -> Vec<PathBuf> {
        self.certificate_dirs()
            .iter()
            .map(|d| d.join("ocsp"))
            .collect()
    }

    /// Every directory whose entries the index reads, without duplicates.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.certificate_dirs();
        dirs.extend(self.ocsp_dirs());
        dirs.push(self.config.csms_leaf_key_directory.clone());
        dirs.push(self.config.secc_leaf_key_directory.clone());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// What `path` is in this store, or `None` when the index ignores it.
    pub fn classify(&self, path: &Path) -> Option<FileKind> {
        let name = path.file_name()?;
        let parent = path.parent()?;
        let in_cert_dir = CaCertificateType::ALL
            .iter()
            .any(|ca| match self.bundle_mode(*ca) {
                BundleMode::File => self.bundle_path(*ca) == path,
                BundleMode::Directory => self.bundle_path(*ca) == parent,
            })
            || self.config.csms_leaf_cert_directory == parent
            || self.config.secc_leaf_cert_directory == parent;
        if in_cert_dir && is_certificate_name(name) {
            return Some(FileKind::Certificates);
        }
        let in_key_dir = self.config.csms_leaf_key_directory == parent
            || self.config.secc_leaf_key_directory == parent;
        if in_key_dir && is_key_name(name) {
            return Some(FileKind::Key);
        }
        let ocsp_name = {
            let n = name.to_string_lossy();
            !n.starts_with(TEMP_PREFIX) && (n.ends_with(".hash") || n.ends_with(".der"))
        };
        let in_ocsp_dir = parent.file_name().is_some_and(|n| n == "ocsp")
            && self.ocsp_dirs().iter().any(|d| d == parent);
        (ocsp_name && in_ocsp_dir).then_some(FileKind::Ocsp)
    }

    /// Every file of the store that the index reads, found by listing the
    /// watched directories.
    pub fn list_files(&self) -> Vec<(PathBuf, FileKind)> {
        let mut out = Vec::new();
        for dir in self.watched_dirs() {
            let Ok(entries) = fs::read_dir(&dir) else {
                tracing::warn!(dir = %dir.display(), "cannot list directory");
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some(kind) = self.classify(&path) {
                    out.push((path, kind));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Removes temporary files that a crash left behind.
    pub fn remove_stale_temp_files(&self) {
        self.finish_group_writes();
        for dir in self.watched_dirs() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let path = entry.path();
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "removed stale temporary file")
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temporary file")
                        }
                    }
                }
            }
        }
    }
}

fn create_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    if !path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    Ok(())
}

fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!("{TEMP_PREFIX}probe-{}", random_suffix()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    fs::remove_file(&probe)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

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
        remove_durably(&record_path)
    })();
    if result.is_err() {
        for (tmp, _) in &renames {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// Completes the group write that a crash interrupted in `dir`: every
/// rename its record names whose temporary file is still there.
fn finish_group_write(dir: &Path) -> io::Result<bool> {
    let record_path = dir.join(GROUP_RECORD_NAME);
    let record = match fs::read_to_string(&record_path) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
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
        }
    }
    sync_dir(dir)?;
    remove_durably(&record_path)?;
    Ok(true)
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

/// The EVerest random file-name suffix:
/// `M<MM>_D<DD>_Y<YYYY>_H<hh>_M<mm>_S<ss>_i<n>_r<rand>`, in UTC.
pub fn random_suffix() -> String {
    let now = crate::x509::now();
    let (year, month, day) = civil_from_days(now.div_euclid(86_400));
    let secs = now.rem_euclid(86_400);
    let mut rand = [0u8; 4];
    let _ = openssl::rand::rand_bytes(&mut rand);
    let rand = (u32::from_le_bytes(rand) & 0x7fff_ffff).max(1);
    format!(
        "M{month:02}_D{day:02}_Y{year:04}_H{:02}_M{:02}_S{:02}_i{}_r{rand}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        NAME_COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    )
}

/// `YYYY-MM-DD HH:MM` in UTC, for listings.
pub fn format_utc(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The file-name prefix of a leaf type (`SECC_LEAF_`, `CSMS_LEAF_`, …).
pub fn leaf_prefix(leaf: LeafCertificateType) -> &'static str {
    match leaf {
        LeafCertificateType::CSMS => "CSMS_LEAF_",
        LeafCertificateType::V2G => "SECC_LEAF_",
        LeafCertificateType::MF => "MF_LEAF_",
        LeafCertificateType::MO => "MO_LEAF_",
    }
}

/// Reads a four-line OCSP `.hash` file (algorithm, issuer name hash,
/// issuer key hash, serial). `None` when it is unreadable or malformed.
pub fn read_ocsp_hash(path: &Path) -> Option<crate::types::HashData> {
    let text = fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [alg, name, key, serial] = fields[..] else {
        tracing::warn!(path = %path.display(), "OCSP hash file is malformed; left alone");
        return None;
    };
    crate::types::HashData::parse(alg, name, key, serial).ok()
}

/// The content of an OCSP `.hash` file for `hash`.
pub fn ocsp_hash_text(hash: &crate::types::HashData) -> String {
    format!(
        "{}\n{}\n{}\n{}\n",
        hash.hash_algorithm, hash.issuer_name_hash, hash.issuer_key_hash, hash.serial_number
    )
}

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

/// Holds the store's lock file for the life of the daemon, so that two
/// daemons never write one store.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes `<certs_directory>/.evsecd.lock`, or fails when another process
    /// holds it.
    pub fn acquire(certs_directory: &Path) -> io::Result<StoreLock> {
        let path = certs_directory.join(".evsecd.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is held by another evsecd", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_580), (2026, 5, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn suffix_has_everest_shape() {
        let s = random_suffix();
        let parts: Vec<&str> = s.split('_').collect();
        assert_eq!(parts.len(), 8, "{s}");
        assert!(
            parts[0].starts_with('M') && parts[2].starts_with('Y') && parts[6].starts_with('i')
        );
        assert!(parts[7].starts_with('r') && parts[7][1..].parse::<u32>().unwrap() >= 1);
    }

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
