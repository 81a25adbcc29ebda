//! Garbage collection: expired leaves beyond the newest few, CSR keys that
//! no certificate took up, and OCSP responses of certificates that are gone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::leaf::{path_with_issuer_keys, sort_newest_first};
use super::{hash_matches, EvseSecurity, StoreChange};
use crate::index::{Leaf, Snapshot};
use crate::store;
use crate::types::StoreOperation;
use crate::x509::{self, CertFacts};

impl EvseSecurity {
    /// Contract 5.17, also run on the `[gc] interval_seconds` timer. Never
    /// removes a currently valid leaf, the newest leaves of a domain, a CA
    /// certificate, a key in use or a response of a present certificate.
    pub fn garbage_collect(&self) -> Vec<StoreChange> {
        let gc = self.config().gc.clone();
        self.write(|snap| {
            let now = x509::now();
            let mut doomed: Vec<PathBuf> = Vec::new();
            let mut removed_leaves: HashSet<crate::x509::Fingerprint> = HashSet::new();

            for domain in &snap.leaves {
                let mut leaves: Vec<&Leaf> = domain.leaves.iter().collect();
                sort_newest_first(&mut leaves);
                for leaf in leaves.iter().skip(gc.keep_leaves.max(1)).filter(|l| l.cert.not_after < now) {
                    tracing::info!(leaf = %domain.leaf, subject = %leaf.cert.common_name(), serial = %leaf.cert.serial, "removing expired leaf");
                    doomed.extend(leaf.files.iter().map(|f| f.path.clone()));
                    removed_leaves.insert(leaf.cert.fingerprint);
                }
            }

            // Keys: a key is in use while a remaining leaf pairs with it.
            let kept_leaves: Vec<&Leaf> = snap
                .leaves
                .iter()
                .flat_map(|d| &d.leaves)
                .filter(|l| !removed_leaves.contains(&l.cert.fingerprint))
                .collect();
            let keys_in_use: HashSet<&Path> = kept_leaves.iter().filter_map(|l| l.key.as_deref()).collect();
            let max_age_ns = i128::from(gc.csr_key_max_age_seconds) * 1_000_000_000;
            let now_ns = i128::from(now) * 1_000_000_000;
            for key in &snap.keys {
                // A key that cannot be opened (wrong password, TPM key
                // without its provider) is never judged unused.
                if key.key_fingerprint.is_none() || keys_in_use.contains(key.path.as_path()) {
                    continue;
                }
                let was_paired = snap.leaves.iter().flat_map(|d| &d.leaves).any(|l| l.key.as_ref() == Some(&key.path));
                if was_paired || now_ns - key.stamp.mtime_ns > max_age_ns {
                    tracing::info!(key = %key.path.display(), "removing unused private key");
                    doomed.push(key.path.clone());
                }
            }

            // OCSP responses of certificates no longer present, and .der
            // files left without their .hash.
            let (present, unlinked_serials) = present_certificates(snap, &removed_leaves);
            for entry in &snap.ocsp {
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
            for der in &snap.orphan_ocsp {
                tracing::info!(path = %der.display(), "removing OCSP response without its hash file");
                doomed.push(der.clone());
            }

            let mut changes: Vec<StoreChange> = Vec::new();
            for path in &doomed {
                if let Err(e) = store::remove_durably(path) {
                    tracing::error!(path = %path.display(), error = %e, "garbage collection cannot remove file");
                    continue;
                }
                let change = self.change_for_file(path, StoreOperation::Deleted);
                if !changes.contains(&change) {
                    changes.push(change);
                }
            }
            (changes, doomed)
        })
    }
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
        let with_keys = path_with_issuer_keys(leaf);
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
