//! OCSP: request data for the CSMS, and the cache of its responses.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Error, EvseSecurity, Outcome};
use crate::index::{hash_matches, issuer_path, Snapshot};
use crate::store::{self, Layout, Transaction};
use crate::types::{
    CaCertificateType, HashAlgorithm, HashData, LeafCertificateType, StoreOperation,
    UpdateOcspCacheResult,
};
use crate::verify::read_chain;
use crate::x509::{self, CertFacts};

/// One entry of `GetV2gOcspRequestData` / `GetMoOcspRequestData`: hash
/// data and the responder URL.
pub type OcspRequest = (HashData, String);

/// Request entries for a path (leaf first), root excluded, deduplicated
/// against `seen`. Certificates without an OCSP URL are skipped; with
/// several URLs the first is used.
fn request_entries<'a>(
    path: impl Iterator<Item = &'a Arc<CertFacts>>,
    seen: &mut HashSet<HashData>,
    out: &mut Vec<OcspRequest>,
) {
    let path: Vec<&Arc<CertFacts>> = path.collect();
    for pair in path.windows(2) {
        let (cert, issuer) = (pair[0], pair[1]);
        if cert.self_signed {
            break;
        }
        let Some(url) = cert.x509().and_then(|c| x509::ocsp_url(c)) else {
            continue;
        };
        let hash = cert.hash_data(HashAlgorithm::SHA256, &issuer.key_bits);
        if seen.insert(hash.clone()) {
            out.push((hash, url));
        }
    }
}

impl EvseSecurity {
    /// Contract 5.6: every SECC leaf with its key that is valid or not yet
    /// valid, and the Sub-CAs of its chain.
    pub fn get_v2g_ocsp_request_data(&self) -> Vec<OcspRequest> {
        let snap = self.snapshot();
        let now = self.now();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if let Some(secc) = snap.leaf_domain(LeafCertificateType::V2G) {
            for leaf in secc
                .leaves
                .iter()
                .filter(|l| l.key.is_some() && l.cert.not_after >= now)
            {
                request_entries(leaf.path(), &mut seen, &mut out);
            }
        }
        out
    }

    /// Contract 5.7: the contract chain (leaf first) against the MO and V2G
    /// bundles. A chain that does not parse gives no entries, as in EVerest.
    pub fn get_mo_ocsp_request_data(&self, chain_pem: &str) -> Result<Vec<OcspRequest>, Error> {
        if !self.fits("contract chain", chain_pem) {
            return Ok(Vec::new());
        }
        let Ok((chain, _)) = read_chain(chain_pem) else {
            tracing::info!("MO OCSP request data: the contract chain does not parse");
            return Ok(Vec::new());
        };
        let snap = self.snapshot();
        let mut chain = chain.into_iter().map(Arc::new);
        let Some(contract) = chain.next() else {
            return Ok(Vec::new());
        };
        let sent: Vec<Arc<CertFacts>> = chain.filter(|c| !c.self_signed).collect();
        let (mo, v2g) = (
            snap.bundle(CaCertificateType::MO),
            snap.bundle(CaCertificateType::V2G),
        );
        let issuers = issuer_path(&contract, |child| {
            sent.iter()
                .chain(mo.named(&child.issuer_der))
                .chain(v2g.named(&child.issuer_der))
                .find(|p| child.is_issued_by(p))
                .cloned()
        });
        let mut out = Vec::new();
        request_entries(
            std::iter::once(&contract).chain(issuers.iter()),
            &mut HashSet::new(),
            &mut out,
        );
        Ok(out)
    }

    /// Contract 5.8: stores a DER OCSP response (sent base64) for the
    /// certificate with this hash data, beside every file that holds it.
    pub fn update_ocsp_cache(
        &self,
        query: &HashData,
        response_b64: &str,
    ) -> Result<Outcome<UpdateOcspCacheResult>, Error> {
        use UpdateOcspCacheResult as R;
        if !self.fits("OCSP response", response_b64) {
            return Ok(Outcome::unchanged(R::InvalidFormat));
        }
        let Some(der) = x509::decode_base64(response_b64) else {
            return Ok(Outcome::unchanged(R::InvalidFormat));
        };
        let outcome = self.write(StoreOperation::Installed, |snap, tx| {
            let Some(subject) = ocsp_subject(snap, query) else {
                return Err(Ok(R::NotFound));
            };
            let (Some(cert), Some(issuer)) = (subject.cert.x509(), subject.issuer.x509()) else {
                return Err(Ok(R::InvalidFormat));
            };
            if let Err(e) = x509::check_ocsp_response(&der, cert, issuer) {
                tracing::warn!(subject = %subject.cert.common_name(), error = %e, "OCSP response refused");
                return Err(Ok(R::InvalidFormat));
            }
            let dirs: HashSet<PathBuf> = subject.files.iter().map(|f| Layout::ocsp_dir_for(f)).collect();
            for dir in dirs {
                if let Err(e) = store_response(snap, tx, &dir, &subject.cert, &subject.issuer.key_bits, &der) {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot store OCSP response");
                    let message = format!("cannot store the OCSP response in {}: {e}", dir.display());
                    return Err(Err(Error::Internal(message)));
                }
            }
            tracing::info!(subject = %subject.cert.common_name(), serial = %subject.cert.serial, "OCSP response cached");
            Ok(Ok(R::Accepted))
        });
        outcome.result.map(|result| Outcome {
            result,
            changes: outcome.changes,
        })
    }
}

/// Writes `der` as the response for `cert` in `dir`: over the `.der` of an
/// existing entry for the same certificate (others for it are removed), or
/// as a new `<suffix>_ocsp.der` with its `.hash`.
fn store_response(
    snap: &Snapshot,
    tx: &mut Transaction,
    dir: &Path,
    cert: &CertFacts,
    issuer_key_bits: &[u8],
    der: &[u8],
) -> std::io::Result<()> {
    let mut existing = snap
        .cached_responses(cert, issuer_key_bits)
        .into_iter()
        .filter(|e| e.hash_path.parent() == Some(dir));
    let (hash_path, der_path) = match existing.next() {
        Some(e) => (e.hash_path.clone(), e.der_path.clone()),
        None => {
            let stem = format!("{}_ocsp", store::random_suffix());
            (
                dir.join(format!("{stem}.hash")),
                dir.join(format!("{stem}.der")),
            )
        }
    };
    // The .der first: a crash in between leaves an orphan .der that garbage
    // collection removes, never a .hash pointing at a missing response.
    tx.put(&der_path, |_| der.to_vec())?;
    let hash = cert.hash_data(HashAlgorithm::SHA256, issuer_key_bits);
    tx.put(&hash_path, |_| store::ocsp_hash_text(&hash).into_bytes())?;
    for stale in existing {
        tx.remove(&stale.der_path)?;
        tx.remove(&stale.hash_path)?;
    }
    Ok(())
}

/// A certificate that may have a cached OCSP response, with its issuer and
/// the files that hold it.
struct OcspSubject {
    cert: Arc<CertFacts>,
    issuer: Arc<CertFacts>,
    files: Vec<PathBuf>,
}

/// The certificate that `query` names among those that may have a cached
/// OCSP response: SECC leaves and the CAs of their chains, and the V2G
/// bundle.
fn ocsp_subject(snap: &Snapshot, query: &HashData) -> Option<OcspSubject> {
    let secc = snap.leaf_domain(LeafCertificateType::V2G);
    let v2g = snap.bundle(CaCertificateType::V2G);
    let from_leaves = secc.into_iter().flat_map(|d| &d.leaves).find_map(|leaf| {
        let path: Vec<&Arc<CertFacts>> = leaf.path().collect();
        leaf.path_with_issuer_keys()
            .into_iter()
            .enumerate()
            .find(|(_, (cert, bits))| hash_matches(cert, None, Some(bits), query))
            .map(|(i, (cert, _))| {
                (
                    cert.clone(),
                    path.get(i + 1).copied().unwrap_or(cert).clone(),
                )
            })
    });
    let (cert, issuer) = from_leaves.or_else(|| {
        v2g.nodes.iter().find_map(|node| {
            let issuer = match node.parent {
                Some(p) => &v2g.nodes[p].cert,
                None if node.cert.self_signed => &node.cert,
                None => return None,
            };
            hash_matches(
                &node.cert,
                node.hash.as_ref(),
                Some(&issuer.key_bits),
                query,
            )
            .then(|| (node.cert.clone(), issuer.clone()))
        })
    })?;
    let mut files: Vec<PathBuf> = secc
        .into_iter()
        .flat_map(|d| &d.files)
        .filter(|f| f.certs.iter().any(|c| c.fingerprint == cert.fingerprint))
        .map(|f| f.path.clone())
        .collect();
    for node in v2g
        .nodes
        .iter()
        .filter(|n| n.cert.fingerprint == cert.fingerprint)
    {
        files.extend(node.files.iter().cloned());
    }
    Some(OcspSubject {
        cert,
        issuer,
        files,
    })
}
