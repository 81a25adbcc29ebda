//! Garbage collection: expired leaves beyond the newest few, CSR keys that
//! evsecd generated and no certificate took up, and OCSP responses of
//! certificates that are gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::EvseSecurity;
use crate::index::{hash_matches, sort_newest_first, Leaf, Snapshot};
use crate::store::{self, pending_keys, StoreChange};
use crate::types::{LeafCertificateType, StoreOperation};
use crate::x509::{self, CertFacts, Fingerprint};

impl EvseSecurity {
    /// Contract 5.17, also run on the `[gc] interval_seconds` timer. Never
    /// removes a currently valid leaf, the newest leaves of a domain, a CA
    /// certificate, a key in use or a response of a present certificate.
    pub fn garbage_collect(&self) -> Vec<StoreChange> {
        let gc = self.config().gc.clone();
        let now = self.now();
        let outcome = self.write(StoreOperation::Deleted, |snap, tx| {
            let mut doomed: Vec<PathBuf> = Vec::new();
            let mut removed_leaves: HashSet<crate::x509::Fingerprint> = HashSet::new();

            for domain in &snap.leaves {
                // The SECC directories hold -2 and -20 leaves: each type
                // keeps its own newest.
                let mut by_type: BTreeMap<Option<LeafCertificateType>, Vec<&Leaf>> = BTreeMap::new();
                for leaf in &domain.leaves {
                    let kind = LeafCertificateType::ALL
                        .iter()
                        .copied()
                        .filter(|t| t.stored_in() == Some(domain.leaf))
                        .find(|t| t.fits_key(leaf.cert.key_algorithm));
                    by_type.entry(kind).or_default().push(leaf);
                }
                for (_, mut leaves) in by_type {
                    sort_newest_first(&mut leaves);
                    for leaf in leaves.iter().skip(gc.keep_leaves.max(1)).filter(|l| l.cert.not_after < now) {
                        tracing::info!(leaf = %domain.leaf, subject = %leaf.cert.common_name(), serial = %leaf.cert.serial, "removing expired leaf");
                        doomed.extend(leaf.files.iter().map(|f| f.path.clone()));
                        removed_leaves.insert(leaf.cert.fingerprint);
                    }
                }
            }

            // Keys: a key is in use while a remaining leaf pairs with it. A
            // key that only looks unused expires only when evsecd recorded
            // it for a CSR and no certificate file of the leaf directories,
            // parsed by the index or not, takes it up.
            let kept_leaves: Vec<&Leaf> = snap
                .leaves
                .iter()
                .flat_map(|d| &d.leaves)
                .filter(|l| !removed_leaves.contains(&l.cert.fingerprint))
                .collect();
            let keys_in_use: HashSet<&Path> = kept_leaves.iter().filter_map(|l| l.key.as_deref()).collect();
            let certified = certified_keys(self.config());
            if let Err(doubt) = &certified {
                tracing::warn!("CSR keys are kept this time: {doubt}");
            }
            let max_age_ns = i128::from(gc.csr_key_max_age_seconds) * 1_000_000_000;
            let now_ns = i128::from(now) * 1_000_000_000;
            let mut records: HashMap<PathBuf, (BTreeSet<String>, Vec<String>)> = HashMap::new();
            for key in snap.keys() {
                let (Some(dir), Some(name)) = (key.path.parent(), key.path.file_name().and_then(|n| n.to_str())) else {
                    continue;
                };
                let (recorded, forget) = match records.entry(dir.to_owned()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => match pending_keys::read(dir) {
                        Ok(names) => e.insert((names, Vec::new())),
                        Err(err) => {
                            tracing::warn!("CSR keys of {} are kept: their record cannot be read: {err}", dir.display());
                            e.insert((BTreeSet::new(), Vec::new()))
                        }
                    },
                };
                // A key that cannot be opened (wrong password, TPM key
                // without its provider) is never judged unused.
                let Some(fingerprint) = key.key_fingerprint else {
                    continue;
                };
                if keys_in_use.contains(key.path.as_path()) {
                    continue;
                }
                let was_paired = snap.leaves.iter().flat_map(|d| &d.leaves).any(|l| l.key.as_ref() == Some(&key.path));
                if was_paired {
                    tracing::info!(key = %key.path.display(), "removing the key of a removed leaf");
                    doomed.push(key.path.clone());
                    continue;
                }
                if !recorded.contains(name) {
                    continue;
                }
                match &certified {
                    Ok(certified) if certified.contains(&fingerprint) => forget.push(name.to_owned()),
                    Ok(_) if now_ns - key.stamp.mtime_ns > max_age_ns => {
                        tracing::info!(key = %key.path.display(), "removing a CSR key that no certificate took up");
                        doomed.push(key.path.clone());
                        forget.push(name.to_owned());
                    }
                    _ => {}
                }
            }
            // Names of keys that are gone are forgotten too.
            for (dir, (recorded, forget)) in &mut records {
                forget.extend(recorded.iter().filter(|n| !dir.join(n).exists()).cloned());
            }

            // OCSP responses of certificates no longer present, and .der
            // files left without their .hash.
            let (present, unlinked_serials) = present_certificates(snap, &removed_leaves);
            for entry in snap.ocsp.iter() {
                // A certificate whose issuer is not in the store has no hash
                // data to compare; its serial keeps the response.
                let live = unlinked_serials.contains(&entry.hash.serial_number)
                    || present.iter().any(|(cert, bits)| hash_matches(cert, None, Some(bits), &entry.hash));
                if !live {
                    tracing::info!(path = %entry.hash_path.display(), "removing OCSP response of a certificate that is gone");
                    doomed.push(entry.hash_path.clone());
                    doomed.push(entry.der_path.clone());
                }
            }
            for der in snap.orphan_ocsp.iter() {
                tracing::info!(path = %der.display(), "removing OCSP response without its hash file");
                doomed.push(der.clone());
            }

            // Each removal stands on its own: one that fails is tried again
            // at the next run, and does not bring back the others.
            for path in &doomed {
                if let Err(e) = tx.remove(path) {
                    tracing::error!("garbage collection cannot remove {}: {e}", path.display());
                }
            }
            // After the removals: a crash in between leaves a record of a
            // key that is gone, which the next run forgets.
            for (dir, (_, forget)) in records.iter().filter(|(_, (_, f))| !f.is_empty()) {
                if let Err(e) = pending_keys::remove(dir, forget) {
                    tracing::error!("cannot update the CSR key record of {}: {e}", dir.display());
                }
            }
            Ok(())
        });
        outcome.changes
    }
}

/// The public keys of every certificate in the leaf certificate
/// directories, read straight from the files, whatever their name; an
/// error names a file whose certificates cannot all be read, because the
/// key its certificate holds is then unknown.
fn certified_keys(config: &crate::Config) -> Result<HashSet<Fingerprint>, String> {
    const MAX_FILE_BYTES: u64 = 1 << 20;
    let mut keys = HashSet::new();
    let dirs = [
        &config.csms_leaf_cert_directory,
        &config.secc_leaf_cert_directory,
    ];
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if store::is_key_name(entry.file_name().as_os_str()) || name.starts_with('.') {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_FILE_BYTES {
                return Err(format!("{} is too large to read", path.display()));
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let certs = if x509::pem_block_count(&bytes) > 0 {
                x509::parse_pem_certificates(&bytes)
                    .map(|(certs, _)| certs)
                    .map_err(|e| format!("{}: {e}", path.display()))?
            } else if [".der", ".crt", ".cer"]
                .iter()
                .any(|ext| name.ends_with(ext))
            {
                vec![openssl::x509::X509::from_der(&bytes)
                    .map_err(|e| format!("{}: {}", path.display(), x509::first_error(&e)))?]
            } else {
                continue;
            };
            keys.extend(
                certs
                    .iter()
                    .filter_map(|c| x509::certificate_key_fingerprint(c)),
            );
        }
    }
    Ok(keys)
}

/// A certificate with its issuer's key bits.
type Linked = (Arc<CertFacts>, Vec<u8>);

/// Every certificate that stays in the store with its issuer's key bits,
/// and the serials of those whose issuer is unknown.
fn present_certificates(
    snap: &Snapshot,
    removed_leaves: &HashSet<crate::x509::Fingerprint>,
) -> (Vec<Linked>, HashSet<String>) {
    let mut linked: Vec<Linked> = Vec::new();
    let mut unlinked: HashSet<String> = HashSet::new();
    for bundle in &snap.bundles {
        for node in &bundle.nodes {
            match &node.issuer_key_bits {
                Some(bits) => linked.push((node.cert.clone(), bits.clone())),
                None => {
                    unlinked.insert(node.cert.serial.clone());
                }
            }
        }
    }
    for leaf in snap.leaves.iter().flat_map(|d| &d.leaves) {
        if removed_leaves.contains(&leaf.cert.fingerprint) {
            continue;
        }
        let with_keys = leaf.path_with_issuer_keys();
        for cert in leaf.path().filter(|c| {
            !with_keys
                .iter()
                .any(|(k, _)| k.fingerprint == c.fingerprint)
        }) {
            unlinked.insert(cert.serial.clone());
        }
        for (cert, bits) in with_keys {
            linked.push((cert.clone(), bits.to_vec()));
        }
    }
    (linked, unlinked)
}
