//! The write transaction: every change one call makes to the store goes
//! through it, so that the call's changes are known without the writer
//! listing them, reported by domain, and undone together when the call
//! gives up half-way.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::bundle_file::{self, Edit};
use super::durable::{
    atomic_rewrite, atomic_write, remove_durably, write_as_before, write_group, write_key,
};
use super::layout::Layout;
use super::CERT_MODE;
use crate::types::{CaCertificateType, LeafCertificateType, StoreOperation};
use crate::x509::{CertFacts, Fingerprint};
use std::sync::Arc;

/// A change on disk, reported as a `CertificateStoreUpdated` signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChange {
    /// Installed or deleted.
    pub operation: StoreOperation,
    /// The CA bundle that changed.
    pub ca: Option<CaCertificateType>,
    /// The leaf domain that changed.
    pub leaf: Option<LeafCertificateType>,
}

/// What a committed transaction did to one path.
#[derive(Debug)]
pub enum Touched {
    /// Written with these bytes: the index takes them as they are, without
    /// reading the file again.
    Written(PathBuf, Vec<u8>),
    /// Removed.
    Removed(PathBuf),
    /// Put back as it was by a rollback, or changed in a way the index
    /// must read again.
    Restored(PathBuf),
}

impl Touched {
    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            Touched::Written(p, _) | Touched::Removed(p) | Touched::Restored(p) => p,
        }
    }
}

/// The identity of a key the daemon itself wrote, so that the index need
/// not open it again (a password-protected key costs a key derivation).
#[derive(Debug, Clone, Copy)]
pub struct KeyIdentity {
    /// Identity of its public key.
    pub key_fingerprint: Fingerprint,
    /// Whether it is a TPM key.
    pub tpm: bool,
}

/// What a finished transaction hands to the index.
#[derive(Debug, Default)]
pub struct Committed {
    /// Every path it changed, in order.
    pub touched: Vec<Touched>,
    /// Certificates it wrote, as the writer parsed them.
    pub parsed: Vec<Arc<CertFacts>>,
    /// Keys it wrote, with their identities.
    pub keys: Vec<(PathBuf, KeyIdentity)>,
}

/// How to undo one step.
enum Undo {
    /// The file was new: remove it.
    Remove(PathBuf),
    /// The file held these bytes, with this mode and owner: write them
    /// back.
    Restore(PathBuf, Vec<u8>, Attributes),
}

/// The changes of one write, in order, with how to undo each.
pub struct Transaction<'a> {
    layout: &'a Layout,
    touched: Vec<Touched>,
    undo: Vec<Undo>,
    parsed: Vec<Arc<CertFacts>>,
    keys: Vec<(PathBuf, KeyIdentity)>,
}

impl<'a> Transaction<'a> {
    /// An empty transaction on `layout`.
    pub fn new(layout: &'a Layout) -> Transaction<'a> {
        Transaction {
            layout,
            touched: Vec::new(),
            undo: Vec::new(),
            parsed: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Whether nothing was changed yet.
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty()
    }

    /// Writes a new file, whole or not at all.
    pub fn write(&mut self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        atomic_write(path, data, mode)?;
        self.created(path, data);
        Ok(())
    }

    /// Writes a new private key: mode 0600, or 0640 to `group`.
    pub fn write_key(
        &mut self,
        path: &Path,
        data: &[u8],
        group: Option<u32>,
        identity: Option<KeyIdentity>,
    ) -> io::Result<()> {
        write_key(path, data, group)?;
        self.created(path, data);
        if let Some(identity) = identity {
            self.keys.push((path.to_owned(), identity));
        }
        Ok(())
    }

    /// Hands the index the certificates the writer parsed, so that the
    /// files written are indexed without parsing them again.
    pub fn parsed(&mut self, certs: impl IntoIterator<Item = Arc<CertFacts>>) {
        self.parsed.extend(certs);
    }

    /// Writes several new files of one directory, all or none, also across
    /// a crash (a leaf and its chain).
    pub fn write_group(&mut self, files: &[(PathBuf, Vec<u8>)]) -> io::Result<()> {
        write_group(files, CERT_MODE)?;
        for (path, data) in files {
            self.created(path, data);
        }
        Ok(())
    }

    /// Replaces the content of an existing file, keeping its mode and owner.
    pub fn rewrite(&mut self, path: &Path, old: Vec<u8>, data: &[u8]) -> io::Result<()> {
        let attributes = attributes_of(path)?;
        atomic_rewrite(path, data)?;
        self.undo
            .push(Undo::Restore(path.to_owned(), old, attributes));
        self.touched
            .push(Touched::Written(path.to_owned(), data.to_vec()));
        Ok(())
    }

    /// Removes a file durably. A file already gone is not a change.
    pub fn remove(&mut self, path: &Path) -> io::Result<()> {
        let old = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let attributes = attributes_of(path)?;
        remove_durably(path)?;
        self.undo
            .push(Undo::Restore(path.to_owned(), old, attributes));
        self.touched.push(Touched::Removed(path.to_owned()));
        Ok(())
    }

    /// Appends a certificate to a file-mode bundle, keeping every byte
    /// already there (a missing file is created).
    pub fn append_certificate(&mut self, path: &Path, pem: &[u8]) -> io::Result<()> {
        self.put(path, |old| match old {
            Some(old) => bundle_file::appended(old, pem),
            None => pem.to_vec(),
        })
    }

    /// Writes a file whole, as a new file of mode 0644 or over the one
    /// there; `content` makes the new bytes from the old, if any.
    pub fn put(
        &mut self,
        path: &Path,
        content: impl FnOnce(Option<&[u8]>) -> Vec<u8>,
    ) -> io::Result<()> {
        match fs::read(path) {
            Ok(old) => {
                let new = content(Some(&old));
                self.rewrite(path, old, &new)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.write(path, &content(None), CERT_MODE)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the certificates with these fingerprints from a file,
    /// keeping every other byte. A file left with no certificate goes,
    /// unless `keep_empty_file` (a file-mode bundle stays, empty).
    pub fn remove_certificates(
        &mut self,
        path: &Path,
        doomed: &std::collections::HashSet<Fingerprint>,
        keep_empty_file: bool,
    ) -> io::Result<()> {
        let old = fs::read(path)?;
        match bundle_file::without(&old, doomed, keep_empty_file) {
            Edit::Remove => self.remove(path),
            Edit::Rewrite(new) => self.rewrite(path, old, &new),
        }
    }

    fn created(&mut self, path: &Path, data: &[u8]) {
        self.undo.push(Undo::Remove(path.to_owned()));
        self.touched
            .push(Touched::Written(path.to_owned(), data.to_vec()));
    }

    /// Undoes every step, newest first. A step that cannot be undone is
    /// logged; what it left is read again by the index like any change.
    pub fn rollback(mut self) -> Committed {
        for undo in self.undo.drain(..).rev() {
            let (path, result) = match undo {
                Undo::Remove(path) => {
                    let result = remove_durably(&path);
                    (path, result)
                }
                Undo::Restore(path, bytes, attributes) => {
                    let result = if path.exists() {
                        atomic_rewrite(&path, &bytes)
                    } else {
                        write_as_before(&path, &bytes, attributes.mode, attributes.owner)
                    };
                    (path, result)
                }
            };
            if let Err(e) = result {
                tracing::error!("cannot undo the change of {}: {e}", path.display());
            }
        }
        Committed {
            touched: self
                .touched
                .into_iter()
                .map(|t| Touched::Restored(t.path().to_owned()))
                .collect(),
            ..Committed::default()
        }
    }

    /// The changes, one per CA type whose bundle or leaf domain a touched
    /// path belongs to, in the order first touched.
    pub fn changes(&self, operation: StoreOperation) -> Vec<StoreChange> {
        let mut changes: Vec<StoreChange> = Vec::new();
        for touched in &self.touched {
            for change in self.layout.changes_for(touched.path(), operation) {
                if !changes.contains(&change) {
                    changes.push(change);
                }
            }
        }
        changes
    }

    /// Ends the transaction: what it did, for the index.
    pub fn commit(self) -> Committed {
        Committed {
            touched: self.touched,
            parsed: self.parsed,
            keys: self.keys,
        }
    }
}

/// What a file written back must have again: a key keeps its 0640 and its
/// group.
struct Attributes {
    mode: u32,
    owner: (u32, u32),
}

fn attributes_of(path: &Path) -> io::Result<Attributes> {
    let meta = fs::metadata(path)?;
    Ok(Attributes {
        mode: meta.permissions().mode() & 0o7777,
        owner: (meta.uid(), meta.gid()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn rollback_puts_back_bytes_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let config =
            Config::parse(&format!("certs_directory = \"{}\"\n", certs.display())).unwrap();
        let layout = Layout::prepare(config).unwrap();
        let cso = certs.join("client/cso");
        let key = cso.join("SECC_LEAF.key");
        let chain = cso.join("CHAIN.pem");
        fs::write(&key, b"key bytes").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&key, None, Some(1)).unwrap();
        fs::write(&chain, b"old chain").unwrap();

        let mut tx = Transaction::new(&layout);
        tx.rewrite(&chain, b"old chain".to_vec(), b"new chain")
            .unwrap();
        tx.remove(&key).unwrap();
        tx.write(&cso.join("NEW.pem"), b"new", CERT_MODE).unwrap();
        assert_eq!(
            tx.changes(StoreOperation::Deleted),
            vec![StoreChange {
                operation: StoreOperation::Deleted,
                ca: None,
                leaf: Some(LeafCertificateType::V2G),
            }]
        );
        assert!(!key.exists());
        let undone = tx.rollback();
        assert_eq!(undone.touched.len(), 3);

        assert_eq!(fs::read(&chain).unwrap(), b"old chain");
        assert_eq!(fs::read(&key).unwrap(), b"key bytes");
        let meta = fs::metadata(&key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), 1);
        assert!(!cso.join("NEW.pem").exists());
    }
}
