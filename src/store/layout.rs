//! The EVerest layout: where each bundle and leaf directory is, and what
//! each path of the store is.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::durable::{atomic_write, finish_group_write, sync_dir};
use super::names::random_suffix;
use super::transaction::StoreChange;
use super::{CERT_MODE, TEMP_PREFIX};
use crate::config::{Config, ConfigError};
use crate::types::{CaCertificateType, LeafCertificateType, StoreOperation, BUNDLES};

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
    modes: [BundleMode; BUNDLES],
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

        let mut modes = [BundleMode::File; BUNDLES];
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

    /// The changes that a write or removal of `path` is reported as: its
    /// leaf domain (certificate, key or OCSP file of a leaf directory),
    /// else every CA type whose bundle it belongs to.
    pub fn changes_for(&self, path: &Path, operation: StoreOperation) -> Vec<StoreChange> {
        let Some(mut dir) = path.parent() else {
            return Vec::new();
        };
        let ocsp = dir.file_name().is_some_and(|n| n == "ocsp");
        if ocsp {
            dir = dir.parent().unwrap_or(dir);
        }
        let leaf = [LeafCertificateType::CSMS, LeafCertificateType::V2G]
            .into_iter()
            .find(|l| {
                self.config
                    .leaf_dirs(*l)
                    .is_some_and(|(c, k)| c == dir || k == dir)
            });
        if let Some(leaf) = leaf {
            return vec![StoreChange {
                operation,
                ca: None,
                leaf: Some(leaf),
            }];
        }
        CaCertificateType::ALL
            .iter()
            .filter(|ca| {
                let bundle = self.bundle_path(**ca);
                match self.bundle_mode(**ca) {
                    BundleMode::Directory => bundle == dir,
                    BundleMode::File if ocsp => bundle.parent() == Some(dir),
                    BundleMode::File => bundle == path,
                }
            })
            .map(|ca| StoreChange {
                operation,
                ca: Some(*ca),
                leaf: None,
            })
            .collect()
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
        // The store's own root too, where the parse cache is written.
        let mut dirs = self.watched_dirs();
        if !dirs.contains(&self.config.certs_directory) {
            dirs.push(self.config.certs_directory.clone());
        }
        for dir in dirs {
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
