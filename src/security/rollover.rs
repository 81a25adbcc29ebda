//! Certificate rollover (contract §11.2): `ConfirmCertificateInUse`, which
//! lets the certificates a connection no longer needs go, and the CSMS root
//! rotation of OCPP's `AdditionalRootCertificateCheck` (M05.FR.09–16).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{EvseSecurity, Outcome};
use crate::index::{Bundle, Leaf, Node, Snapshot};
use crate::store::rotation::{self, IssuerKeys, Rotation};
use crate::store::{BundleMode, Transaction};
use crate::types::{
    CaCertificateType, ConfirmCertificateResult, HashData, InstallCertificateResult,
    LeafCertificateType, StoreOperation,
};
use crate::x509::{CertFacts, Fingerprint};

impl EvseSecurity {
    /// `ConfirmCertificateInUse`: the OCPP client's connection now uses the
    /// certificate `query` names.
    /// - A CSMS client certificate: every other CSMS client certificate
    ///   goes, with its key and OCSP files (A02.FR.10 errata, A03 alike).
    ///   One out of date or without its key cannot be in use: `Failed`.
    /// - The CSMS root installed last, while the check is on: the fallback
    ///   goes (M05.FR.13). Confirming the fallback changes nothing: it is
    ///   what a connection falls back to (M05.FR.14).
    /// - Anything else installed: nothing changes.
    ///
    /// A removal that fails undoes the others: `Failed`, nothing removed.
    pub fn confirm_certificate_in_use(
        &self,
        query: &HashData,
    ) -> Outcome<ConfirmCertificateResult> {
        use ConfirmCertificateResult as R;
        let rotation = self.each_own_root(CaCertificateType::CSMS);
        let now = self.now();
        self.write(StoreOperation::Deleted, |snap, tx| {
            if let Some(csms) = snap.leaf_domain(LeafCertificateType::CSMS) {
                if let Some(used) = csms.leaves.iter().find(|l| l.matches(query)) {
                    // A connection cannot use a leaf that is out of date or
                    // has no key: the others are what it still has.
                    if !used.cert.is_valid_at(now) || used.key.is_none() {
                        tracing::warn!(subject = %used.cert.common_name(), serial = %used.cert.serial, "CSMS client certificate confirmed in use is not usable (out of date, or no key); nothing is removed");
                        return Err(R::Failed);
                    }
                    let others: Vec<&Leaf> = csms
                        .leaves
                        .iter()
                        .filter(|l| l.cert.fingerprint != used.cert.fingerprint)
                        .collect();
                    tracing::info!(subject = %used.cert.common_name(), serial = %used.cert.serial, others = others.len(), "CSMS client certificate confirmed in use");
                    return match super::leaf::remove_leaves(snap, tx, &others) {
                        Ok(()) => Ok(R::Accepted),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot remove the CSMS client certificates not in use; nothing is removed");
                            Err(R::Failed)
                        }
                    };
                }
            }
            let roots = snap.bundle(CaCertificateType::CSMS);
            if rotation {
                if let Some(used) = roots.nodes.iter().find(|n| n.matches(query)) {
                    let last = roots.installed_last().map(|n| n.cert.fingerprint);
                    if last != Some(used.cert.fingerprint) {
                        tracing::info!(subject = %used.cert.common_name(), "the CSMS fallback root is confirmed in use; both roots stay");
                        return Ok(R::Accepted);
                    }
                    let fingerprint = used.cert.fingerprint;
                    if roots.nodes.iter().all(|n| n.cert.fingerprint == fingerprint) {
                        return Ok(R::Accepted);
                    }
                    tracing::info!(subject = %used.cert.common_name(), "the CSMS root is confirmed in use; its fallback goes");
                    let record = rotation::path(&self.config().certs_directory);
                    return match rotate(tx, &record, roots, &[fingerprint], fingerprint, None) {
                        Ok(()) => Ok(R::Accepted),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot remove the CSMS fallback root; nothing is removed");
                            Err(R::Failed)
                        }
                    };
                }
            }
            let installed = snap.bundles.iter().any(|b| b.nodes.iter().any(|n| n.matches(query)))
                || snap.leaves.iter().flat_map(|d| &d.leaves).any(|l| l.matches(query));
            if installed {
                Ok(R::Accepted)
            } else {
                Err(R::NotFound)
            }
        })
    }
}

/// With the check on, the CSMS root that a new root must be signed by: the
/// one installed last, confirmed or not. `Ok(None)` when there is none
/// (the first root is taken as any CA certificate is);
/// `InvalidSignature` when the new root's signature does not verify with
/// its key.
pub(super) fn root_in_use<'a>(
    roots: &'a Bundle,
    new_root: &CertFacts,
) -> Result<Option<&'a Node>, InstallCertificateResult> {
    let Some(in_use) = roots.installed_last() else {
        return Ok(None);
    };
    let signed_by_it = match (new_root.x509(), in_use.cert.x509()) {
        (Some(new), Some(old)) => old
            .public_key()
            .is_ok_and(|k| new.verify(&k).unwrap_or(false)),
        _ => false,
    };
    if signed_by_it {
        Ok(Some(in_use))
    } else {
        tracing::warn!(subject = %new_root.common_name(), in_use = %in_use.cert.common_name(), "CSMS root refused: not signed by the root in use (AdditionalRootCertificateCheck)");
        Err(InstallCertificateResult::InvalidSignature)
    }
}

/// After a new root signed by `in_use` was written: the older fallbacks go,
/// so that the bundle holds the new root and `in_use` only; the new root
/// is recorded as in use, with its issuer's key, for its hash data once
/// `in_use` goes too.
pub(super) fn finish_rotation(
    snap: &Snapshot,
    tx: &mut Transaction<'_>,
    record: &Path,
    in_use: &Node,
    new_root: &CertFacts,
) -> std::io::Result<()> {
    let roots = snap.bundle(CaCertificateType::CSMS);
    rotate(
        tx,
        record,
        roots,
        &[in_use.cert.fingerprint],
        new_root.fingerprint,
        Some((new_root.fingerprint, in_use.cert.key_bits.clone())),
    )
}

/// Writes the rotation record (`in_use`, and the issuer keys of the roots
/// that stay, plus `new_key`), then removes every certificate of `roots`
/// but `keep`, and them alone (not what they issued). The record goes
/// first: a root that stays may need its issuer key once the rest is gone.
fn rotate(
    tx: &mut Transaction<'_>,
    record: &Path,
    roots: &Bundle,
    keep: &[Fingerprint],
    in_use: Fingerprint,
    new_key: Option<(Fingerprint, Vec<u8>)>,
) -> std::io::Result<()> {
    let mut issuer_keys = recorded_issuer_keys(roots, keep);
    issuer_keys.extend(new_key);
    let record_bytes = rotation::encode(&Rotation {
        in_use: Some(in_use),
        issuer_keys,
    });
    tx.put(record, |_| record_bytes)?;
    let mut by_file: BTreeMap<&PathBuf, HashSet<Fingerprint>> = BTreeMap::new();
    for node in roots
        .nodes
        .iter()
        .filter(|n| !keep.contains(&n.cert.fingerprint))
    {
        tracing::info!(subject = %node.cert.common_name(), serial = %node.cert.serial, "removing CSMS root");
        for file in &node.files {
            by_file
                .entry(file)
                .or_default()
                .insert(node.cert.fingerprint);
        }
    }
    for (file, doomed) in &by_file {
        tx.remove_certificates(file, doomed, roots.mode == BundleMode::File)?;
    }
    Ok(())
}

/// The issuer keys of the certificates `keep` names that are not
/// self-signed, as the bundle knows them now.
fn recorded_issuer_keys(roots: &Bundle, keep: &[Fingerprint]) -> IssuerKeys {
    roots
        .nodes
        .iter()
        .filter(|n| keep.contains(&n.cert.fingerprint) && !n.cert.self_signed)
        .filter_map(|n| Some((n.cert.fingerprint, n.issuer_key_bits.clone()?)))
        .collect()
}
