//! The contract's enumerations and structures (`dbus-api.md` §4), spelled
//! exactly as on the wire.

use std::fmt;
use std::str::FromStr;

/// An enumeration of the contract, spelled as on the wire.
pub trait ContractEnum: Copy {
    /// The contract's spelling.
    fn as_str(self) -> &'static str;
}

/// An enum string that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {enumeration}; expected one of: {accepted}")]
pub struct UnknownValue {
    /// The enumeration's contract name.
    pub enumeration: &'static str,
    /// What the caller sent (truncated for the message).
    pub value: String,
    /// The accepted values, comma separated.
    pub accepted: String,
}

macro_rules! contract_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The contract's spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ContractEnum for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        enumeration: stringify!($name),
                        value: s.chars().take(64).collect(),
                        accepted: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

contract_enum! {
    /// A CA bundle.
    CaCertificateType {
        V2G = "V2G",
        MO = "MO",
        CSMS = "CSMS",
        MF = "MF",
        /// Roots of vehicle OEMs, for ISO 15118-20 mutual TLS (§11.1).
        OEM = "OEM",
    }
}

contract_enum! {
    /// A leaf domain, or a trust-anchor selector for verification.
    LeafCertificateType {
        CSMS = "CSMS",
        V2G = "V2G",
        MF = "MF",
        MO = "MO",
        /// The SECC's ISO 15118-20 leaf: P-521 or Ed448, in the SECC
        /// directories beside the -2 leaves (§11.1).
        V2G20 = "V2G20",
        /// A vehicle chain, checked against the OEM roots; for
        /// `VerifyCertificate` only.
        OEM = "OEM",
    }
}

contract_enum! {
    /// What `GetInstalledCertificates` lists.
    CertificateType {
        V2GRootCertificate = "V2GRootCertificate",
        MORootCertificate = "MORootCertificate",
        CSMSRootCertificate = "CSMSRootCertificate",
        V2GCertificateChain = "V2GCertificateChain",
        MFRootCertificate = "MFRootCertificate",
        OEMRootCertificate = "OEMRootCertificate",
    }
}

contract_enum! {
    /// The key of a certificate, as CertificateInfo's `key_algorithm`
    /// names it (§11.1). `Other` is evsec's name for any other key
    /// (Ed25519, P-224, brainpool curves, DSA).
    KeyAlgorithm {
        P256 = "P256",
        P384 = "P384",
        P521 = "P521",
        Ed448 = "Ed448",
        RSA = "RSA",
        Other = "Other",
    }
}

contract_enum! {
    /// The digest of an OCSP CertID.
    HashAlgorithm { SHA256 = "SHA256", SHA384 = "SHA384", SHA512 = "SHA512" }
}

contract_enum! {
    /// Encoding of handed-out certificates.
    EncodingFormat { PEM = "PEM", DER = "DER" }
}

contract_enum! {
    /// Result of `InstallCaCertificate` and `UpdateLeafCertificate`.
    InstallCertificateResult {
        Accepted = "Accepted",
        InvalidSignature = "InvalidSignature",
        InvalidCertificateChain = "InvalidCertificateChain",
        InvalidFormat = "InvalidFormat",
        InvalidCommonName = "InvalidCommonName",
        NoRootCertificateInstalled = "NoRootCertificateInstalled",
        Expired = "Expired",
        CertificateStoreMaxLengthExceeded = "CertificateStoreMaxLengthExceeded",
        WriteError = "WriteError",
        PrivateKeyNotFound = "PrivateKeyNotFound",
    }
}

contract_enum! {
    /// Result of `DeleteCertificate`.
    DeleteCertificateResult { Accepted = "Accepted", Failed = "Failed", NotFound = "NotFound" }
}

contract_enum! {
    /// Result of `VerifyCertificate`.
    CertificateValidationResult {
        Valid = "Valid",
        Expired = "Expired",
        InvalidSignature = "InvalidSignature",
        IssuerNotFound = "IssuerNotFound",
        InvalidLeafSignature = "InvalidLeafSignature",
        InvalidChain = "InvalidChain",
        Unknown = "Unknown",
        /// A fresh certificate status entry of the leaf or a Sub-CA says
        /// `Revoked` (§11.2).
        Revoked = "Revoked",
    }
}

contract_enum! {
    /// Status of `GetInstalledCertificates`.
    GetInstalledCertificatesStatus { Accepted = "Accepted", NotFound = "NotFound" }
}

contract_enum! {
    /// Status of `GetLeafCertificateInfo` and `GetAllValidCertificatesInfo`.
    GetCertificateInfoStatus {
        Accepted = "Accepted",
        Rejected = "Rejected",
        NotFound = "NotFound",
        NotFoundValid = "NotFoundValid",
        PrivateKeyNotFound = "PrivateKeyNotFound",
    }
}

contract_enum! {
    /// Status of `GenerateCertificateSigningRequest`.
    GetCertificateSignRequestStatus {
        Accepted = "Accepted",
        InvalidRequestedType = "InvalidRequestedType",
        KeyGenError = "KeyGenError",
        GenerationError = "GenerationError",
    }
}

contract_enum! {
    /// A certificate's revocation status, as OCPP 2.1 M07 reports it.
    CertificateStatus { Good = "Good", Revoked = "Revoked", Unknown = "Unknown", Failed = "Failed" }
}

contract_enum! {
    /// Where a certificate status came from (OCPP 2.1 M07).
    CertificateStatusSource { OCSP = "OCSP", CRL = "CRL" }
}

contract_enum! {
    /// Result of `UpdateCertificateStatus` (§11.2).
    UpdateCertificateStatusResult { Accepted = "Accepted", InvalidFormat = "InvalidFormat" }
}

contract_enum! {
    /// Result of `ConfirmCertificateInUse` (§11.2).
    ConfirmCertificateResult { Accepted = "Accepted", NotFound = "NotFound", Failed = "Failed" }
}

contract_enum! {
    /// Result of `UpdateOcspCache`.
    UpdateOcspCacheResult { Accepted = "Accepted", NotFound = "NotFound", InvalidFormat = "InvalidFormat" }
}

contract_enum! {
    /// First argument of the `CertificateStoreUpdated` signal.
    StoreOperation { Installed = "Installed", Deleted = "Deleted" }
}

/// How many CA bundles there are, for per-bundle arrays.
pub const BUNDLES: usize = CaCertificateType::ALL.len();

impl CaCertificateType {
    /// Position in [`CaCertificateType::ALL`], for per-bundle arrays.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The root listing type that shows this bundle.
    pub fn root_listing(self) -> CertificateType {
        match self {
            CaCertificateType::V2G => CertificateType::V2GRootCertificate,
            CaCertificateType::MO => CertificateType::MORootCertificate,
            CaCertificateType::CSMS => CertificateType::CSMSRootCertificate,
            CaCertificateType::MF => CertificateType::MFRootCertificate,
            CaCertificateType::OEM => CertificateType::OEMRootCertificate,
        }
    }
}

impl LeafCertificateType {
    /// The CA bundle that anchors this type.
    pub fn anchor(self) -> CaCertificateType {
        match self {
            LeafCertificateType::CSMS => CaCertificateType::CSMS,
            LeafCertificateType::V2G => CaCertificateType::V2G,
            LeafCertificateType::MF => CaCertificateType::MF,
            LeafCertificateType::MO => CaCertificateType::MO,
            LeafCertificateType::V2G20 => CaCertificateType::V2G,
            LeafCertificateType::OEM => CaCertificateType::OEM,
        }
    }

    /// The leaf directories that hold this type: the SECC's hold both `V2G`
    /// and `V2G20`. `None` for the types the station keeps no leaf of.
    pub fn stored_in(self) -> Option<LeafCertificateType> {
        match self {
            LeafCertificateType::CSMS => Some(LeafCertificateType::CSMS),
            LeafCertificateType::V2G | LeafCertificateType::V2G20 => Some(LeafCertificateType::V2G),
            LeafCertificateType::MF | LeafCertificateType::MO | LeafCertificateType::OEM => None,
        }
    }

    /// Whether a leaf with this key is of this type. A SECC leaf's key
    /// makes its type: P-256 is `V2G` (ISO 15118-2), P-521 or Ed448 is
    /// `V2G20`. Every other type takes any key.
    pub fn fits_key(self, key: KeyAlgorithm) -> bool {
        match self {
            LeafCertificateType::V2G => key == KeyAlgorithm::P256,
            LeafCertificateType::V2G20 => matches!(key, KeyAlgorithm::P521 | KeyAlgorithm::Ed448),
            _ => true,
        }
    }
}

impl CertificateType {
    /// The bundle of a root listing type; `None` for `V2GCertificateChain`.
    pub fn bundle(self) -> Option<CaCertificateType> {
        match self {
            CertificateType::V2GRootCertificate => Some(CaCertificateType::V2G),
            CertificateType::MORootCertificate => Some(CaCertificateType::MO),
            CertificateType::CSMSRootCertificate => Some(CaCertificateType::CSMS),
            CertificateType::MFRootCertificate => Some(CaCertificateType::MF),
            CertificateType::OEMRootCertificate => Some(CaCertificateType::OEM),
            CertificateType::V2GCertificateChain => None,
        }
    }
}

impl HashAlgorithm {
    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::SHA256 => 32,
            HashAlgorithm::SHA384 => 48,
            HashAlgorithm::SHA512 => 64,
        }
    }

    /// The OpenSSL digest.
    pub fn message_digest(self) -> openssl::hash::MessageDigest {
        match self {
            HashAlgorithm::SHA256 => openssl::hash::MessageDigest::sha256(),
            HashAlgorithm::SHA384 => openssl::hash::MessageDigest::sha384(),
            HashAlgorithm::SHA512 => openssl::hash::MessageDigest::sha512(),
        }
    }
}

/// OCPP CertificateHashData: an RFC 6960 CertID in hex (`(ssss)` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashData {
    /// Digest used for the two hashes.
    pub hash_algorithm: HashAlgorithm,
    /// Hex digest of the DER of the certificate's issuer Name.
    pub issuer_name_hash: String,
    /// Hex digest of the issuer's subjectPublicKey bits.
    pub issuer_key_hash: String,
    /// Hex serial number.
    pub serial_number: String,
}

/// Longest hex field accepted in hash data: a SHA-512 digest.
pub const MAX_HASH_FIELD_LEN: usize = 128;

/// Why a hash data argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashDataError {
    /// The algorithm string is not one of the contract's.
    #[error(transparent)]
    Algorithm(#[from] UnknownValue),
    /// A field holds something other than hex digits.
    #[error("{field} must be hexadecimal")]
    NotHex {
        /// The offending field.
        field: &'static str,
    },
    /// A field is empty or longer than the algorithm allows.
    #[error("{field} must be {expected} hex digits long, got {got}")]
    Length {
        /// The offending field.
        field: &'static str,
        /// What the algorithm requires.
        expected: String,
        /// The length received.
        got: usize,
    },
}

impl HashData {
    /// Parses and canonicalises hash data as accepted by the contract: any of
    /// the three algorithms, hex in any case, serial with or without leading
    /// zeros. The result is lowercase with the serial's leading zeros removed.
    pub fn parse(
        algorithm: &str,
        issuer_name_hash: &str,
        issuer_key_hash: &str,
        serial_number: &str,
    ) -> Result<HashData, HashDataError> {
        let hash_algorithm: HashAlgorithm = algorithm.parse()?;
        let digest_hex = hash_algorithm.digest_len() * 2;
        let digest = |field: &'static str, value: &str| -> Result<String, HashDataError> {
            check_hex(field, value)?;
            if value.len() != digest_hex {
                return Err(HashDataError::Length {
                    field,
                    expected: digest_hex.to_string(),
                    got: value.len(),
                });
            }
            Ok(value.to_ascii_lowercase())
        };
        let issuer_name_hash = digest("issuer_name_hash", issuer_name_hash)?;
        let issuer_key_hash = digest("issuer_key_hash", issuer_key_hash)?;
        check_hex("serial_number", serial_number)?;
        if serial_number.is_empty() || serial_number.len() > MAX_HASH_FIELD_LEN {
            return Err(HashDataError::Length {
                field: "serial_number",
                expected: format!("1 to {MAX_HASH_FIELD_LEN}"),
                got: serial_number.len(),
            });
        }
        Ok(HashData {
            hash_algorithm,
            issuer_name_hash,
            issuer_key_hash,
            serial_number: canonical_serial(serial_number),
        })
    }
}

/// One chain of `GetInstalledCertificates` (`(s(ssss)a(ssss))`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashDataChain {
    /// What the chain is.
    pub certificate_type: CertificateType,
    /// The root (root types) or the leaf (`V2GCertificateChain`).
    pub certificate_hash_data: HashData,
    /// Sub-CAs: root side first under a root, leaf side first under a leaf.
    pub child_certificate_hash_data: Vec<HashData>,
}

fn check_hex(field: &'static str, value: &str) -> Result<(), HashDataError> {
    if value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(HashDataError::NotHex { field })
    }
}

/// Lowercase hex without leading zeros; `0` for zero.
pub fn canonical_serial(hex: &str) -> String {
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_strings_round_trip_and_reject_wrong_case() {
        for t in CertificateType::ALL {
            assert_eq!(t.as_str().parse::<CertificateType>().unwrap(), *t);
        }
        let err = "v2g".parse::<CaCertificateType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`v2g` is not a valid CaCertificateType; expected one of: V2G, MO, CSMS, MF, OEM"
        );
    }

    #[test]
    fn hash_data_is_canonicalised() {
        let name = "82ADDB4B47026C702B9ED9D482C6E3570BBAE9C49B963EC18B0A3523DFB47FE3";
        let key = "e9d2a6d245233edbf5a8319b99087313e16307ca29b388373d951b50e93090aa";
        let h = HashData::parse("SHA256", name, key, "0007A120").unwrap();
        assert_eq!(h.issuer_name_hash, name.to_ascii_lowercase());
        assert_eq!(h.serial_number, "7a120");
        assert_eq!(
            HashData::parse("SHA256", name, key, "000")
                .unwrap()
                .serial_number,
            "0"
        );
    }

    #[test]
    fn hash_data_rejects_bad_fields() {
        let h64 = "a".repeat(64);
        assert_eq!(
            HashData::parse("SHA256", "xyz", &h64, "1").unwrap_err(),
            HashDataError::NotHex {
                field: "issuer_name_hash"
            }
        );
        assert!(matches!(
            HashData::parse("SHA384", &h64, &h64, "1").unwrap_err(),
            HashDataError::Length {
                field: "issuer_name_hash",
                ..
            }
        ));
        assert!(matches!(
            HashData::parse("SHA256", &h64, &h64, "").unwrap_err(),
            HashDataError::Length {
                field: "serial_number",
                ..
            }
        ));
        assert!(matches!(
            HashData::parse("MD5", &h64, &h64, "1").unwrap_err(),
            HashDataError::Algorithm(_)
        ));
    }
}
