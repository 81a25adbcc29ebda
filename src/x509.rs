//! The X.509 work: PEM parsing, hash data, issuer links and chain
//! verification. Everything here is synchronous OpenSSL code with no I/O.

use std::ops::Range;

use foreign_types_shared::ForeignTypeRef;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use std::sync::OnceLock;

use openssl::hash::MessageDigest;
use openssl::stack::Stack;
use openssl::x509::{X509Ref, X509VerifyResult, X509};

use crate::types::{HashAlgorithm, HashData, KeyAlgorithm};

mod ffi {
    extern "C" {
        pub fn X509_get0_pubkey_bitstr(
            x: *const openssl_sys::X509,
        ) -> *mut openssl_sys::ASN1_BIT_STRING;
        pub fn X509_get_X509_PUBKEY(x: *const openssl_sys::X509) -> *mut std::ffi::c_void;
        pub fn i2d_X509_PUBKEY(key: *const std::ffi::c_void, out: *mut *mut u8) -> std::ffi::c_int;
    }
}

/// A SHA-256 digest, used as an identity for certificates and public keys.
pub type Fingerprint = [u8; 32];

/// A certificate that failed to parse, or input that is not PEM.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// A BEGIN line without its END line.
    #[error("PEM block `{label}` at byte {offset} has no END line")]
    Unterminated {
        /// The block's label.
        label: String,
        /// Where the block starts.
        offset: usize,
    },
    /// A certificate block whose content OpenSSL refused.
    #[error("certificate {index} does not parse: {reason}")]
    BadCertificate {
        /// Position of the block among the certificates, from 0.
        index: usize,
        /// OpenSSL's reason.
        reason: String,
    },
}

/// One `-----BEGIN x-----` … `-----END x-----` block of a PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, such as `CERTIFICATE`.
    pub label: String,
    /// The byte range of the whole block, END line included (without its
    /// line break).
    pub range: Range<usize>,
}

/// Finds the PEM blocks in `text`. Only the block boundaries are located
/// here; the content is left to OpenSSL. Text between blocks is ignored.
/// A BEGIN line without its END line ends the search; the blocks before it
/// are returned with the error.
pub fn pem_blocks(text: &[u8]) -> (Vec<PemBlock>, Option<PemError>) {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(start) = find(&text[pos..], BEGIN).map(|i| i + pos) {
        let label_start = start + BEGIN.len();
        let label_end = match find(&text[label_start..], b"-----") {
            Some(i) => label_start + i,
            None => break,
        };
        let label = String::from_utf8_lossy(&text[label_start..label_end]).into_owned();
        let mut end_marker = END.to_vec();
        end_marker.extend_from_slice(label.as_bytes());
        end_marker.extend_from_slice(b"-----");
        let Some(end) = find(&text[label_end..], &end_marker).map(|i| i + label_end) else {
            let error = PemError::Unterminated {
                label,
                offset: start,
            };
            return (blocks, Some(error));
        };
        let block_end = end + end_marker.len();
        blocks.push(PemBlock {
            label,
            range: start..block_end,
        });
        pos = block_end;
    }
    (blocks, None)
}

/// Where `needle` starts in `haystack`. Scans for its first byte and
/// compares from there: in PEM text the markers' `-` is rare, so this is
/// linear in practice where a window-by-window comparison is not.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if haystack
            .get(at + 1..)
            .is_some_and(|tail| tail.starts_with(rest))
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// PEM blocks in `text`, counted by their BEGIN lines without decoding.
pub fn pem_block_count(text: &[u8]) -> usize {
    const BEGIN: &[u8] = b"-----BEGIN ";
    text.windows(BEGIN.len()).filter(|w| *w == BEGIN).count()
}

/// The certificates of a PEM argument, in order; any broken block fails
/// the whole text. Blocks with other labels are counted in the second
/// element so callers can refuse them.
pub fn parse_pem_certificates(text: &[u8]) -> Result<(Vec<X509>, usize), PemError> {
    let (blocks, error) = pem_blocks(text);
    if let Some(e) = error {
        return Err(e);
    }
    let mut certs = Vec::new();
    let mut others = 0;
    for block in blocks {
        if block.label != "CERTIFICATE" {
            others += 1;
            continue;
        }
        let index = certs.len();
        let cert = X509::from_pem(&text[block.range]).map_err(|e| PemError::BadCertificate {
            index,
            reason: first_error(&e),
        })?;
        certs.push(cert);
    }
    Ok((certs, others))
}

/// Decodes base64 that may be folded over lines. `None` for bad or empty
/// input.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    openssl::base64::decode_block(&compact)
        .ok()
        .filter(|b| !b.is_empty())
}

/// The first OpenSSL reason of an error stack, for messages.
pub fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_owned))
        .unwrap_or_else(|| e.to_string())
}

/// SHA-256 of some bytes.
pub fn sha256(data: &[u8]) -> Fingerprint {
    // The one-shot SHA256(): it cannot fail, and it skips the digest
    // fetch that EVP costs on every call in OpenSSL 3.
    openssl::sha::sha256(data)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Lowercase hex back to bytes, as [`hex`] writes it.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The subjectPublicKey BIT STRING contents of a certificate, exactly as
/// encoded (RFC 6960 issuerKeyHash input).
pub fn public_key_bits(cert: &X509Ref) -> Vec<u8> {
    // SAFETY: the returned pointer is owned by `cert` and valid while it lives;
    // it is copied out at once.
    unsafe {
        let bits = ffi::X509_get0_pubkey_bitstr(cert.as_ptr());
        if bits.is_null() {
            return Vec::new();
        }
        openssl::asn1::Asn1BitStringRef::from_ptr(bits)
            .as_slice()
            .to_vec()
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo DER, as stored in the
/// certificate: the same identity as [`public_key_fingerprint`] gives for
/// its private key, without OpenSSL 3's slow key encoder (about 0.3 µs
/// instead of 120 µs here).
pub fn certificate_key_fingerprint(cert: &X509Ref) -> Option<Fingerprint> {
    // SAFETY: the X509_PUBKEY belongs to `cert`; the first call sizes the
    // buffer, the second fills exactly that many bytes.
    unsafe {
        let key = ffi::X509_get_X509_PUBKEY(cert.as_ptr());
        if key.is_null() {
            return None;
        }
        let len = ffi::i2d_X509_PUBKEY(key, std::ptr::null_mut());
        let mut der = vec![0u8; usize::try_from(len).ok().filter(|n| *n > 0)?];
        let mut out = der.as_mut_ptr();
        if ffi::i2d_X509_PUBKEY(key, &mut out) != len {
            return None;
        }
        Some(sha256(&der))
    }
}

/// Identity of a public key: SHA-256 of its SubjectPublicKeyInfo DER,
/// shared by a certificate and the private key that belongs to it.
pub fn public_key_fingerprint<T: openssl::pkey::HasPublic>(
    key: &openssl::pkey::PKeyRef<T>,
) -> Option<Fingerprint> {
    key.public_key_to_der().ok().map(|der| sha256(&der))
}

/// An RFC 6960 CertID as hash data: the digests of the issuer's name (DER)
/// and of its key bits, and the canonical serial.
fn cert_id(
    algorithm: HashAlgorithm,
    issuer_der: &[u8],
    issuer_key_bits: &[u8],
    serial: String,
) -> HashData {
    // The one-shot digests cannot fail: no digest is ever left empty.
    let digest = |data: &[u8]| match algorithm {
        HashAlgorithm::SHA256 => hex(&openssl::sha::sha256(data)),
        HashAlgorithm::SHA384 => hex(&openssl::sha::sha384(data)),
        HashAlgorithm::SHA512 => hex(&openssl::sha::sha512(data)),
    };
    HashData {
        hash_algorithm: algorithm,
        issuer_name_hash: digest(issuer_der),
        issuer_key_hash: digest(issuer_key_bits),
        serial_number: serial,
    }
}

/// The canonical hex serial of a certificate.
pub fn serial_of(cert: &X509Ref) -> Option<String> {
    let hex = cert
        .serial_number()
        .to_bn()
        .ok()?
        .to_hex_str()
        .ok()?
        .to_string();
    Some(crate::types::canonical_serial(&hex))
}

/// Hash data of a parsed certificate issued by `issuer`.
pub fn hash_data_of(
    cert: &X509Ref,
    issuer: &X509Ref,
    algorithm: HashAlgorithm,
) -> Option<HashData> {
    let issuer_der = cert.issuer_name().to_der().ok()?;
    Some(cert_id(
        algorithm,
        &issuer_der,
        &public_key_bits(issuer),
        serial_of(cert)?,
    ))
}

/// Where a certificate's revocation status can be asked: its OCSP
/// responders, else its CRL distribution points (URIs only).
pub fn status_urls(cert: &X509Ref) -> Vec<String> {
    let ocsp = ocsp_urls(cert);
    if !ocsp.is_empty() {
        return ocsp;
    }
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| {
            p.distpoint()?.fullname().map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.uri().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .collect()
}

/// The facts about one certificate that never change: computed once when
/// it is parsed, or read back from the index's parse cache on disk, in
/// which case the certificate itself is parsed only when first used. The
/// facts read as fields of the certificate (`cert.fingerprint`).
#[derive(Clone)]
pub struct CertFacts {
    facts: Facts,
    /// The certificate, parsed from `encoding` on first use.
    parsed: OnceLock<Option<X509>>,
    /// Its encoding: a PEM block, or DER.
    encoding: Vec<u8>,
    encoding_is_der: bool,
}

/// What the index knows of a certificate without parsing it again, as the
/// parse cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// SHA-256 of the DER.
    pub fingerprint: Fingerprint,
    /// DER of the subject Name.
    pub subject_der: Vec<u8>,
    /// DER of the issuer Name.
    pub issuer_der: Vec<u8>,
    /// subjectPublicKey bits.
    pub key_bits: Vec<u8>,
    /// Identity of the public key.
    pub key_fingerprint: Option<Fingerprint>,
    /// Canonical hex serial.
    pub serial: String,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Subject equals issuer and the certificate's own key verifies it.
    pub self_signed: bool,
    /// notBefore, seconds since the epoch.
    pub not_before: i64,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
    /// OpenSSL's hash of the subject name, for `-CApath` links.
    pub subject_hash: u32,
    /// The subject's commonName, "" when it has none.
    pub common_name: String,
    /// The subject's key.
    pub key_algorithm: KeyAlgorithm,
}

impl std::ops::Deref for CertFacts {
    type Target = Facts;

    fn deref(&self) -> &Facts {
        &self.facts
    }
}

/// The algorithm of a certificate's public key.
pub fn key_algorithm(x509: &X509Ref) -> KeyAlgorithm {
    let Ok(key) = x509.public_key() else {
        return KeyAlgorithm::Other;
    };
    match key.id() {
        openssl::pkey::Id::RSA => KeyAlgorithm::RSA,
        openssl::pkey::Id::ED448 => KeyAlgorithm::Ed448,
        openssl::pkey::Id::EC => match key.ec_key().ok().and_then(|k| k.group().curve_name()) {
            Some(openssl::nid::Nid::X9_62_PRIME256V1) => KeyAlgorithm::P256,
            Some(openssl::nid::Nid::SECP384R1) => KeyAlgorithm::P384,
            Some(openssl::nid::Nid::SECP521R1) => KeyAlgorithm::P521,
            _ => KeyAlgorithm::Other,
        },
        _ => KeyAlgorithm::Other,
    }
}

/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: u32 = 8192;
/// Largest RSA public exponent accepted, in bits: 2^32 - 1 at most.
pub const MAX_RSA_EXPONENT_BITS: i32 = 32;

/// Refuses public keys whose signature checks cost more than any real PKI
/// needs: an RSA modulus over 8192 bits, or a public exponent of 2^32 or
/// more (a 3,000-bit exponent makes one check cost milliseconds). Called
/// before any signature is checked with the key.
pub fn check_public_key(x509: &X509Ref) -> Result<(), String> {
    let key = x509.public_key().map_err(|e| first_error(&e))?;
    if key.id() != openssl::pkey::Id::RSA {
        return Ok(());
    }
    let rsa = key.rsa().map_err(|e| first_error(&e))?;
    if rsa.n().num_bits() > MAX_RSA_BITS as i32 {
        return Err(format!(
            "RSA modulus of {} bits, over {MAX_RSA_BITS}",
            rsa.n().num_bits()
        ));
    }
    if rsa.e().num_bits() > MAX_RSA_EXPONENT_BITS {
        return Err(format!(
            "RSA public exponent of {} bits, over {MAX_RSA_EXPONENT_BITS}",
            rsa.e().num_bits()
        ));
    }
    Ok(())
}

impl CertFacts {
    /// Computes the facts of a certificate; refuses one whose key
    /// [`check_public_key`] refuses, before its self-signature is checked.
    pub fn new(x509: X509) -> Result<CertFacts, String> {
        check_public_key(&x509)?;
        let err = |e: openssl::error::ErrorStack| first_error(&e);
        let der = x509.to_der().map_err(err)?;
        let subject_der = x509.subject_name().to_der().map_err(err)?;
        let issuer_der = x509.issuer_name().to_der().map_err(err)?;
        let serial = serial_of(&x509).ok_or_else(|| "the serial does not decode".to_owned())?;
        let key_fingerprint = certificate_key_fingerprint(&x509);
        let self_signed = subject_der == issuer_der
            && x509
                .public_key()
                .is_ok_and(|k| x509.verify(&k).unwrap_or(false));
        // SAFETY: reads cached extension flags of a valid certificate.
        let flags = unsafe { openssl_sys::X509_get_extension_flags(x509.as_ptr()) };
        let common_name = x509
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
            .unwrap_or_default();
        let facts = Facts {
            key_algorithm: key_algorithm(&x509),
            fingerprint: sha256(&der),
            key_bits: public_key_bits(&x509),
            is_ca: flags & openssl_sys::EXFLAG_CA != 0,
            not_before: unix_time(x509.not_before()),
            not_after: unix_time(x509.not_after()),
            subject_hash: x509.subject_name_hash(),
            common_name,
            subject_der,
            issuer_der,
            key_fingerprint,
            serial,
            self_signed,
        };
        Ok(CertFacts {
            facts,
            parsed: OnceLock::from(Some(x509)),
            encoding: der,
            encoding_is_der: true,
        })
    }

    /// A certificate known from the parse cache: `facts` as computed when
    /// `encoding` (a PEM block, or DER) was parsed; the certificate is
    /// parsed again only when first used.
    pub fn from_cache(encoding: Vec<u8>, encoding_is_der: bool, facts: Facts) -> CertFacts {
        CertFacts {
            facts,
            parsed: OnceLock::new(),
            encoding,
            encoding_is_der,
        }
    }

    /// The facts, for the parse cache.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> Option<Vec<u8>> {
        self.x509()?.to_pem().ok()
    }

    /// The certificate. `None` only when an encoding the parse cache vouched
    /// for does not parse (the cache was not written by this daemon's
    /// OpenSSL): the certificate is then unusable, and said so once.
    pub fn x509(&self) -> Option<&X509> {
        self.parsed
            .get_or_init(|| {
                let parsed = if self.encoding_is_der {
                    X509::from_der(&self.encoding)
                } else {
                    X509::from_pem(&self.encoding)
                };
                parsed
                    .map_err(|e| {
                        tracing::error!(
                            subject = %self.common_name,
                            "a certificate from the parse cache does not parse: {}",
                            first_error(&e)
                        )
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Hash data of this certificate, given its issuer's key bits.
    pub fn hash_data(&self, algorithm: HashAlgorithm, issuer_key_bits: &[u8]) -> HashData {
        cert_id(
            algorithm,
            &self.issuer_der,
            issuer_key_bits,
            self.serial.clone(),
        )
    }

    /// True when `self` is signed by `issuer`: names and key identifiers
    /// match and the signature verifies. Validity dates play no part.
    pub fn is_issued_by(&self, issuer: &CertFacts) -> bool {
        if self.issuer_der != issuer.subject_der {
            return false;
        }
        let (Some(cert), Some(issuer)) = (self.x509(), issuer.x509()) else {
            return false;
        };
        if issuer.issued(cert) != X509VerifyResult::OK {
            return false;
        }
        issuer
            .public_key()
            .is_ok_and(|k| cert.verify(&k).unwrap_or(false))
    }

    /// notBefore ≤ now ≤ notAfter.
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The subject's commonName, for logs and listings.
    pub fn common_name(&self) -> String {
        self.common_name.clone()
    }
}

/// Seconds since the epoch of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> i64 {
    let Ok(epoch) = Asn1Time::from_unix(0) else {
        return 0;
    };
    match epoch.diff(t) {
        Ok(d) => i64::from(d.days) * 86_400 + i64::from(d.secs),
        Err(_) => 0,
    }
}

/// Current time in seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The subject of a certificate signing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrSubject {
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// Organisation.
    pub organization: String,
    /// Common name (the station serial, or the SECC ID).
    pub common_name: String,
}

/// The keys the station's CSRs are made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrKey {
    /// NIST P-256 with ECDSA-SHA256: ISO 15118-2 and the OCPP client.
    P256,
    /// NIST P-521 with ECDSA-SHA512: ISO 15118-20.
    P521,
    /// Ed448, pure EdDSA: ISO 15118-20.
    Ed448,
}

impl CsrKey {
    /// The key algorithm, as CertificateInfo names it.
    pub fn algorithm(self) -> KeyAlgorithm {
        match self {
            CsrKey::P256 => KeyAlgorithm::P256,
            CsrKey::P521 => KeyAlgorithm::P521,
            CsrKey::Ed448 => KeyAlgorithm::Ed448,
        }
    }

    /// The digest of its signatures: none for Ed448, which hashes by itself.
    pub fn digest(self) -> MessageDigest {
        match self {
            CsrKey::P256 => MessageDigest::sha256(),
            CsrKey::P521 => MessageDigest::sha512(),
            CsrKey::Ed448 => MessageDigest::null(),
        }
    }
}

/// A fresh key of a kind.
pub fn generate_key(
    key: CsrKey,
) -> Result<openssl::pkey::PKey<openssl::pkey::Private>, openssl::error::ErrorStack> {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;

    let curve = |nid: Nid| -> Result<PKey<openssl::pkey::Private>, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(nid)?;
        PKey::from_ec_key(EcKey::generate(&group)?)
    };
    match key {
        CsrKey::P256 => curve(Nid::X9_62_PRIME256V1),
        CsrKey::P521 => curve(Nid::SECP521R1),
        CsrKey::Ed448 => PKey::generate_ed448(),
    }
}

/// A fresh `key` and a CSR for it, signed with [`CsrKey::digest`]: subject
/// C, O, CN, DC=CPO; basicConstraints critical CA:FALSE; keyUsage critical
/// digitalSignature, plus keyAgreement for an EC key (ISO 15118-2 Annex F,
/// ISO 15118-20 Annex B).
pub fn generate_csr(
    subject: &CsrSubject,
    key: CsrKey,
) -> Result<(openssl::pkey::PKey<openssl::pkey::Private>, String), openssl::error::ErrorStack> {
    let private = generate_key(key)?;
    let mut req = unsigned_csr(subject, &private)?;
    req.sign(&private, key.digest())?;
    let pem = req.build().to_pem()?;
    Ok((private, String::from_utf8_lossy(&pem).into_owned()))
}

/// The CSR of [`generate_csr`] for `key`, not yet signed.
pub fn unsigned_csr(
    subject: &CsrSubject,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<openssl::x509::X509ReqBuilder, openssl::error::ErrorStack> {
    use openssl::nid::Nid;
    use openssl::x509::extension::{BasicConstraints, KeyUsage};
    use openssl::x509::{X509NameBuilder, X509ReqBuilder};

    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COUNTRYNAME, &subject.country)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, &subject.organization)?;
    name.append_entry_by_nid(Nid::COMMONNAME, &subject.common_name)?;
    name.append_entry_by_text("DC", "CPO")?;
    let name = name.build();
    let mut req = X509ReqBuilder::new()?;
    req.set_version(0)?;
    req.set_subject_name(&name)?;
    req.set_pubkey(key)?;
    let mut usage = KeyUsage::new();
    usage.critical().digital_signature();
    // Key agreement is what an EC key can do besides signing; an Ed448 key
    // cannot.
    if key.id() == openssl::pkey::Id::EC {
        usage.key_agreement();
    }
    let mut extensions = Stack::new()?;
    extensions.push(usage.build()?)?;
    extensions.push(BasicConstraints::new().critical().build()?)?;
    req.add_extensions(&extensions)?;
    Ok(req)
}

/// The first OCSP responder URL of a certificate's Authority Information
/// Access, if any. Only the first is used when there are several.
pub fn ocsp_url(cert: &X509Ref) -> Option<String> {
    ocsp_urls(cert).into_iter().next()
}

/// Every OCSP responder URL of a certificate's Authority Information Access.
fn ocsp_urls(cert: &X509Ref) -> Vec<String> {
    cert.ocsp_responders()
        .map(|urls| urls.iter().map(|u| u.to_string()).collect())
        .unwrap_or_default()
}

/// Why an OCSP response was refused.
#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    /// Not DER of an OCSPResponse.
    #[error("not a DER OCSPResponse: {0}")]
    Parse(String),
    /// The responder did not answer `successful`.
    #[error("response status is not successful ({0})")]
    Status(i32),
    /// No single response names this certificate.
    #[error("the response holds no status for this certificate")]
    CertIdMismatch,
}

/// Checks that `der` is a successful OCSPResponse with a status for `cert`
/// issued by `issuer`, whatever digest the responder used for its CertID.
pub fn check_ocsp_response(der: &[u8], cert: &X509Ref, issuer: &X509Ref) -> Result<(), OcspError> {
    use openssl::ocsp::{OcspCertId, OcspResponse, OcspResponseStatus};
    let response = OcspResponse::from_der(der).map_err(|e| OcspError::Parse(first_error(&e)))?;
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(OcspError::Status(response.status().as_raw()));
    }
    let basic = response
        .basic()
        .map_err(|e| OcspError::Parse(first_error(&e)))?;
    let digests = [
        MessageDigest::sha256(),
        MessageDigest::sha1(),
        MessageDigest::sha384(),
        MessageDigest::sha512(),
    ];
    let found = digests.into_iter().any(|digest| {
        OcspCertId::from_cert(digest, cert, issuer)
            .ok()
            .is_some_and(|id| basic.find_status(&id).is_some())
    });
    if found {
        Ok(())
    } else {
        Err(OcspError::CertIdMismatch)
    }
}

/// Verifies a detached signature over a SHA-256 digest with the key of
/// `cert`: ECDSA (DER), RSA PKCS#1 v1.5 or RSA-PSS. Any failure is `false`.
pub fn verify_digest_signature(cert: &X509Ref, digest: &[u8], signature: &[u8]) -> bool {
    use openssl::pkey::Id;
    use openssl::pkey_ctx::PkeyCtx;
    use openssl::rsa::Padding;
    let Ok(key) = cert.public_key() else {
        return false;
    };
    let paddings: &[Option<Padding>] = if key.id() == Id::RSA {
        &[Some(Padding::PKCS1), Some(Padding::PKCS1_PSS)]
    } else {
        &[None]
    };
    paddings.iter().any(|padding| {
        let attempt = || -> Result<bool, openssl::error::ErrorStack> {
            let mut ctx = PkeyCtx::new(&key)?;
            ctx.verify_init()?;
            ctx.set_signature_md(openssl::md::Md::sha256())?;
            if let Some(p) = padding {
                ctx.set_rsa_padding(*p)?;
                if *p == Padding::PKCS1_PSS {
                    ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::custom(-2))?;
                }
            }
            ctx.verify(digest, signature)
        };
        attempt().unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_like_openssl_pem() {
        let pki = crate::testpki::Pki::generate().unwrap();
        let pem = pki.secc_chain_pem();
        let (ours, others) = parse_pem_certificates(pem.as_bytes()).unwrap();
        let openssl = X509::stack_from_pem(pem.as_bytes()).unwrap();
        assert_eq!(others, 0);
        let der = |v: &[X509]| v.iter().map(|c| c.to_der().unwrap()).collect::<Vec<_>>();
        assert_eq!(der(&ours), der(&openssl));
        // CRLF line ends and text around the blocks.
        let crlf = format!("junk\r\n{}\r\ntrailer", pem.replace('\n', "\r\n"));
        assert_eq!(
            der(&parse_pem_certificates(crlf.as_bytes()).unwrap().0),
            der(&openssl)
        );
        // A block whose base64 is broken is refused, not half read.
        let broken = pem.replacen("MII", "M!I", 1);
        assert!(parse_pem_certificates(broken.as_bytes()).is_err());
    }
}
