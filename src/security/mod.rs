//! The certificate operations of the contract, on top of the store and
//! the index. Synchronous: the D-Bus layer runs them on blocking threads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::access::Caller;
use crate::config::{Config, ConfigError};
use crate::index::{Bundle, Index, Leaf, Snapshot, MAX_CHAIN_DEPTH};
use crate::store::{self, BundleMode, Layout, StoreLock};
use crate::types::{
    CaCertificateType, CertificateType, CertificateValidationResult, DeleteCertificateResult,
    GetInstalledCertificatesStatus, HashAlgorithm, HashData, HashDataChain,
    InstallCertificateResult, LeafCertificateType, StoreOperation,
};
use crate::watch::{Changes, Watcher};

mod gc;
mod leaf;
mod ocsp;

use crate::verify::{self, ChainVerdict, LeafTime};
use crate::x509::{self, CertFacts, Fingerprint};
use leaf::path_with_issuer_keys;
pub use leaf::{CertificateInfo, LeafCredentials};
pub use ocsp::OcspRequest;

/// Longest base64 signature accepted by `VerifyFileSignature` (an RSA-8192
/// signature is 1368 characters; OCPP allows 800).
pub const MAX_SIGNATURE_B64: usize = 4096;

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

/// A result value and the changes it made.
pub type Outcome<T> = (T, Vec<StoreChange>);

/// The certificate store: the single owner of the bundles and leaf
/// directories.
pub struct EvseSecurity {
    layout: Layout,
    watcher: Option<Watcher>,
    /// Serialises writers and index updates. Readers never take it unless
    /// the watcher reports a change on disk.
    writer: Mutex<Index>,
    current: RwLock<Arc<Snapshot>>,
    /// GID of `[access] key_group`, when set.
    key_gid: Option<u32>,
    /// Every store directory is watched; while not, each call lists them.
    watch_complete: AtomicBool,
    /// Recent `VerifyCertificate` verdicts by chain bytes and types: contract
    /// chains repeat, and parsing is most of a verification's cost.
    verdicts: Mutex<HashMap<Fingerprint, Verdict>>,
    /// When TPM keys that waited for their TPM are read again, in
    /// milliseconds after `opened`; 0 when none waits.
    tpm_retry_at: AtomicU64,
    opened: Instant,
    _lock: StoreLock,
}

impl EvseSecurity {
    /// Prepares the layout, takes the store lock, removes stale temporary
    /// files and reads the whole store once.
    pub fn open(config: Config) -> Result<EvseSecurity, OpenError> {
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
        let snapshot = Arc::new(index.snapshot());
        // Events queued meanwhile (hand edits during the load, the links
        // just written) are applied at the first call; a file that did not
        // change costs a stat.
        sync_hash_links(&snapshot);
        tracing::info!(
            certificates = snapshot.entries,
            files = snapshot.usage.files,
            "store loaded from {}",
            layout.config.certs_directory.display()
        );
        let security = EvseSecurity {
            layout,
            watcher,
            writer: Mutex::new(index),
            current: RwLock::new(snapshot),
            key_gid,
            watch_complete: AtomicBool::new(true),
            verdicts: Mutex::new(HashMap::new()),
            tpm_retry_at: AtomicU64::new(0),
            opened: Instant::now(),
            _lock: lock,
        };
        security.schedule_tpm_retry(&security.lock_writer());
        Ok(security)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.layout.config
    }

    /// The current view of the store, with any hand edits applied.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let watched = self.watch_complete.load(Ordering::Acquire);
        if !watched || self.watcher.as_ref().is_none_or(Watcher::pending) || self.tpm_retry_due() {
            let mut index = self.lock_writer();
            self.apply_disk_changes(&mut index);
        }
        self.current_snapshot()
    }

    fn current_snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_writer(&self) -> MutexGuard<'_, Index> {
        // A panic cannot leave the index half-changed: it is only replaced
        // whole, so a poisoned lock is still consistent.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_disk_changes(&self, index: &mut Index) {
        let changes = match &self.watcher {
            Some(w) if self.watch_complete.load(Ordering::Acquire) => w.drain(),
            Some(w) => {
                let _ = w.drain();
                Changes::Rescan
            }
            None => Changes::Rescan,
        };
        let mut changed = match changes {
            Changes::Rescan => {
                // A watched directory went away or events were lost: watch
                // again whatever exists now, and until every directory is
                // watched, list everything on every call.
                // The ocsp/ directories are the daemon's own: one removed by
                // hand is made again, or responses could not be cached and
                // the watch would stay incomplete for good.
                self.layout.restore_ocsp_dirs();
                if let Some(w) = &self.watcher {
                    let dirs = self.layout.watched_dirs();
                    let present: Vec<PathBuf> =
                        dirs.iter().filter(|d| d.is_dir()).cloned().collect();
                    let complete = present.len() == dirs.len() && w.watch(&present).is_ok();
                    let was_complete = self.watch_complete.swap(complete, Ordering::AcqRel);
                    if was_complete && !complete {
                        tracing::warn!("a store directory is missing; the store is listed on every call until it is back");
                    }
                }
                index.rescan()
            }
            Changes::Paths(paths) => paths.iter().fold(false, |acc, p| index.refresh(p) | acc),
        };
        if self.tpm_retry_due() {
            self.tpm_retry_at.store(0, Ordering::Release);
            changed |= index.retry_tpm_keys();
        }
        self.schedule_tpm_retry(index);
        if changed {
            self.publish(index);
        }
    }

    fn millis_since_open(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether TPM keys wait for their TPM and the time to try again came.
    fn tpm_retry_due(&self) -> bool {
        let at = self.tpm_retry_at.load(Ordering::Acquire);
        at != 0 && self.millis_since_open() >= at
    }

    /// Sets the time to read again the TPM keys that wait for their TPM,
    /// unless one is set; clears it when none waits.
    fn schedule_tpm_retry(&self, index: &Index) {
        if !index.awaits_tpm() {
            self.tpm_retry_at.store(0, Ordering::Release);
        } else if self.tpm_retry_at.load(Ordering::Acquire) == 0 {
            let wait = self.layout.config.tpm.retry_seconds.saturating_mul(1000);
            let at = self.millis_since_open().saturating_add(wait).max(1);
            self.tpm_retry_at.store(at, Ordering::Release);
        }
    }

    fn publish(&self, index: &mut Index) {
        let snapshot = Arc::new(index.snapshot());
        sync_hash_links(&snapshot);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Runs a write under the writer lock on an up-to-date snapshot, then
    /// re-reads the paths it touched and publishes the new snapshot.
    fn write<R>(&self, f: impl FnOnce(&Snapshot) -> (R, Vec<PathBuf>)) -> R {
        let mut index = self.lock_writer();
        self.apply_disk_changes(&mut index);
        let snapshot = self.current_snapshot();
        let (result, touched) = f(&snapshot);
        if !touched.is_empty() {
            for path in &touched {
                index.refresh(path);
            }
            self.schedule_tpm_retry(&index);
            self.publish(&mut index);
        }
        result
    }

    /// Whether a PEM argument is within `limits.max_pem_bytes`. Oversized
    /// content is bad content, answered with the method's own result
    /// (contract §5), and refused before any parsing.
    fn fits(&self, what: &str, text: &str) -> bool {
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

    /// Contract 5.1.
    pub fn install_ca_certificate(
        &self,
        pem: &str,
        ca: CaCertificateType,
    ) -> Result<Outcome<InstallCertificateResult>, Error> {
        use InstallCertificateResult as R;
        if !self.fits("CA certificate", pem) {
            return Ok((R::InvalidFormat, vec![]));
        }
        let cert = match x509::parse_pem_certificates(pem.as_bytes()) {
            Ok((mut certs, 0)) if certs.len() == 1 => certs.remove(0),
            _ => return Ok((R::InvalidFormat, vec![])),
        };
        let cert = match CertFacts::new(cert) {
            Ok(c) => c,
            Err(_) => return Ok((R::InvalidFormat, vec![])),
        };
        let refused = |result: R| {
            tracing::warn!(ca = %ca, subject = %cert.common_name(), %result, "CA certificate refused");
            Ok((result, vec![]))
        };
        if !cert.is_ca {
            return refused(R::InvalidCertificateChain);
        }
        if ca == CaCertificateType::V2G {
            if let Err(reason) = crate::iso15118::check_v2g_ca(&cert.x509, cert.self_signed) {
                tracing::warn!(subject = %cert.common_name(), %reason, "V2G CA certificate refused: not the ISO 15118-2 profile");
                return refused(R::InvalidCertificateChain);
            }
        }
        if !cert.is_valid_at(x509::now()) {
            return refused(R::Expired);
        }
        let limits = &self.layout.config.limits;
        Ok(self.write(|snap| {
            let bundle = snap.bundle(ca);
            if bundle.nodes.iter().any(|n| n.cert.fingerprint == cert.fingerprint) {
                return ((R::Accepted, vec![]), vec![]);
            }
            // Not self-signed: its issuer must be in the bundle and its
            // signature must verify. A self-issued certificate whose own
            // signature fails is a broken root, not a missing issuer.
            if !cert.self_signed && !bundle.nodes.iter().any(|n| cert.is_issued_by(&n.cert)) {
                let result = if cert.subject_der == cert.issuer_der {
                    R::InvalidSignature
                } else {
                    R::NoRootCertificateInstalled
                };
                tracing::warn!(ca = %ca, subject = %cert.common_name(), %result, "CA certificate refused");
                return ((result, vec![]), vec![]);
            }
            let pem = match cert.x509.to_pem() {
                Ok(p) => p,
                Err(_) => return ((R::InvalidFormat, vec![]), vec![]),
            };
            if !snap.usage.fits(1, pem.len() as u64, limits) {
                tracing::warn!(ca = %ca, "store full; install refused");
                return ((R::CertificateStoreMaxLengthExceeded, vec![]), vec![]);
            }
            let written = match bundle.mode {
                BundleMode::File => append_to_bundle_file(&bundle.path, &pem),
                BundleMode::Directory => {
                    let path = bundle.path.join(format!("{}_ROOT_{}.pem", ca, store::random_suffix()));
                    store::atomic_write(&path, &pem, store::CERT_MODE).map(|()| path)
                }
            };
            match written {
                Ok(path) => {
                    tracing::info!(ca = %ca, subject = %cert.common_name(), path = %path.display(), "CA certificate installed");
                    let changes = self.changes_for_path(StoreOperation::Installed, &bundle.path, None);
                    ((R::Accepted, changes), vec![path])
                }
                Err(e) => {
                    tracing::error!(ca = %ca, error = %e, "CA certificate install failed");
                    ((R::WriteError, vec![]), vec![])
                }
            }
        }))
    }

    /// One change per CA type whose bundle is `bundle_path` (several types
    /// may share a file), or the leaf type.
    fn changes_for_path(
        &self,
        operation: StoreOperation,
        bundle_path: &Path,
        leaf: Option<LeafCertificateType>,
    ) -> Vec<StoreChange> {
        if let Some(leaf) = leaf {
            return vec![StoreChange {
                operation,
                ca: None,
                leaf: Some(leaf),
            }];
        }
        CaCertificateType::ALL
            .iter()
            .filter(|ca| self.layout.bundle_path(**ca) == bundle_path)
            .map(|ca| StoreChange {
                operation,
                ca: Some(*ca),
                leaf: None,
            })
            .collect()
    }

    /// The change a write or removal of `path` (a leaf, key or OCSP file,
    /// or a bundle file) is reported as: its leaf domain, else its bundle.
    fn change_for_file(&self, path: &Path, operation: StoreOperation) -> StoreChange {
        let config = self.config();
        let dir = path.parent().unwrap_or(Path::new("/"));
        let dir = if dir.file_name().is_some_and(|n| n == "ocsp") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        let leaf = [LeafCertificateType::CSMS, LeafCertificateType::V2G]
            .into_iter()
            .find(|l| {
                config
                    .leaf_dirs(*l)
                    .is_some_and(|(c, k)| c == dir || k == dir)
            });
        let ca = CaCertificateType::ALL
            .iter()
            .copied()
            .find(|ca| {
                let bundle = config.ca_bundle(*ca);
                bundle == dir || bundle.parent() == Some(dir)
            })
            .filter(|_| leaf.is_none());
        StoreChange {
            operation,
            ca,
            leaf,
        }
    }

    /// Contract 5.2.
    pub fn delete_certificate(&self, query: &HashData) -> Outcome<DeleteCertificateResult> {
        use DeleteCertificateResult as R;
        self.write(|snap| {
            let no_leaves = Vec::new();
            let secc_doomed: Vec<&Leaf> = snap
                .leaf_domain(LeafCertificateType::V2G)
                .map_or(&no_leaves, |d| &d.leaves)
                .iter()
                .filter(|l| leaf_matches(l, query))
                .collect();
            // The station's own OCPP client certificate is never deleted
            // (OCPP M04.FR.06), also when it is an SECC leaf too, and then
            // nothing else is touched either.
            let csms = snap.leaf_domain(LeafCertificateType::CSMS).map_or(&no_leaves, |d| &d.leaves);
            if csms.iter().any(|c| leaf_matches(c, query) || secc_doomed.iter().any(|l| l.cert.fingerprint == c.cert.fingerprint)) {
                tracing::warn!("delete refused: the hash names the CSMS client certificate");
                return ((R::Failed, vec![]), vec![]);
            }

            let mut touched: Vec<PathBuf> = Vec::new();
            let mut changes: Vec<StoreChange> = Vec::new();
            let mut failed = false;
            let mut done_paths: HashSet<&Path> = HashSet::new();
            for bundle in &snap.bundles {
                if !done_paths.insert(&bundle.path) {
                    continue;
                }
                let doomed = doomed_nodes(bundle, query);
                if doomed.is_empty() {
                    continue;
                }
                for node in &doomed {
                    let c = &bundle.nodes[*node].cert;
                    tracing::info!(ca = %bundle.ca, subject = %c.common_name(), serial = %c.serial, "deleting CA certificate");
                }
                let fingerprints: HashSet<Fingerprint> =
                    doomed.iter().map(|i| bundle.nodes[*i].cert.fingerprint).collect();
                let files: BTreeSet<&PathBuf> = doomed.iter().flat_map(|i| &bundle.nodes[*i].files).collect();
                let mut removed_any = false;
                for file in files {
                    touched.push(file.clone());
                    let keep_empty_file = bundle.mode == BundleMode::File;
                    match remove_certificates(file, &fingerprints, keep_empty_file) {
                        Ok(()) => removed_any = true,
                        Err(e) => {
                            tracing::error!(path = %file.display(), error = %e, "delete failed");
                            failed = true;
                        }
                    }
                }
                if removed_any {
                    changes.extend(self.changes_for_path(StoreOperation::Deleted, &bundle.path, None));
                }
            }

            let doomed_fps: HashSet<Fingerprint> = secc_doomed.iter().map(|l| l.cert.fingerprint).collect();
            let kept_keys: HashSet<&PathBuf> = snap
                .leaves
                .iter()
                .flat_map(|d| &d.leaves)
                .filter(|l| !doomed_fps.contains(&l.cert.fingerprint))
                .filter_map(|l| l.key.as_ref())
                .collect();
            let mut removed_any = false;
            for leaf in &secc_doomed {
                tracing::info!(leaf = "V2G", subject = %leaf.cert.common_name(), serial = %leaf.cert.serial, "deleting leaf certificate");
                let mut paths: Vec<PathBuf> = leaf.files.iter().map(|f| f.path.clone()).collect();
                paths.extend(leaf.key.iter().filter(|k| !kept_keys.contains(k)).cloned());
                paths.extend(ocsp_files_of(snap, &leaf.cert, leaf.issuer_key_bits()));
                for path in paths {
                    match store::remove_durably(&path) {
                        Ok(()) => removed_any = true,
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "delete failed");
                            failed = true;
                        }
                    }
                    touched.push(path);
                }
            }
            if removed_any {
                changes.push(StoreChange {
                    operation: StoreOperation::Deleted,
                    ca: None,
                    leaf: Some(LeafCertificateType::V2G),
                });
            }

            let result = if touched.is_empty() {
                R::NotFound
            } else if failed {
                R::Failed
            } else {
                R::Accepted
            };
            ((result, changes), touched)
        })
    }

    /// Contract 5.4.
    pub fn verify_certificate(
        &self,
        chain_pem: &str,
        types: &[LeafCertificateType],
    ) -> Result<CertificateValidationResult, Error> {
        if let Some(refused) = self.refuse_oversized(chain_pem) {
            return Ok(refused.result);
        }
        let snap = self.snapshot();
        let now = x509::now();
        let mask = types.iter().fold(0u8, |m, t| m | 1 << t.anchor().slot());
        let mut key_input = chain_pem.as_bytes().to_vec();
        key_input.push(mask);
        let key = x509::sha256(&key_input);
        let cached = self
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        if let Some(v) =
            cached.filter(|v| v.generation == snap.generation && v.from <= now && now < v.until)
        {
            return Ok(v.result);
        }
        let (result, from, until) = match read_chain(chain_pem) {
            Ok((chain, _)) => {
                let result =
                    Self::verify_parsed(&snap, &chain, types, now, LeafTime::ValidNow).result;
                // The verdict holds until the next notBefore or notAfter of
                // the chain or of the bundles it was checked against.
                let anchors = types
                    .iter()
                    .flat_map(|t| &snap.bundle(t.anchor()).nodes)
                    .map(|n| n.cert.as_ref());
                let (from, until) = validity_window(chain.iter().chain(anchors), now);
                (result, from, until)
            }
            Err(refused) => (refused.result, i64::MIN, i64::MAX),
        };
        // An internal failure is not an answer to keep.
        if result == CertificateValidationResult::Unknown && until != i64::MAX {
            return Ok(result);
        }
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= MAX_CACHED_VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(
            key,
            Verdict {
                generation: snap.generation,
                from,
                until,
                result,
            },
        );
        Ok(result)
    }

    /// The verdict on a chain argument over `[limits] max_pem_bytes`,
    /// before anything reads it (or the verdict cache hashes it).
    fn refuse_oversized(&self, chain_pem: &str) -> Option<ChainVerdict> {
        (!self.fits("certificate chain", chain_pem)).then(|| {
            ChainVerdict::new(
                CertificateValidationResult::Unknown,
                "the chain is longer than [limits] max_pem_bytes",
            )
        })
    }

    /// `VerifyCertificateDetailed`: contract 5.4, with why. Never cached:
    /// an operator asks this once, to read the reason.
    pub fn verify_certificate_detailed(
        &self,
        chain_pem: &str,
        types: &[LeafCertificateType],
    ) -> ChainVerdict {
        use CertificateValidationResult as V;
        if let Some(refused) = self.refuse_oversized(chain_pem) {
            return refused;
        }
        let facts = match read_chain(chain_pem) {
            Ok((chain, _)) => chain,
            Err(refused) => return refused,
        };
        let snap = self.snapshot();
        let now = x509::now();
        let verdict = Self::verify_parsed(&snap, &facts, types, now, LeafTime::ValidNow);
        if verdict.result != V::Expired {
            return verdict;
        }
        // A chain that is valid a day away on either side points at the
        // station's clock rather than at the chain (EVerest #1662).
        let valid_at = |at| {
            Self::verify_parsed(&snap, &facts, types, at, LeafTime::ValidNow).result == V::Valid
        };
        let clock = if valid_at(now - DAY) {
            Some("was valid a day ago")
        } else if valid_at(now + DAY) {
            Some("is valid a day from now")
        } else {
            None
        };
        match clock {
            Some(when) => ChainVerdict {
                reason: format!(
                    "{}; the chain {when}: check the station's clock",
                    verdict.reason
                ),
                ..verdict
            },
            None => verdict,
        }
    }

    /// Contract 5.4 on a parsed chain, against the bundles of `snap`.
    fn verify_parsed(
        snap: &Snapshot,
        chain: &[CertFacts],
        types: &[LeafCertificateType],
        now: i64,
        leaf_time: LeafTime,
    ) -> ChainVerdict {
        use CertificateValidationResult as V;
        let mut anchors: Vec<CaCertificateType> = types.iter().map(|t| t.anchor()).collect();
        anchors.sort();
        anchors.dedup();
        // A bundle whose roots are all out of date still takes part, so
        // that the answer is `Expired`, not `IssuerNotFound`.
        anchors.retain(|ca| !snap.bundle(*ca).nodes.is_empty());
        if anchors.is_empty() {
            return ChainVerdict::new(
                V::IssuerNotFound,
                "no certificate is installed for these types",
            );
        }
        verify::verify_chain(
            &snap.trust_anchors_for(&anchors, chain),
            chain,
            now,
            leaf_time,
        )
    }

    /// Contract 5.5.
    pub fn get_installed_certificates(
        &self,
        types: &[CertificateType],
    ) -> (GetInstalledCertificatesStatus, Vec<HashDataChain>) {
        let chains: Vec<HashDataChain> = installed_chains(&self.snapshot(), types)
            .into_iter()
            .filter_map(|(certificate_type, chain)| {
                let mut hashes = chain.into_iter().map(|c| c.hash);
                Some(HashDataChain {
                    certificate_type,
                    certificate_hash_data: hashes.next()?,
                    child_certificate_hash_data: hashes.collect(),
                })
            })
            .collect();
        let status = if chains.is_empty() {
            GetInstalledCertificatesStatus::NotFound
        } else {
            GetInstalledCertificatesStatus::Accepted
        };
        (status, chains)
    }

    /// The certificates of `GetInstalledCertificates`, one by one, with
    /// what an operator wants to see of them (`evsecctl list`).
    pub fn list_certificates(&self, types: &[CertificateType]) -> Vec<ListedCertificate> {
        installed_chains(&self.snapshot(), types)
            .into_iter()
            .flat_map(|(_, chain)| chain)
            .collect()
    }

    /// Contract 5.9.
    pub fn is_ca_certificate_installed(&self, ca: CaCertificateType) -> bool {
        self.snapshot().bundle(ca).has_valid_root(x509::now())
    }

    /// Contract 5.13: the file to hand to a TLS stack as CAfile.
    pub fn get_verify_file(&self, ca: CaCertificateType) -> String {
        let snap = self.snapshot();
        let bundle = snap.bundle(ca);
        match bundle.mode {
            BundleMode::File => bundle.path.display().to_string(),
            BundleMode::Directory => {
                let now = x509::now();
                bundle
                    .roots()
                    .map(|i| &bundle.nodes[i])
                    .filter(|n| n.cert.is_valid_at(now))
                    .flat_map(|n| n.files.iter())
                    .min()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            }
        }
    }

    /// Contract 5.14: the file or `-CApath` directory of a bundle.
    pub fn get_verify_location(&self, ca: CaCertificateType) -> String {
        let snap = self.snapshot();
        let bundle = snap.bundle(ca);
        match bundle.mode {
            BundleMode::File => bundle.path.display().to_string(),
            BundleMode::Directory if bundle.nodes.is_empty() => String::new(),
            BundleMode::Directory => bundle.path.display().to_string(),
        }
    }

    /// Contract 5.16: whether `signature_b64` is a signature by the key of
    /// `signing_certificate` over the SHA-256 of the file at `path` (ECDSA,
    /// RSA PKCS#1 v1.5 or RSA-PSS). Only the signature is checked: the
    /// caller checks the signing certificate with `VerifyCertificate([MF])`.
    /// Every failure, including a path that is not a readable regular file,
    /// is `false`.
    ///
    /// With a `reader`, the file is read only when that caller could read
    /// it itself, so the daemon cannot be used to learn about files the
    /// caller has no access to.
    pub fn verify_file_signature(
        &self,
        path: &str,
        signing_certificate: &str,
        signature_b64: &str,
        reader: Option<&Caller>,
    ) -> bool {
        let never = Arc::default();
        self.verify_file_signature_until(path, signing_certificate, signature_b64, reader, never)
    }

    /// [`EvseSecurity::verify_file_signature`] that stops, `false`, once
    /// `cancel` is set (the caller left the bus).
    pub fn verify_file_signature_until(
        &self,
        path: &str,
        signing_certificate: &str,
        signature_b64: &str,
        reader: Option<&Caller>,
        cancel: Arc<AtomicBool>,
    ) -> bool {
        let path = Path::new(path);
        if !path.is_absolute() {
            return false;
        }
        let bounds = self.hash_bounds(cancel);
        // The path is the caller's and may be megabytes long.
        let shown: String = path.to_string_lossy().chars().take(256).collect();
        self.verify_signature_of(signing_certificate, signature_b64, &shown, || {
            store::sha256_of_regular_file(path, reader, &bounds)
        })
    }

    /// `VerifyFileSignatureFd`: as [`EvseSecurity::verify_file_signature`],
    /// of a file the caller opened itself, so that its own rights decide what
    /// can be checked. Anything but a regular file is `false` at once.
    pub fn verify_file_signature_fd(
        &self,
        file: &std::fs::File,
        signing_certificate: &str,
        signature_b64: &str,
        cancel: Arc<AtomicBool>,
    ) -> bool {
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return false;
        }
        let bounds = self.hash_bounds(cancel);
        self.verify_signature_of(signing_certificate, signature_b64, "the descriptor", || {
            store::sha256_of_open_file(file, &bounds)
        })
    }

    fn hash_bounds(&self, cancel: Arc<AtomicBool>) -> store::HashBounds {
        store::HashBounds {
            max_bytes: self.config().limits.max_file_bytes,
            cancel,
        }
    }

    /// Checks the signature over the SHA-256 that `digest` computes of the
    /// file `shown` names, once the certificate and the signature have been
    /// parsed. Every failure is `false`; one of `digest` is logged, at a
    /// bounded rate.
    fn verify_signature_of(
        &self,
        signing_certificate: &str,
        signature_b64: &str,
        shown: &str,
        digest: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> bool {
        if signing_certificate.len() > self.config().limits.max_pem_bytes
            || signature_b64.len() > MAX_SIGNATURE_B64
        {
            return false;
        }
        let cert = match x509::parse_pem_certificates(signing_certificate.as_bytes()) {
            Ok((mut certs, 0)) if certs.len() == 1 => certs.remove(0),
            _ => return false,
        };
        // Callers choose what fails here, and may fail on purpose.
        let not_checked = |why: &dyn std::fmt::Display| {
            if let Some(held_back) = FILE_CHECK_LOG.admit() {
                tracing::info!(
                    "file signature not checked: {shown}: {why}{}",
                    held_back_note(held_back)
                );
            }
            false
        };
        if let Err(reason) = x509::check_public_key(&cert) {
            return not_checked(&format_args!("signing certificate refused: {reason}"));
        }
        let Some(signature) = x509::decode_base64(signature_b64) else {
            return false;
        };
        match digest() {
            Ok(digest) => x509::verify_digest_signature(&cert, &digest, &signature),
            Err(e) => not_checked(&e),
        }
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

/// Lines about files whose signature could not be checked: callers choose
/// the paths, and may fail on purpose.
static FILE_CHECK_LOG: crate::logging::Throttle = crate::logging::Throttle::new(20);

fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} such lines held back)")
    }
}

/// Verdicts kept; the cache is emptied when full so that it stays bounded.
const MAX_CACHED_VERDICTS: usize = 1024;

/// A cached verification: valid for one store generation and while the
/// clock stays inside `[from, until)`, where no certificate involved starts
/// or ends its validity.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    generation: u64,
    from: i64,
    until: i64,
    result: CertificateValidationResult,
}

/// The span around `now` in which no certificate of `certs` becomes valid
/// or expires.
fn validity_window<'a>(certs: impl Iterator<Item = &'a CertFacts>, now: i64) -> (i64, i64) {
    let mut from = i64::MIN;
    let mut until = i64::MAX;
    for cert in certs {
        // OpenSSL counts a certificate as valid from notBefore and expired
        // from notAfter on, so its state changes at both instants.
        for edge in [cert.not_before, cert.not_after] {
            if edge <= now {
                from = from.max(edge);
            } else {
                until = until.min(edge);
            }
        }
    }
    (from, until)
}

/// One certificate of a listing.
#[derive(Debug, Clone)]
pub struct ListedCertificate {
    /// The listing it belongs to.
    pub certificate_type: CertificateType,
    /// The certificate.
    pub cert: Arc<CertFacts>,
    /// Its SHA-256 hash data.
    pub hash: HashData,
    /// A file that holds it.
    pub path: PathBuf,
}

/// The chains of `GetInstalledCertificates` (contract 5.5), head first:
/// for a root type each self-signed root, then its Sub-CAs in the bundle
/// depth-first; for `V2GCertificateChain` each SECC leaf that has its key,
/// then its Sub-CAs leaf side first, without the root.
fn installed_chains(
    snap: &Snapshot,
    types: &[CertificateType],
) -> Vec<(CertificateType, Vec<ListedCertificate>)> {
    let mut wanted: Vec<CertificateType> = if types.is_empty() {
        CertificateType::ALL.to_vec()
    } else {
        types.to_vec()
    };
    let mut seen = HashSet::new();
    wanted.retain(|t| seen.insert(*t));
    let mut chains = Vec::new();
    for certificate_type in wanted {
        let listed = |cert: &Arc<CertFacts>, hash: HashData, path: &Path| ListedCertificate {
            certificate_type,
            cert: cert.clone(),
            hash,
            path: path.to_owned(),
        };
        match certificate_type.bundle() {
            Some(ca) => {
                let bundle = snap.bundle(ca);
                for root in bundle.roots() {
                    let chain: Vec<ListedCertificate> = std::iter::once(root)
                        .chain(bundle.descendants(root))
                        .filter_map(|i| {
                            let node = &bundle.nodes[i];
                            Some(listed(&node.cert, node.hash.clone()?, node.files.first()?))
                        })
                        .collect();
                    if chain
                        .first()
                        .is_some_and(|c| c.cert.fingerprint == bundle.nodes[root].cert.fingerprint)
                    {
                        chains.push((certificate_type, chain));
                    }
                }
            }
            None => {
                let Some(secc) = snap.leaf_domain(LeafCertificateType::V2G) else {
                    continue;
                };
                for leaf in secc
                    .leaves
                    .iter()
                    .filter(|l| l.key.is_some() && l.hash.is_some())
                {
                    let Some(file) = leaf.files.first().map(|f| &f.path) else {
                        continue;
                    };
                    // The leaf, then its Sub-CAs; the root is not listed.
                    let chain = path_with_issuer_keys(leaf)
                        .into_iter()
                        .filter(|(cert, _)| !cert.self_signed)
                        .map(|(cert, bits)| {
                            listed(cert, cert.hash_data(HashAlgorithm::SHA256, bits), file)
                        })
                        .collect();
                    chains.push((certificate_type, chain));
                }
            }
        }
    }
    chains
}

/// Most PEM blocks a chain argument may hold: twice the longest path
/// followed, so that a chain with a few extra certificates still parses.
const MAX_PEM_BLOCKS: usize = 2 * MAX_CHAIN_DEPTH;

/// A day in seconds.
const DAY: i64 = 86_400;

/// Parses a chain argument, leaf first, with the number of PEM blocks that
/// are not certificates; or the verdict on text that is no chain: more PEM
/// blocks than any path (counted before anything is parsed), no
/// certificate, or a block or certificate that does not parse.
fn read_chain(pem: &str) -> Result<(Vec<CertFacts>, usize), ChainVerdict> {
    use CertificateValidationResult as V;
    if x509::pem_block_count(pem.as_bytes()) > MAX_PEM_BLOCKS {
        return Err(ChainVerdict::new(
            V::InvalidChain,
            format!("the chain has more than {MAX_PEM_BLOCKS} PEM blocks"),
        ));
    }
    let (certs, others) = x509::parse_pem_certificates(pem.as_bytes())
        .map_err(|e| ChainVerdict::new(V::Unknown, format!("the chain does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(ChainVerdict::new(
            V::Unknown,
            "the text holds no certificate",
        ));
    }
    let mut chain = Vec::with_capacity(certs.len());
    for (depth, cert) in certs.into_iter().enumerate() {
        match CertFacts::new(cert.clone()) {
            Ok(facts) => chain.push(facts),
            Err(e) => return Err(ChainVerdict::new(V::Unknown, e).at(depth, &cert)),
        }
    }
    Ok((chain, others))
}

/// True when `cert`, issued by the holder of `issuer_key_bits`, has the hash
/// data `query`. SHA-384 and SHA-512 are computed on demand.
pub fn hash_matches(
    cert: &CertFacts,
    precomputed: Option<&HashData>,
    issuer_key_bits: Option<&[u8]>,
    query: &HashData,
) -> bool {
    if cert.serial != query.serial_number {
        return false;
    }
    match (precomputed, issuer_key_bits) {
        (Some(h), _) if h.hash_algorithm == query.hash_algorithm => h == query,
        (_, Some(bits)) => cert.hash_data(query.hash_algorithm, bits) == *query,
        _ => false,
    }
}

fn leaf_matches(leaf: &crate::index::Leaf, query: &HashData) -> bool {
    hash_matches(
        &leaf.cert,
        leaf.hash.as_ref(),
        leaf.issuer_key_bits(),
        query,
    )
}

/// The cached OCSP files (`.hash` and `.der`) of a certificate.
fn ocsp_files_of(
    snap: &Snapshot,
    cert: &CertFacts,
    issuer_key_bits: Option<&[u8]>,
) -> Vec<PathBuf> {
    snap.ocsp
        .iter()
        .filter(|e| hash_matches(cert, None, issuer_key_bits, &e.hash))
        .flat_map(|e| [e.hash_path.clone(), e.der_path.clone()])
        .collect()
}

/// The nodes a delete removes from a bundle: each match and its descendants.
fn doomed_nodes(bundle: &Bundle, query: &HashData) -> Vec<usize> {
    let mut doomed = Vec::new();
    let mut seen = HashSet::new();
    for (i, node) in bundle.nodes.iter().enumerate() {
        if hash_matches(
            &node.cert,
            node.hash.as_ref(),
            node.issuer_key_bits.as_deref(),
            query,
        ) {
            for n in std::iter::once(i).chain(bundle.descendants(i)) {
                if seen.insert(n) {
                    doomed.push(n);
                }
            }
        }
    }
    doomed
}

/// Appends a certificate to a file-mode bundle, keeping every byte already
/// there.
fn append_to_bundle_file(path: &Path, pem: &[u8]) -> std::io::Result<PathBuf> {
    let mut content = match fs::read(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(pem);
    store::atomic_rewrite(path, &content)?;
    Ok(path.to_owned())
}

/// Removes the certificates with the given fingerprints from a file,
/// keeping every other byte. A file left with no certificate is removed,
/// unless it is a file-mode bundle, which stays as an empty file.
fn remove_certificates(
    path: &Path,
    doomed: &HashSet<Fingerprint>,
    keep_empty_file: bool,
) -> std::io::Result<()> {
    let content = fs::read(path)?;
    // An unterminated block at the end is kept as it is, like any text
    // between blocks.
    let (blocks, _) = x509::pem_blocks(&content);
    let mut out = Vec::with_capacity(content.len());
    let mut pos = 0;
    let mut left = 0;
    for block in blocks.iter().filter(|b| b.label == "CERTIFICATE") {
        let fingerprint = openssl::x509::X509::from_pem(&content[block.range.clone()])
            .ok()
            .and_then(|c| c.to_der().ok())
            .map(|der| x509::sha256(&der));
        if fingerprint.is_some_and(|fp| doomed.contains(&fp)) {
            out.extend_from_slice(&content[pos..block.range.start]);
            pos = block.range.end;
            if content.get(pos) == Some(&b'\n') {
                pos += 1;
            }
        } else {
            left += 1;
        }
    }
    out.extend_from_slice(&content[pos..]);
    // A DER file has no blocks: it holds exactly the doomed certificate.
    if (left == 0 || blocks.is_empty()) && !keep_empty_file {
        return store::remove_durably(path);
    }
    if blocks.is_empty() {
        out.clear();
    }
    store::atomic_rewrite(path, &out)
}

/// Keeps the OpenSSL `<subject-hash>.<n>` links of every directory bundle
/// in step with its `.pem` files, so the directory works as `-CApath`.
fn sync_hash_links(snap: &Snapshot) {
    let mut done = HashSet::new();
    for bundle in snap
        .bundles
        .iter()
        .filter(|b| b.mode == BundleMode::Directory)
    {
        if !done.insert(&bundle.path) {
            continue;
        }
        let mut pairs: Vec<(u32, String)> = bundle
            .nodes
            .iter()
            .flat_map(|n| {
                let hash = n.cert.x509.subject_name_hash();
                n.files
                    .iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "pem"))
                    .filter_map(move |f| {
                        Some((hash, f.file_name()?.to_string_lossy().into_owned()))
                    })
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        if let Err(e) = apply_links(&bundle.path, &pairs) {
            tracing::warn!(dir = %bundle.path.display(), error = %e, "cannot update hash links");
        }
    }
}

fn is_hash_link_name(name: &str) -> bool {
    matches!(name.split_once('.'), Some((h, n)) if h.len() == 8
        && h.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a link is one evsecd made: it names a `.pem` file of the same
/// directory. Links made by others (`c_rehash` links to `.crt` files, say)
/// are left alone, and keep their names.
fn is_own_link(target: &Path) -> bool {
    target.components().count() == 1 && target.extension().is_some_and(|e| e == "pem")
}

/// Makes the directory's subject-hash links those of `pairs` (hash, file
/// name), numbered from 0 per hash and skipping names that others' links
/// or files take; removes only its own links that are no longer wanted.
fn apply_links(dir: &Path, pairs: &[(u32, String)]) -> std::io::Result<()> {
    let mut own: HashMap<String, PathBuf> = HashMap::new();
    let mut taken: HashSet<String> = HashSet::new();
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_hash_link_name(&name) {
            continue;
        }
        match fs::read_link(entry.path()) {
            Ok(target) if is_own_link(&target) => {
                own.insert(name, target);
            }
            _ => {
                taken.insert(name);
            }
        }
    }
    let mut wanted: Vec<(String, &str)> = Vec::new();
    let mut last: Option<u32> = None;
    let mut n = 0;
    for (hash, file) in pairs {
        n = if last == Some(*hash) { n + 1 } else { 0 };
        last = Some(*hash);
        while taken.contains(&format!("{hash:08x}.{n}")) {
            n += 1;
        }
        wanted.push((format!("{hash:08x}.{n}"), file));
    }
    let mut changed = false;
    let wanted_names: HashSet<&str> = wanted.iter().map(|(l, _)| l.as_str()).collect();
    for name in own.keys().filter(|n| !wanted_names.contains(n.as_str())) {
        fs::remove_file(dir.join(name))?;
        changed = true;
    }
    for (link, target) in &wanted {
        let path = dir.join(link);
        match own.get(link) {
            Some(t) if t == Path::new(target) => continue,
            Some(_) => fs::remove_file(&path)?,
            None => {}
        }
        symlink(target, &path)?;
        changed = true;
    }
    if changed {
        store::sync_dir(dir)?;
    }
    Ok(())
}
