//! The certificate operations of the contract, over a small core: the
//! store's current snapshot for readers, and one write transaction at a
//! time for writers. Synchronous: the D-Bus layer runs them on blocking
//! threads.
//!
//! One family of operations per file: CA bundles ([`ca`]), chain
//! verification ([`verification`]), the station's leaves ([`leaf`]), OCSP
//! ([`ocsp`]), file signatures ([`file_signature`]) and garbage collection
//! ([`gc`]).

use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::index::{Index, Snapshot};
use crate::store::watch::{Changes, Watcher};
use crate::store::{self, Layout, StoreLock, Transaction};
use crate::types::StoreOperation;

mod ca;
mod file_signature;
mod gc;
mod leaf;
mod ocsp;
mod rollover;
mod status;
mod verification;

pub use crate::store::certificate_status::StatusEntry;
pub use crate::store::StoreChange;
pub use ca::ListedCertificate;
pub use file_signature::MAX_SIGNATURE_B64;
pub use leaf::{CertificateInfo, LeafCredentials, MAX_NAME_LEN};
pub use ocsp::OcspRequest;
pub use status::{MAX_REQUESTED, MAX_URLS, MAX_URL_LEN};

/// A call that cannot be answered with a result value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is malformed; the message says which and why.
    #[error("{0}")]
    InvalidArgs(String),
    /// Something failed inside the daemon; the message says what.
    #[error("{0}")]
    Internal(String),
}

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another daemon holds the store.
    #[error("store lock: {0}")]
    Locked(std::io::Error),
}

/// The answer of a write, and the changes it made to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// The contract's result value.
    pub result: T,
    /// One entry per domain the write changed, for the
    /// `CertificateStoreUpdated` signal.
    pub changes: Vec<StoreChange>,
}

impl<T> Outcome<T> {
    /// An answer given before anything was written.
    pub fn unchanged(result: T) -> Outcome<T> {
        Outcome {
            result,
            changes: Vec::new(),
        }
    }
}

/// What the writer lock guards: the index, and what the daemon has done to
/// the disk on its behalf.
struct Writer {
    index: Index,
    /// The snapshot whose directory bundles have their hash links on disk.
    linked: Option<Arc<Snapshot>>,
    /// When the TPM keys that wait for their TPM are read again.
    tpm_retry_at: Option<i64>,
}

/// The certificate store: the single owner of the bundles and leaf
/// directories.
pub struct EvseSecurity {
    layout: Layout,
    clock: Clock,
    watcher: Option<Watcher>,
    /// Serialises writers and the maintenance task. Readers never wait for
    /// it: they take the current snapshot.
    writer: Mutex<Writer>,
    current: RwLock<Arc<Snapshot>>,
    /// GID of `[access] key_group`, when set.
    key_gid: Option<u32>,
    /// Recent `VerifyCertificate` verdicts.
    verdicts: verification::VerdictCache,
    /// The certificate statuses in force (OCPP 2.1 M07). Replaced whole,
    /// under the writer lock.
    statuses: RwLock<Arc<status::StatusTable>>,
    _lock: StoreLock,
}

impl EvseSecurity {
    /// Opens the store on the system clock: see [`EvseSecurity::open_with_clock`].
    pub fn open(config: Config) -> Result<EvseSecurity, OpenError> {
        EvseSecurity::open_with_clock(config, Clock::system())
    }

    /// Prepares the layout, takes the store lock, removes stale temporary
    /// files and reads the whole store once. Every decision that depends on
    /// the time asks `clock`.
    pub fn open_with_clock(config: Config, clock: Clock) -> Result<EvseSecurity, OpenError> {
        let key_gid = match &config.access.key_group {
            Some(name) => {
                Some(
                    crate::access::group_id(name).ok_or_else(|| ConfigError::Value {
                        key: "access.key_group",
                        message: format!("no group named `{name}`"),
                    })?,
                )
            }
            None => None,
        };
        let layout = Layout::prepare(config)?;
        let lock = StoreLock::acquire(&layout.config.certs_directory).map_err(OpenError::Locked)?;
        layout.remove_stale_temp_files();
        let watcher = match Watcher::new(&layout.watched_dirs()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; the store is listed again on every call");
                None
            }
        };
        let mut index = Index::load(layout.clone());
        let snapshot = index.snapshot();
        tracing::info!(
            certificates = snapshot.entries,
            files = snapshot.usage.files,
            "store loaded from {}",
            layout.config.certs_directory.display()
        );
        let statuses = store::certificate_status::read(&layout.config.certs_directory, clock.now());
        let security = EvseSecurity {
            layout,
            clock,
            watcher,
            writer: Mutex::new(Writer {
                index,
                linked: None,
                tpm_retry_at: None,
            }),
            current: RwLock::new(snapshot),
            key_gid,
            verdicts: verification::VerdictCache::default(),
            statuses: RwLock::new(Arc::new(status::StatusTable::new(statuses))),
            _lock: lock,
        };
        {
            let mut writer = security.lock_writer();
            security.publish(&mut writer);
            security.schedule_tpm_retry(&mut writer);
        }
        Ok(security)
    }

    /// The certificate statuses in force.
    fn statuses(&self) -> Arc<status::StatusTable> {
        self.statuses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a new table of certificate statuses in force; only under the
    /// writer lock.
    fn set_statuses(&self, table: status::StatusTable) {
        *self.statuses.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.layout.config
    }

    /// The time the store decides by.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The current view of the store. Never writes to disk and never waits
    /// for a writer: edits made by hand are taken in first when the writer
    /// lock is free, else by the writer that holds it, which reads them
    /// before it lets go.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if self.has_unread_disk_changes() {
            let writer = match self.writer.try_lock() {
                Ok(w) => Some(w),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut writer) = writer {
                if self.take_in_disk_changes(&mut writer, false) {
                    let snapshot = writer.index.snapshot();
                    self.set_current(snapshot);
                }
            }
        }
        self.current_snapshot()
    }

    /// Whether files may have changed on disk that the index has not read:
    /// the watcher holds events, or cannot see every directory.
    pub fn has_unread_disk_changes(&self) -> bool {
        self.watcher
            .as_ref()
            .is_none_or(|w| !w.complete() || w.pending())
    }

    fn current_snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_current(&self, snapshot: Arc<Snapshot>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic cannot leave the index half-changed: its snapshot is only
        // replaced whole, so a poisoned lock is still consistent.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what changed on disk since the last time. `restore`: make the
    /// daemon's own `ocsp/` directories again when one was removed by hand
    /// (never on a read). Returns whether the index changed.
    fn take_in_disk_changes(&self, writer: &mut Writer, restore: bool) -> bool {
        let changes = match &self.watcher {
            Some(w) if w.complete() => w.drain(),
            Some(w) => {
                let _ = w.drain();
                Changes::Rescan
            }
            None => Changes::Rescan,
        };
        match changes {
            Changes::Rescan => {
                // A watched directory went away or events were lost: watch
                // again whatever exists now; until every directory is
                // watched, each call lists them.
                if restore {
                    self.layout.restore_ocsp_dirs();
                }
                if let Some(w) = &self.watcher {
                    w.watch_again(&self.layout.watched_dirs());
                }
                writer.index.rescan()
            }
            Changes::Paths(paths) => paths
                .iter()
                .fold(false, |acc, p| writer.index.refresh(p) | acc),
        }
    }

    /// Sets the time to read again the TPM keys that wait for their TPM,
    /// unless one is set; clears it when none waits.
    fn schedule_tpm_retry(&self, writer: &mut Writer) {
        if !writer.index.awaits_tpm() {
            writer.tpm_retry_at = None;
        } else if writer.tpm_retry_at.is_none() {
            let wait = i64::try_from(self.config().tpm.retry_seconds).unwrap_or(i64::MAX);
            writer.tpm_retry_at = Some(self.now().saturating_add(wait));
        }
    }

    /// Publishes the index's snapshot, and keeps the OpenSSL hash links of
    /// every directory bundle that changed since the last publication in
    /// step with its files.
    fn publish(&self, writer: &mut Writer) {
        let snapshot = writer.index.snapshot();
        for (i, bundle) in snapshot.bundles.iter().enumerate() {
            let unchanged = writer
                .linked
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.bundles[i], bundle));
            // Bundles of several types may share a directory.
            let done = snapshot.bundles[..i].iter().any(|b| b.path == bundle.path);
            if unchanged || done || bundle.mode != store::BundleMode::Directory {
                continue;
            }
            if let Err(e) = store::sync_links(&bundle.path, &bundle.hash_link_targets()) {
                tracing::warn!(dir = %bundle.path.display(), error = %e, "cannot update hash links");
            }
        }
        writer.linked = Some(snapshot.clone());
        self.set_current(snapshot);
    }

    /// Runs one write: `f` makes its changes through the transaction on
    /// an up-to-date snapshot, and answers `Ok` to keep them or `Err` to
    /// have every one of them undone. The index then takes in what was
    /// written, without reading it back, and the new snapshot is
    /// published.
    pub(crate) fn write<T>(
        &self,
        operation: StoreOperation,
        f: impl FnOnce(&Snapshot, &mut Transaction) -> Result<T, T>,
    ) -> Outcome<T> {
        let mut writer = self.lock_writer();
        if self.has_unread_disk_changes() {
            self.take_in_disk_changes(&mut writer, true);
        }
        let snapshot = writer.index.snapshot();
        let mut tx = Transaction::new(&self.layout);
        let (result, committed, changes) = match f(&snapshot, &mut tx) {
            Ok(result) => {
                let changes = tx.changes(operation);
                (result, tx.commit(), changes)
            }
            Err(result) => (result, tx.rollback(), Vec::new()),
        };
        if !committed.touched.is_empty() {
            writer.index.adopt(&committed);
            // The watcher's reports of this very write find nothing new
            // (each costs a stat), so that the next reader is not sent to
            // read the disk again.
            self.take_in_disk_changes(&mut writer, true);
            self.schedule_tpm_retry(&mut writer);
        }
        self.publish(&mut writer);
        Outcome { result, changes }
    }

    /// The daemon's maintenance, run on its timer and never by a call:
    /// takes in edits made by hand (restoring the daemon's own `ocsp/`
    /// directories), updates the hash links they call for, and reads again
    /// the TPM keys whose TPM could not be reached, once
    /// `[tpm] retry_seconds` have passed.
    pub fn maintain(&self) {
        let mut writer = self.lock_writer();
        if self.has_unread_disk_changes() {
            self.take_in_disk_changes(&mut writer, true);
        }
        if writer.tpm_retry_at.is_some_and(|at| self.now() >= at) {
            writer.tpm_retry_at = None;
            writer.index.retry_tpm_keys();
        }
        self.schedule_tpm_retry(&mut writer);
        self.publish(&mut writer);
        writer.index.save_parse_cache();
    }

    /// Whether a PEM argument is within `limits.max_pem_bytes`. Oversized
    /// content is bad content, answered with the method's own result
    /// (contract §5), and refused before any parsing.
    pub(crate) fn fits(&self, what: &str, text: &str) -> bool {
        let limit = self.layout.config.limits.max_pem_bytes;
        if text.len() > limit {
            tracing::warn!(
                "{what} refused: {} bytes, over limits.max_pem_bytes ({limit})",
                text.len()
            );
            return false;
        }
        true
    }

    /// GID of `[access] key_group`, when set.
    pub(crate) fn key_gid(&self) -> Option<u32> {
        self.key_gid
    }

    /// Files and bytes the store takes, and their quotas.
    pub fn store_usage(&self) -> (crate::index::StoreUsage, crate::config::Limits) {
        (self.snapshot().usage, self.config().limits.clone())
    }

    /// The `CertificateEntries` property.
    pub fn certificate_entries(&self) -> u32 {
        self.snapshot().entries
    }
}
