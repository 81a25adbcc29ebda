//! The station's own certificates: CSR, leaf install, leaf selection.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Error, EvseSecurity, Outcome};
use crate::index::{sort_newest_first, Leaf, LeafDomain, Snapshot};
use crate::iso15118::Edition;
use crate::renewal::LeafExpiry;
use crate::store::{self, pending_keys, KeyIdentity};
use crate::tpm::{self, TpmError};
use crate::types::{
    CertificateValidationResult as V, GetCertificateInfoStatus, GetCertificateSignRequestStatus,
    HashAlgorithm, HashData, InstallCertificateResult, KeyAlgorithm, LeafCertificateType,
    StoreOperation,
};
use crate::verify::read_chain;
use crate::x509::{self, CertFacts, CsrKey, CsrSubject};

/// Longest organisation and common name accepted in a CSR (X.520 upper
/// bound, ub-common-name and ub-organization-name).
pub const MAX_NAME_LEN: usize = 64;

/// What `OpenLeafCredentials` hands over: the key and chain files, open
/// for reading at offset 0, and the leaf's info.
#[derive(Debug)]
pub struct LeafCredentials {
    /// The private key file.
    pub key: std::fs::File,
    /// The chain file, else the leaf-only file.
    pub chain: std::fs::File,
    /// The leaf's CertificateInfo.
    pub info: CertificateInfo,
}

/// `CertificateInfo` of contract 5.11. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The private key file.
    pub key: PathBuf,
    /// The chain file, when there is one.
    pub certificate: Option<PathBuf>,
    /// The leaf-only file, when there is one.
    pub certificate_single: Option<PathBuf>,
    /// PEM of the root (only from `GetAllValidCertificatesInfo`).
    pub certificate_root: Option<String>,
    /// Certificates in the chain file, or 1.
    pub certificate_count: i32,
    /// The key password, when one is configured.
    pub password: Option<String>,
    /// With `include_ocsp`: each certificate of the chain file with the path
    /// of its cached DER OCSP response, "" when none.
    pub ocsp: Option<Vec<(HashData, String)>>,
    /// The leaf's key algorithm (§11.1).
    pub key_algorithm: KeyAlgorithm,
    /// The leaf's subject commonName, "" when it has none (§11.1).
    pub common_name: String,
}

fn check_name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.chars().count() > MAX_NAME_LEN {
        return Err(Error::InvalidArgs(format!(
            "{field} must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgs(format!(
            "{field} must not hold control characters"
        )));
    }
    Ok(())
}

impl EvseSecurity {
    /// Contract 5.10.
    pub fn generate_certificate_signing_request(
        &self,
        leaf: LeafCertificateType,
        country: &str,
        organization: &str,
        common_name: &str,
        use_tpm: bool,
    ) -> Result<Outcome<(GetCertificateSignRequestStatus, String)>, Error> {
        use GetCertificateSignRequestStatus as S;
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Error::InvalidArgs(
                "country must be two letters (ISO 3166-1 alpha-2)".into(),
            ));
        }
        check_name("organization", organization)?;
        check_name("common name", common_name)?;
        let Some((_, key_dir)) = self.config().leaf_dirs(leaf) else {
            return Ok(Outcome::unchanged((S::InvalidRequestedType, String::new())));
        };
        let csr_key = match leaf {
            LeafCertificateType::V2G20 => self.config().iso15118.v2g20_key.csr_key(),
            _ => CsrKey::P256,
        };
        let subject = CsrSubject {
            country: country.to_ascii_uppercase(),
            organization: organization.to_owned(),
            common_name: common_name.to_owned(),
        };
        // The key's identity goes to the index with the key, which then
        // need not open it again.
        let (key_pem, csr, extension, key_fingerprint) = if use_tpm {
            match tpm::generate_csr(&self.config().tpm, &subject, csr_key) {
                Ok((key_pem, csr)) => {
                    let fingerprint = openssl::x509::X509Req::from_pem(csr.as_bytes())
                        .ok()
                        .and_then(|req| req.public_key().ok())
                        .and_then(|key| x509::public_key_fingerprint(&key));
                    (key_pem, csr, "tkey", fingerprint)
                }
                Err(e) => {
                    tracing::error!(leaf = %leaf, error = %e, "CSR with a TPM key failed");
                    let status = match e {
                        TpmError::Signing(_) => S::GenerationError,
                        _ => S::KeyGenError,
                    };
                    return Ok(Outcome::unchanged((status, String::new())));
                }
            }
        } else {
            let (key, csr) = match x509::generate_csr(&subject, csr_key) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(leaf = %leaf, error = %x509::first_error(&e), "CSR generation failed");
                    return Ok(Outcome::unchanged((S::GenerationError, String::new())));
                }
            };
            let key_pem = match &self.config().private_key_password {
                Some(password) => key.private_key_to_pem_pkcs8_passphrase(
                    openssl::symm::Cipher::aes_256_cbc(),
                    password.as_bytes(),
                ),
                None => key.private_key_to_pem_pkcs8(),
            };
            let Ok(key_pem) = key_pem else {
                return Ok(Outcome::unchanged((S::KeyGenError, String::new())));
            };
            (key_pem, csr, "key", x509::public_key_fingerprint(&key))
        };
        let path = key_dir.join(format!(
            "{}{}.{extension}",
            store::leaf_prefix(leaf),
            store::random_suffix()
        ));
        let identity = key_fingerprint.map(|key_fingerprint| KeyIdentity {
            key_fingerprint,
            tpm: use_tpm,
        });
        let failed = || (S::GenerationError, String::new());
        Ok(self.write(StoreOperation::Installed, |snap, tx| {
            // A key takes room like any other file of the store.
            if !snap.usage.fits(1, key_pem.len() as u64, &self.config().limits) {
                tracing::warn!("store full; CSR refused leaf={leaf}: no room for its key");
                return Err(failed());
            }
            // Recorded first (under the writer lock, like every change of
            // the record): a crash before the key is written leaves only a
            // record of a missing key.
            if let Err(e) = pending_keys::add(&path) {
                tracing::error!("cannot write CSR key leaf={leaf} key={}: the CSR key record cannot be written: {e}", path.display());
                return Err(failed());
            }
            match tx.write_key(&path, &key_pem, self.key_gid(), identity) {
                Ok(()) => {
                    tracing::info!(leaf = %leaf, cn = %common_name, key = %path.display(), "CSR generated");
                    Ok((S::Accepted, csr))
                }
                Err(e) => {
                    tracing::error!(leaf = %leaf, key = %path.display(), error = %e, "cannot write CSR key");
                    Err(failed())
                }
            }
        }))
    }

    /// Contract 5.3.
    pub fn update_leaf_certificate(
        &self,
        chain_pem: &str,
        leaf: LeafCertificateType,
    ) -> Result<Outcome<InstallCertificateResult>, Error> {
        use InstallCertificateResult as R;
        let Some((cert_dir, _)) = self.config().leaf_dirs(leaf) else {
            // As EVerest answers: only CSMS and V2G leaves are kept.
            tracing::warn!(leaf = %leaf, "leaf install refused: only CSMS and V2G leaves are stored");
            return Ok(Outcome::unchanged(R::WriteError));
        };
        let cert_dir = cert_dir.to_owned();
        if chain_pem.len() > self.config().limits.max_chain_bytes {
            tracing::warn!(leaf = %leaf, size = chain_pem.len(), "leaf chain refused: larger than limits.max_chain_bytes");
            return Ok(Outcome::unchanged(R::InvalidFormat));
        }
        let Ok((chain, 0)) = read_chain(chain_pem) else {
            return Ok(Outcome::unchanged(R::InvalidFormat));
        };
        let new_leaf = &chain[0];
        if new_leaf.is_ca {
            return Ok(Outcome::unchanged(R::InvalidCertificateChain));
        }
        if new_leaf.common_name().is_empty() {
            return Ok(Outcome::unchanged(R::InvalidCommonName));
        }
        // A SECC leaf's key makes its type (§11.1).
        if !leaf.fits_key(new_leaf.key_algorithm) {
            tracing::warn!(leaf = %leaf, subject = %new_leaf.common_name(), key = %new_leaf.key_algorithm, "leaf refused: its key does not fit the type");
            return Ok(Outcome::unchanged(R::InvalidCertificateChain));
        }
        let edition = Edition::of_leaf(leaf);
        let Some(pems) = chain.iter().map(CertFacts::pem).collect::<Option<Vec<_>>>() else {
            return Ok(Outcome::unchanged(R::InvalidFormat));
        };
        let limits = &self.config().limits;
        let now = self.now();
        Ok(self.write(StoreOperation::Installed, |snap, tx| {
            // Verified against the snapshot the write goes into.
            let verified = Self::verify_parsed(snap, &self.statuses(), &chain, &[leaf], now, crate::verify::LeafTime::ValidNowOrLater);
            let verdict = verified.result;
            let refused = match (verdict, edition) {
                (V::Valid, Some(edition)) => {
                    match crate::iso15118::check_secc_path(&verified.path, edition, self.config().iso15118.require_dc) {
                        Ok(()) => None,
                        Err(reason) => {
                            tracing::warn!(leaf = %leaf, subject = %new_leaf.common_name(), %reason, "SECC leaf refused: not the ISO 15118 profile");
                            Some(R::InvalidCertificateChain)
                        }
                    }
                }
                (V::Valid, None) => None,
                (V::Expired, _) => Some(R::Expired),
                (V::InvalidSignature | V::InvalidLeafSignature, _) => Some(R::InvalidSignature),
                (V::InvalidChain | V::Revoked, _) => Some(R::InvalidCertificateChain),
                (V::IssuerNotFound, _) => Some(R::NoRootCertificateInstalled),
                (V::Unknown, _) => Some(R::InvalidFormat),
            };
            if let Some(result) = refused {
                tracing::warn!(leaf = %leaf, subject = %new_leaf.common_name(), %verdict, "leaf certificate refused");
                return Err(result);
            }
            let Some(domain) = snap.leaf_domain(leaf) else {
                return Err(R::WriteError);
            };
            let Some(key) = domain.keys.iter().find(|k| k.key_fingerprint.is_some() && k.key_fingerprint == new_leaf.key_fingerprint) else {
                return Err(R::PrivateKeyNotFound);
            };
            let fingerprints: Vec<_> = chain.iter().map(|c| c.fingerprint).collect();
            let has_single = file_with(domain, &fingerprints[..1]);
            let has_chain = chain.len() == 1 || file_with(domain, &fingerprints);
            if has_single && has_chain {
                return Ok(R::Accepted);
            }
            let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
            let suffix = store::random_suffix();
            let prefix = store::leaf_prefix(leaf);
            if !has_single {
                files.push((cert_dir.join(format!("{prefix}{suffix}.pem")), pems[0].clone()));
            }
            if !has_chain {
                files.push((cert_dir.join(format!("CPO_CERT_{prefix}CHAIN_{suffix}.pem")), pems.concat()));
            }
            let bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
            if !snap.usage.fits(files.len(), bytes, limits) {
                tracing::warn!(leaf = %leaf, "store full; leaf install refused");
                return Err(R::CertificateStoreMaxLengthExceeded);
            }
            // The leaf and its chain together, or neither, even across a
            // crash.
            if let Err(e) = tx.write_group(&files) {
                tracing::error!("leaf install failed leaf={leaf} dir={}: {e}", cert_dir.display());
                return Err(R::WriteError);
            }
            tx.parsed(chain.iter().cloned().map(Arc::new));
            tracing::info!(leaf = %leaf, subject = %new_leaf.common_name(), serial = %new_leaf.serial, "leaf certificate installed");
            // The key has its certificate: never again a CSR key to expire.
            if let (Some(dir), Some(name)) = (key.path.parent(), key.path.file_name().and_then(|n| n.to_str())) {
                if let Err(e) = pending_keys::remove(dir, &[name.to_owned()]) {
                    tracing::warn!("cannot update the CSR key record of {}: {e}", dir.display());
                }
            }
            Ok(R::Accepted)
        }))
    }

    /// Contract 5.11.
    pub fn get_leaf_certificate_info(
        &self,
        leaf: LeafCertificateType,
        include_ocsp: bool,
    ) -> (GetCertificateInfoStatus, Option<CertificateInfo>) {
        self.get_leaf_certificate_info_for_id(leaf, None, include_ocsp)
    }

    /// `GetLeafCertificateInfoForId` (§11.1): as 5.11, among the leaves
    /// whose subject commonName is exactly `secc_id` when it is given (one
    /// SECC leaf per EVSE).
    pub fn get_leaf_certificate_info_for_id(
        &self,
        leaf: LeafCertificateType,
        secc_id: Option<&str>,
        include_ocsp: bool,
    ) -> (GetCertificateInfoStatus, Option<CertificateInfo>) {
        let snap = self.snapshot();
        match usable_leaves(&snap, leaf, secc_id, self.now()) {
            Ok(leaves) => (
                GetCertificateInfoStatus::Accepted,
                leaves
                    .first()
                    .map(|l| self.info(&snap, l, include_ocsp, false)),
            ),
            Err(status) => (status, None),
        }
    }

    /// `OpenLeafCredentials` (contract §11.3): the leaf that 5.11 selects,
    /// or the newest usable one whose commonName is `secc_id` when it is
    /// not empty, with its key and chain file opened read-only (the chain
    /// file, else the single file), so that the TLS stack needs no access
    /// to the key directory. A file that cannot be opened is an error.
    pub fn open_leaf_credentials(
        &self,
        leaf: LeafCertificateType,
        secc_id: &str,
    ) -> Result<(GetCertificateInfoStatus, Option<LeafCredentials>), Error> {
        let snap = self.snapshot();
        let secc_id = Some(secc_id).filter(|id| !id.is_empty());
        let leaves = match usable_leaves(&snap, leaf, secc_id, self.now()) {
            Ok(leaves) => leaves,
            Err(status) => return Ok((status, None)),
        };
        let Some(chosen) = leaves.first() else {
            return Ok((GetCertificateInfoStatus::NotFound, None));
        };
        let info = self.info(&snap, chosen, false, false);
        let open = |path: &std::path::Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
                .open(path)
                .map_err(|e| Error::Internal(format!("cannot open {}: {e}", path.display())))
        };
        let Some(chain_path) = info
            .certificate
            .as_ref()
            .or(info.certificate_single.as_ref())
        else {
            return Err(Error::Internal("the selected leaf has no file".into()));
        };
        let key = open(&info.key)?;
        let chain = open(chain_path)?;
        Ok((
            GetCertificateInfoStatus::Accepted,
            Some(LeafCredentials { key, chain, info }),
        ))
    }

    /// Contract 5.12: the newest usable leaf per root, with the root's PEM.
    pub fn get_all_valid_certificates_info(
        &self,
        leaf: LeafCertificateType,
        include_ocsp: bool,
    ) -> (GetCertificateInfoStatus, Vec<CertificateInfo>) {
        let snap = self.snapshot();
        match usable_leaves(&snap, leaf, None, self.now()) {
            Ok(leaves) => {
                let mut seen_roots = Vec::new();
                let infos = leaves
                    .into_iter()
                    .filter(|l| {
                        let root = l.issuers.last().map(|r| r.fingerprint);
                        if seen_roots.contains(&root) {
                            false
                        } else {
                            seen_roots.push(root);
                            true
                        }
                    })
                    .map(|l| self.info(&snap, l, include_ocsp, true))
                    .collect();
                (GetCertificateInfoStatus::Accepted, infos)
            }
            Err(status) => (status, Vec::new()),
        }
    }

    /// Contract 5.15: whole days until the selected leaf expires, 0 when
    /// there is none.
    pub fn get_leaf_expiry_days_count(&self, leaf: LeafCertificateType) -> i32 {
        match self.leaf_expiry(leaf) {
            LeafExpiry::Valid { days, .. } => days,
            LeafExpiry::NoLeaf | LeafExpiry::NoValidLeaf => 0,
        }
    }

    /// The leaf 5.11 selects for `leaf` and its whole days left, or why
    /// there is none, for `LeafCertificateExpiring`.
    pub fn leaf_expiry(&self, leaf: LeafCertificateType) -> LeafExpiry {
        let snap = self.snapshot();
        let now = self.now();
        match usable_leaves(&snap, leaf, None, now) {
            Ok(leaves) => match leaves.first() {
                Some(l) => LeafExpiry::Valid {
                    leaf: l.cert.fingerprint,
                    days: ((l.cert.not_after - now).max(0) / 86_400).min(i64::from(i32::MAX))
                        as i32,
                },
                None => LeafExpiry::NoValidLeaf,
            },
            // A valid leaf whose key did not pair (a TPM key waiting for its
            // TPM) is no expiry: no renewal is started for it.
            Err(
                GetCertificateInfoStatus::NotFound
                | GetCertificateInfoStatus::Rejected
                | GetCertificateInfoStatus::PrivateKeyNotFound,
            ) => LeafExpiry::NoLeaf,
            Err(_) => LeafExpiry::NoValidLeaf,
        }
    }

    fn info(
        &self,
        snap: &Snapshot,
        leaf: &Leaf,
        include_ocsp: bool,
        with_root: bool,
    ) -> CertificateInfo {
        let file_of = |want_chain: bool| {
            leaf.files
                .iter()
                .find(|f| (f.certs.len() > 1) == want_chain)
        };
        let chain_file = file_of(true);
        let ocsp = include_ocsp.then(|| {
            let chain_certs: Vec<&Arc<CertFacts>> = match chain_file {
                Some(f) => f.certs.iter().collect(),
                None => vec![&leaf.cert],
            };
            let path = leaf.path_with_issuer_keys();
            chain_certs
                .iter()
                .filter_map(|cert| {
                    let (_, issuer_bits) = path
                        .iter()
                        .find(|(c, _)| c.fingerprint == cert.fingerprint)?;
                    let hash = cert.hash_data(HashAlgorithm::SHA256, issuer_bits);
                    let der = snap
                        .cached_responses(cert, issuer_bits)
                        .into_iter()
                        .find(|e| e.has_der)
                        .map(|e| e.der_path.display().to_string())
                        .unwrap_or_default();
                    Some((hash, der))
                })
                .collect()
        });
        CertificateInfo {
            key: leaf.key.clone().unwrap_or_default(),
            certificate: chain_file.map(|f| f.path.clone()),
            certificate_single: file_of(false).map(|f| f.path.clone()),
            certificate_root: with_root
                .then(|| leaf.issuers.last().filter(|r| r.self_signed))
                .flatten()
                .and_then(|r| r.pem())
                .map(|p| String::from_utf8_lossy(&p).into_owned()),
            certificate_count: chain_file.map_or(1, |f| f.certs.len() as i32),
            // A TPM key is never password-protected.
            password: self.config().private_key_password.clone().filter(|_| {
                !snap
                    .keys()
                    .any(|k| k.tpm && leaf.key.as_ref() == Some(&k.path))
            }),
            ocsp,
            key_algorithm: leaf.cert.key_algorithm,
            common_name: leaf.cert.common_name(),
        }
    }
}

/// True when a file of the domain holds exactly these certificates.
fn file_with(domain: &LeafDomain, fingerprints: &[crate::x509::Fingerprint]) -> bool {
    domain.files.iter().any(|f| {
        f.certs
            .iter()
            .map(|c| &c.fingerprint)
            .eq(fingerprints.iter())
    })
}

/// Currently valid leaves of a type that have their key, newest first by
/// notBefore (OCPP A02.FR.09 and A02.FR.15), or the status that says why
/// there is none; only those whose commonName is `common_name`, when given.
fn usable_leaves<'a>(
    snap: &'a Snapshot,
    leaf: LeafCertificateType,
    common_name: Option<&str>,
    now: i64,
) -> Result<Vec<&'a Leaf>, GetCertificateInfoStatus> {
    let domain = snap
        .leaf_domain(leaf)
        .ok_or(GetCertificateInfoStatus::Rejected)?;
    // The SECC directories hold -2 and -20 leaves: a type sees its own.
    let of_type: Vec<&Leaf> = domain
        .leaves
        .iter()
        .filter(|l| leaf.fits_key(l.cert.key_algorithm))
        .filter(|l| common_name.is_none_or(|cn| l.cert.common_name == cn))
        .collect();
    if of_type.is_empty() {
        return Err(GetCertificateInfoStatus::NotFound);
    }
    let valid: Vec<&Leaf> = of_type
        .into_iter()
        .filter(|l| l.cert.is_valid_at(now))
        .collect();
    if valid.is_empty() {
        return Err(GetCertificateInfoStatus::NotFoundValid);
    }
    let mut usable: Vec<&Leaf> = valid.into_iter().filter(|l| l.key.is_some()).collect();
    if usable.is_empty() {
        return Err(GetCertificateInfoStatus::PrivateKeyNotFound);
    }
    sort_newest_first(&mut usable);
    Ok(usable)
}

/// Removes `doomed` leaves through `tx`: their files, their OCSP files, and
/// their keys unless a leaf that stays pairs with the same key.
pub(super) fn remove_leaves(
    snap: &Snapshot,
    tx: &mut store::Transaction<'_>,
    doomed: &[&Leaf],
) -> std::io::Result<()> {
    let doomed_fps: std::collections::HashSet<x509::Fingerprint> =
        doomed.iter().map(|l| l.cert.fingerprint).collect();
    let kept_keys: std::collections::HashSet<&PathBuf> = snap
        .leaves
        .iter()
        .flat_map(|d| &d.leaves)
        .filter(|l| !doomed_fps.contains(&l.cert.fingerprint))
        .filter_map(|l| l.key.as_ref())
        .collect();
    for leaf in doomed {
        tracing::info!(subject = %leaf.cert.common_name(), serial = %leaf.cert.serial, "removing leaf certificate");
        let mut paths: Vec<PathBuf> = leaf.files.iter().map(|f| f.path.clone()).collect();
        paths.extend(leaf.key.iter().filter(|k| !kept_keys.contains(k)).cloned());
        paths.extend(snap.ocsp_files_of(&leaf.cert, leaf.issuer_key_bits()));
        for path in paths {
            tx.remove(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}
