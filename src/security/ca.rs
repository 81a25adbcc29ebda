//! CA bundles: install, delete, the listings, and the files to hand to a
//! TLS stack.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{EvseSecurity, Outcome};
use crate::index::{Leaf, Snapshot};
use crate::store::{self, BundleMode};
use crate::types::{
    CaCertificateType, CertificateType, DeleteCertificateResult, GetInstalledCertificatesStatus,
    HashAlgorithm, HashData, HashDataChain, InstallCertificateResult, LeafCertificateType,
    StoreOperation,
};
use crate::x509::{self, CertFacts, Fingerprint};

impl EvseSecurity {
    /// Contract 5.1.
    pub fn install_ca_certificate(
        &self,
        pem: &str,
        ca: CaCertificateType,
    ) -> Outcome<InstallCertificateResult> {
        use InstallCertificateResult as R;
        if !self.fits("CA certificate", pem) {
            return Outcome::unchanged(R::InvalidFormat);
        }
        let cert = match x509::parse_pem_certificates(pem.as_bytes()) {
            Ok((mut certs, 0)) if certs.len() == 1 => certs.remove(0),
            _ => return Outcome::unchanged(R::InvalidFormat),
        };
        let cert = match CertFacts::new(cert) {
            Ok(c) => c,
            Err(_) => return Outcome::unchanged(R::InvalidFormat),
        };
        let refused = |result: R| {
            tracing::warn!(ca = %ca, subject = %cert.common_name(), %result, "CA certificate refused");
            Outcome::unchanged(result)
        };
        if !cert.is_ca {
            return refused(R::InvalidCertificateChain);
        }
        if ca == CaCertificateType::V2G {
            let Some(x509) = cert.x509() else {
                return Outcome::unchanged(R::InvalidFormat);
            };
            if let Err(reason) = crate::iso15118::check_v2g_ca(x509, cert.self_signed) {
                tracing::warn!(subject = %cert.common_name(), %reason, "V2G CA certificate refused: not the ISO 15118 profile");
                return refused(R::InvalidCertificateChain);
            }
        }
        if !cert.is_valid_at(self.now()) {
            return refused(R::Expired);
        }
        let cert = Arc::new(cert);
        let limits = &self.config().limits;
        let rotation = self.each_own_root(ca);
        self.write(StoreOperation::Installed, |snap, tx| {
            let bundle = snap.bundle(ca);
            if bundle.nodes.iter().any(|n| n.cert.fingerprint == cert.fingerprint) {
                return Ok(R::Accepted);
            }
            let in_use = if rotation { super::rollover::root_in_use(bundle, &cert)? } else { None };
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
                return Err(result);
            }
            let Some(pem) = cert.pem() else {
                return Err(R::InvalidFormat);
            };
            if !snap.usage.fits(1, pem.len() as u64, limits) {
                tracing::warn!(ca = %ca, "store full; install refused");
                return Err(R::CertificateStoreMaxLengthExceeded);
            }
            let path = match bundle.mode {
                BundleMode::File => bundle.path.clone(),
                BundleMode::Directory => {
                    bundle.path.join(format!("{}_ROOT_{}.pem", ca, store::random_suffix()))
                }
            };
            let written = match bundle.mode {
                BundleMode::File => tx.append_certificate(&path, &pem),
                BundleMode::Directory => tx.write(&path, &pem, store::CERT_MODE),
            };
            let written = written.and_then(|()| match in_use {
                Some(in_use) => {
                    let record = store::rotation::path(&self.config().certs_directory);
                    super::rollover::finish_rotation(snap, tx, &record, in_use, &cert)
                }
                None => Ok(()),
            });
            match written {
                Ok(()) => {
                    tx.parsed([cert.clone()]);
                    tracing::info!(ca = %ca, subject = %cert.common_name(), path = %path.display(), "CA certificate installed");
                    Ok(R::Accepted)
                }
                Err(e) => {
                    tracing::error!(ca = %ca, error = %e, "CA certificate install failed");
                    Err(R::WriteError)
                }
            }
        })
    }

    /// Contract 5.2.
    pub fn delete_certificate(&self, query: &HashData) -> Outcome<DeleteCertificateResult> {
        use DeleteCertificateResult as R;
        self.write(StoreOperation::Deleted, |snap, tx| {
            let no_leaves = Vec::new();
            let secc_doomed: Vec<&Leaf> = snap
                .leaf_domain(LeafCertificateType::V2G)
                .map_or(&no_leaves, |d| &d.leaves)
                .iter()
                .filter(|l| l.matches(query))
                .collect();
            // The station's own OCPP client certificate is never deleted
            // (OCPP M04.FR.06), also when it is an SECC leaf too, and then
            // nothing else is touched either.
            let csms = snap.leaf_domain(LeafCertificateType::CSMS).map_or(&no_leaves, |d| &d.leaves);
            if csms.iter().any(|c| c.matches(query) || secc_doomed.iter().any(|l| l.cert.fingerprint == c.cert.fingerprint)) {
                tracing::warn!("delete refused: the hash names the CSMS client certificate");
                return Err(R::Failed);
            }

            let mut done_paths: HashSet<&Path> = HashSet::new();
            for bundle in &snap.bundles {
                if !done_paths.insert(&bundle.path) {
                    continue;
                }
                let doomed = bundle.doomed_by(query, self.each_own_root(bundle.ca));
                for node in &doomed {
                    let c = &bundle.nodes[*node].cert;
                    tracing::info!(ca = %bundle.ca, subject = %c.common_name(), serial = %c.serial, "deleting CA certificate");
                }
                let fingerprints: HashSet<Fingerprint> =
                    doomed.iter().map(|i| bundle.nodes[*i].cert.fingerprint).collect();
                let files: BTreeSet<&PathBuf> = doomed.iter().flat_map(|i| &bundle.nodes[*i].files).collect();
                let keep_empty_file = bundle.mode == BundleMode::File;
                for file in files {
                    if let Err(e) = tx.remove_certificates(file, &fingerprints, keep_empty_file) {
                        tracing::error!(path = %file.display(), error = %e, "delete failed; nothing is deleted");
                        return Err(R::Failed);
                    }
                }
            }

            if let Err(e) = super::leaf::remove_leaves(snap, tx, &secc_doomed) {
                tracing::error!(error = %e, "delete failed; nothing is deleted");
                return Err(R::Failed);
            }
            if tx.is_empty() {
                Err(R::NotFound)
            } else {
                Ok(R::Accepted)
            }
        })
    }

    /// Contract 5.5.
    pub fn get_installed_certificates(
        &self,
        types: &[CertificateType],
    ) -> (GetInstalledCertificatesStatus, Vec<HashDataChain>) {
        let chains: Vec<HashDataChain> =
            installed_chains(&self.snapshot(), types, &|ca| self.each_own_root(ca))
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
        installed_chains(&self.snapshot(), types, &|ca| self.each_own_root(ca))
            .into_iter()
            .flat_map(|(_, chain)| chain)
            .collect()
    }

    /// Whether every certificate of `ca`'s bundle is a root of its own:
    /// the CSMS roots under the rotation, where a new root is issued by
    /// the one it replaces (§11.2).
    pub(super) fn each_own_root(&self, ca: CaCertificateType) -> bool {
        ca == CaCertificateType::CSMS && self.config().ocpp.additional_root_certificate_check
    }

    /// Contract 5.9.
    pub fn is_ca_certificate_installed(&self, ca: CaCertificateType) -> bool {
        self.snapshot()
            .bundle(ca)
            .has_valid_root(self.now(), self.each_own_root(ca))
    }

    /// Contract 5.13: the file to hand to a TLS stack as CAfile.
    pub fn get_verify_file(&self, ca: CaCertificateType) -> String {
        let snap = self.snapshot();
        let bundle = snap.bundle(ca);
        match bundle.mode {
            BundleMode::File => bundle.path.display().to_string(),
            BundleMode::Directory => {
                let now = self.now();
                bundle
                    .anchors(self.each_own_root(ca))
                    .into_iter()
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
/// for a root type each root, then its Sub-CAs in the bundle depth-first;
/// for `V2GCertificateChain` each SECC leaf that has its key, then its
/// Sub-CAs leaf side first, without the root. In a bundle where
/// `each_own_root` holds (the CSMS roots under the rotation, §11.2), every
/// certificate is a chain of its own: the new root is issued by the one it
/// replaces.
fn installed_chains(
    snap: &Snapshot,
    types: &[CertificateType],
    each_own_root: &dyn Fn(CaCertificateType) -> bool,
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
                let own_chains = each_own_root(ca);
                for root in bundle.anchors(own_chains) {
                    let below = if own_chains {
                        Vec::new()
                    } else {
                        bundle.descendants(root)
                    };
                    let chain: Vec<ListedCertificate> = std::iter::once(root)
                        .chain(below)
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
                    let chain = leaf
                        .path_with_issuer_keys()
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
