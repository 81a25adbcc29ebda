//! The structures on the wire, each with the signature contract §4 gives
//! it. Named fields, so that no client reads a position.

use serde::{Deserialize, Serialize};
use zbus::{OwnedVariant, Type, Variant};

use crate::types::HashData;

/// Hash data: `(ssss)`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Type, Variant, OwnedVariant,
)]
pub struct WireHashData {
    /// `SHA256`, `SHA384` or `SHA512`.
    pub hash_algorithm: String,
    /// Hex digest of the issuer's name.
    pub issuer_name_hash: String,
    /// Hex digest of the issuer's public key.
    pub issuer_key_hash: String,
    /// Hex serial number.
    pub serial_number: String,
}

impl From<&HashData> for WireHashData {
    fn from(hash: &HashData) -> WireHashData {
        WireHashData {
            hash_algorithm: hash.hash_algorithm.as_str().to_owned(),
            issuer_name_hash: hash.issuer_name_hash.clone(),
            issuer_key_hash: hash.issuer_key_hash.clone(),
            serial_number: hash.serial_number.clone(),
        }
    }
}

/// A `GetInstalledCertificates` chain: `(s(ssss)a(ssss))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireHashDataChain {
    /// The `CertificateType`.
    pub certificate_type: String,
    /// The head of the chain.
    pub certificate_hash_data: WireHashData,
    /// The certificates below it.
    pub child_certificate_hash_data: Vec<WireHashData>,
}

/// An OCSP request entry (hash data and responder URL), or a cached
/// response (hash data and the path of its DER file): `((ssss)s)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type, Variant, OwnedVariant)]
pub struct WireOcspEntry {
    /// The certificate's hash data.
    pub certificate_hash_data: WireHashData,
    /// The responder URL, or the response's path ("" when none).
    pub location: String,
}

/// One entry of `GetCertificateStatusRequestData`: `((ssss)as)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireStatusRequest {
    /// The chain member's hash data.
    pub certificate_hash_data: WireHashData,
    /// Where to ask: OCSP responders, else CRL distribution points.
    pub urls: Vec<String>,
}

/// One entry of `GetCertificateStatusEntries`: `((ssss)ssxx)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireStatusEntry {
    /// The certificate, as it was named.
    pub certificate_hash_data: WireHashData,
    /// `Good`, `Revoked`, `Unknown` or `Failed`.
    pub status: String,
    /// `OCSP` or `CRL`.
    pub source: String,
    /// When it was received, Unix seconds.
    pub received: i64,
    /// When it stops being fresh, Unix seconds.
    pub expires: i64,
}

/// One entry of `GetCertificateDetails`: `(sssxx(ssss)sss)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireCertificateDetails {
    /// The `CertificateType` of the listing it belongs to.
    pub certificate_type: String,
    /// Subject commonName.
    pub subject: String,
    /// Issuer commonName.
    pub issuer: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Its hash data.
    pub hash: WireHashData,
    /// A file that holds it.
    pub path: String,
    /// Hex SHA-256 of its DER.
    pub fingerprint: String,
    /// Its key algorithm, as CertificateInfo names it.
    pub key_algorithm: String,
}
