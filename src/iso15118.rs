//! The certificate profiles of the V2G PKI (ISO 15118-2 Annex F and
//! ISO 15118-20 Annex B): the SECC leaf, the CPO Sub-CAs and the V2G root.
//! They are checked on install, so that the store never holds what a car
//! would refuse.
//!
//! Annex F, as the test PKIs of SwitchEV and EVerest reproduce it:
//! - every certificate: EC P-256, signed with ECDSA-SHA256;
//! - V2G root: basicConstraints critical CA:TRUE, keyUsage critical
//!   keyCertSign and cRLSign;
//! - Sub-CA 1: CA:TRUE with pathLenConstraint 1; Sub-CA 2 (or a single
//!   Sub-CA layer): pathLenConstraint 0; keyUsage critical keyCertSign;
//! - SECC leaf: CA:FALSE, keyUsage critical digitalSignature and
//!   keyAgreement, and `DC=CPO` in the subject ([V2G2-925]).
//!
//! Annex B has the same shape with the -20 algorithms: every key P-521 or
//! Ed448, every signature ECDSA-SHA512 or Ed448. Its SECC leaf needs
//! keyUsage digitalSignature only: TLS 1.3 never agrees keys with it.

use foreign_types_shared::ForeignTypeRef;
use openssl::nid::Nid;
use openssl::x509::{X509Ref, X509};

use crate::rfc5280::extension;
use crate::types::{KeyAlgorithm, LeafCertificateType};

/// Sub-CAs a V2G path may hold between root and leaf.
const MAX_SUB_CAS: usize = 2;

/// The two editions of the V2G PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    /// ISO 15118-2 Annex F: P-256, ECDSA-SHA256.
    Iso2,
    /// ISO 15118-20 Annex B: P-521 with ECDSA-SHA512, or Ed448.
    Iso20,
}

impl Edition {
    /// The edition of a SECC leaf type: `V2G20` is -20, `V2G` -2.
    pub fn of_leaf(leaf: LeafCertificateType) -> Option<Edition> {
        match leaf {
            LeafCertificateType::V2G => Some(Edition::Iso2),
            LeafCertificateType::V2G20 => Some(Edition::Iso20),
            _ => None,
        }
    }

    /// The edition a certificate with this key belongs to: P-256 is -2,
    /// anything else is held to -20 (which refuses what is not P-521 or
    /// Ed448).
    fn of(cert: &X509Ref) -> Edition {
        if crate::x509::key_algorithm(cert) == KeyAlgorithm::P256 {
            Edition::Iso2
        } else {
            Edition::Iso20
        }
    }
}

/// Checks the path a SECC leaf of `edition` was verified on (leaf first,
/// anchor last): the leaf's profile and each Sub-CA's. The anchor was
/// checked when it was installed.
pub fn check_secc_path(path: &[X509], edition: Edition, require_dc: bool) -> Result<(), String> {
    let Some((leaf, rest)) = path.split_first() else {
        return Err("the path is empty".to_owned());
    };
    check_secc_leaf(leaf, edition, require_dc).map_err(|e| format!("SECC leaf: {e}"))?;
    let sub_cas = &rest[..rest.len().saturating_sub(1)];
    if sub_cas.len() > MAX_SUB_CAS {
        return Err(format!(
            "{} Sub-CAs between root and leaf, over {MAX_SUB_CAS}",
            sub_cas.len()
        ));
    }
    // Nearest the leaf is Sub-CA 2, pathLenConstraint 0; above it Sub-CA 1,
    // pathLenConstraint 1.
    for (max_path_len, sub_ca) in (0..).zip(sub_cas) {
        check_sub_ca(sub_ca, edition, max_path_len)
            .map_err(|e| format!("Sub-CA {}: {e}", 2 - max_path_len))?;
    }
    Ok(())
}

/// Checks a CA certificate installed into the V2G bundle: a root's profile
/// when it is self-signed, else a Sub-CA's, of the edition its key is of.
/// The bundle holds the roots of both editions.
pub fn check_v2g_ca(cert: &X509Ref, self_signed: bool) -> Result<(), String> {
    let edition = Edition::of(cert);
    if !self_signed {
        return check_sub_ca(cert, edition, 1).map_err(|e| format!("V2G Sub-CA: {e}"));
    }
    let root = || -> Result<(), String> {
        check_algorithms(cert, edition)?;
        check_basic_constraints(cert, true)?;
        check_key_usage(
            cert,
            &[
                (openssl_sys::X509v3_KU_KEY_CERT_SIGN, "keyCertSign"),
                (openssl_sys::X509v3_KU_CRL_SIGN, "cRLSign"),
            ],
        )
    };
    root().map_err(|e| format!("V2G root: {e}"))
}

fn check_secc_leaf(cert: &X509Ref, edition: Edition, require_dc: bool) -> Result<(), String> {
    check_algorithms(cert, edition)?;
    check_basic_constraints(cert, false)?;
    let signing = (openssl_sys::X509v3_KU_DIGITAL_SIGNATURE, "digitalSignature");
    match edition {
        Edition::Iso2 => check_key_usage(
            cert,
            &[
                signing,
                (openssl_sys::X509v3_KU_KEY_AGREEMENT, "keyAgreement"),
            ],
        )?,
        Edition::Iso20 => check_key_usage(cert, &[signing])?,
    }
    let has_dc_cpo = cert
        .subject_name()
        .entries_by_nid(Nid::DOMAINCOMPONENT)
        .any(|e| e.data().as_slice() == b"CPO");
    if require_dc && !has_dc_cpo {
        return Err("the subject has no DC=CPO".to_owned());
    }
    Ok(())
}

fn check_sub_ca(
    cert: &X509Ref,
    edition: Edition,
    max_path_len: libc::c_long,
) -> Result<(), String> {
    check_algorithms(cert, edition)?;
    check_basic_constraints(cert, true)?;
    // SAFETY: reads the cached basicConstraints of a parsed certificate.
    let path_len = unsafe { openssl_sys::X509_get_pathlen(cert.as_ptr()) };
    if path_len < 0 {
        return Err("no pathLenConstraint".to_owned());
    }
    if path_len > max_path_len {
        return Err(format!("pathLenConstraint {path_len}, over {max_path_len}"));
    }
    check_key_usage(
        cert,
        &[(openssl_sys::X509v3_KU_KEY_CERT_SIGN, "keyCertSign")],
    )
}

fn check_algorithms(cert: &X509Ref, edition: Edition) -> Result<(), String> {
    let key = crate::x509::key_algorithm(cert);
    let signature = cert.signature_algorithm().object().nid();
    match edition {
        Edition::Iso2 => {
            if key != KeyAlgorithm::P256 {
                return Err("the key is not EC P-256".to_owned());
            }
            if signature != Nid::ECDSA_WITH_SHA256 {
                return Err("the signature is not ECDSA-SHA256".to_owned());
            }
        }
        Edition::Iso20 => {
            if !matches!(key, KeyAlgorithm::P521 | KeyAlgorithm::Ed448) {
                return Err(format!(
                    "the key is {key}, neither P-256 (ISO 15118-2) nor P-521 or Ed448 (ISO 15118-20)"
                ));
            }
            if signature != Nid::ECDSA_WITH_SHA512
                && signature != Nid::from_raw(openssl_sys::NID_ED448)
            {
                return Err("the signature is neither ECDSA-SHA512 nor Ed448".to_owned());
            }
        }
    }
    Ok(())
}

fn check_basic_constraints(cert: &X509Ref, ca: bool) -> Result<(), String> {
    match extension(cert, Nid::BASIC_CONSTRAINTS) {
        Some((true, _)) => {}
        Some((false, _)) => return Err("basicConstraints is not critical".to_owned()),
        None => return Err("no basicConstraints".to_owned()),
    }
    if crate::rfc5280::is_ca(cert) != ca {
        let flag = if ca { "FALSE" } else { "TRUE" };
        return Err(format!("basicConstraints CA:{flag}"));
    }
    Ok(())
}

fn check_key_usage(cert: &X509Ref, needed: &[(u32, &str)]) -> Result<(), String> {
    match extension(cert, Nid::KEY_USAGE) {
        Some((true, _)) => {}
        Some((false, _)) => return Err("keyUsage is not critical".to_owned()),
        None => return Err("no keyUsage".to_owned()),
    }
    // SAFETY: reads the cached keyUsage bits of a parsed certificate.
    let bits = unsafe { openssl_sys::X509_get_key_usage(cert.as_ptr()) };
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(bit, _)| bits & bit == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("keyUsage lacks {}", missing.join(" and ")))
    }
}
