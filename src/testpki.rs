//! A throwaway PKI in the ISO 15118-2 shape (and the -20 one, with P-521 or
//! Ed448 keys), built with OpenSSL, for the tests, the benchmarks and the
//! demo store. Never for production use.

use std::fs;
use std::io;
use std::path::Path;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::x509::{generate_key, CsrKey};

/// What to put in a certificate.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject commonName; none when empty.
    pub cn: String,
    /// CA:TRUE, with this pathLenConstraint when `Some(Some(n))`.
    pub ca: Option<Option<u32>>,
    /// notBefore, in days from now (negative for the past).
    pub not_before_days: i64,
    /// notAfter, in days from now.
    pub not_after_days: i64,
    /// Serial number.
    pub serial: u64,
    /// Adds `DC=CPO` to the subject (ISO 15118 SECC certificates).
    pub dc_cpo: bool,
    /// An OCSP responder URL for the Authority Information Access.
    pub ocsp_url: Option<String>,
    /// A CRL distribution point URL.
    pub crl_url: Option<String>,
    /// notBefore and notAfter in seconds from now; overrides the days.
    pub valid_seconds: Option<(i64, i64)>,
    /// keyUsage as an OpenSSL config value (`critical,digitalSignature`),
    /// in place of the profile's.
    pub key_usage: Option<String>,
    /// Signed with SHA-384 instead of SHA-256.
    pub sha384: bool,
}

impl CertSpec {
    /// A CA valid from yesterday for ten years.
    pub fn ca(cn: &str, path_len: Option<u32>) -> CertSpec {
        CertSpec {
            cn: cn.to_owned(),
            ca: Some(path_len),
            not_before_days: -1,
            not_after_days: 3650,
            serial: next_serial(),
            dc_cpo: false,
            ocsp_url: None,
            crl_url: None,
            valid_seconds: None,
            key_usage: None,
            sha384: false,
        }
    }

    /// A leaf valid from yesterday for a year.
    pub fn leaf(cn: &str) -> CertSpec {
        CertSpec {
            cn: cn.to_owned(),
            ca: None,
            not_before_days: -1,
            not_after_days: 365,
            serial: next_serial(),
            dc_cpo: false,
            ocsp_url: None,
            crl_url: None,
            valid_seconds: None,
            key_usage: None,
            sha384: false,
        }
    }

    /// An SECC leaf (`DC=CPO`) valid from yesterday for a year.
    pub fn secc(cn: &str) -> CertSpec {
        CertSpec {
            dc_cpo: true,
            ..CertSpec::leaf(cn)
        }
    }

    /// The same with an OCSP responder URL.
    pub fn ocsp(mut self, url: &str) -> CertSpec {
        self.ocsp_url = Some(url.to_owned());
        self
    }

    /// The same with a CRL distribution point.
    pub fn crl(mut self, url: &str) -> CertSpec {
        self.crl_url = Some(url.to_owned());
        self
    }

    /// The same with a validity window in seconds from now.
    pub fn valid_for_seconds(mut self, not_before: i64, not_after: i64) -> CertSpec {
        self.valid_seconds = Some((not_before, not_after));
        self
    }

    /// The same with another validity window.
    pub fn valid(mut self, not_before_days: i64, not_after_days: i64) -> CertSpec {
        self.not_before_days = not_before_days;
        self.not_after_days = not_after_days;
        self
    }
}

fn next_serial() -> u64 {
    let mut b = [0u8; 8];
    let _ = openssl::rand::rand_bytes(&mut b);
    u64::from_le_bytes(b) >> 2 | 1 << 40
}

/// A certificate with its private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

impl Issued {
    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().unwrap_or_default()).unwrap_or_default()
    }

    /// The private key as unencrypted PKCS#8 PEM.
    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().unwrap_or_default()
    }
}

fn days(d: i64) -> Result<Asn1Time, ErrorStack> {
    Asn1Time::from_unix(crate::x509::now() + d * 86_400)
}

/// Issues a certificate for `spec` with a fresh P-256 key, signed by
/// `issuer`, or self-signed when `issuer` is `None`.
pub fn issue(spec: &CertSpec, issuer: Option<&Issued>) -> Result<Issued, ErrorStack> {
    issue_with_key(spec, issuer, generate_key(CsrKey::P256)?)
}

/// As [`issue`], with a given key.
pub fn issue_with_key(
    spec: &CertSpec,
    issuer: Option<&Issued>,
    key: PKey<Private>,
) -> Result<Issued, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COUNTRYNAME, "DE")?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "evsec test")?;
    if !spec.cn.is_empty() {
        name.append_entry_by_nid(Nid::COMMONNAME, &spec.cn)?;
    }
    if spec.dc_cpo {
        name.append_entry_by_text("DC", "CPO")?;
    }
    let name = name.build();
    let (issuer_name, signer, issuer_cert) = match issuer {
        Some(i) => (i.cert.subject_name(), &i.key, Some(i.cert.as_ref())),
        None => (name.as_ref(), &key, None),
    };
    let cert = build(spec, &name, issuer_name, &key, signer, issuer_cert)?;
    Ok(Issued { cert, key })
}

/// Signs a CSR as `issuer`: the CSR's subject and public key, with the
/// validity and extensions of `spec`.
pub fn sign_csr(csr_pem: &str, spec: &CertSpec, issuer: &Issued) -> Result<X509, ErrorStack> {
    let req = openssl::x509::X509Req::from_pem(csr_pem.as_bytes())?;
    let key = req.public_key()?;
    build(
        spec,
        req.subject_name(),
        issuer.cert.subject_name(),
        &key,
        &issuer.key,
        Some(&issuer.cert),
    )
}

fn build<T: openssl::pkey::HasPublic>(
    spec: &CertSpec,
    subject: &openssl::x509::X509NameRef,
    issuer_name: &openssl::x509::X509NameRef,
    key: &PKey<T>,
    signer: &PKey<Private>,
    issuer_cert: Option<&openssl::x509::X509Ref>,
) -> Result<X509, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = BigNum::from_dec_str(&spec.serial.to_string())?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer_name)?;
    b.set_pubkey(key)?;
    let (not_before, not_after) = match spec.valid_seconds {
        Some((from, until)) => (
            Asn1Time::from_unix(crate::x509::now() + from)?,
            Asn1Time::from_unix(crate::x509::now() + until)?,
        ),
        None => (days(spec.not_before_days)?, days(spec.not_after_days)?),
    };
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let mut bc = BasicConstraints::new();
    bc.critical();
    if let Some(path_len) = spec.ca {
        bc.ca();
        if let Some(n) = path_len {
            bc.pathlen(n);
        }
    }
    b.append_extension(bc.build()?)?;
    #[allow(deprecated)]
    let ku = if let Some(usage) = &spec.key_usage {
        // As for AIA below: the config-string constructor takes any usage.
        openssl::x509::X509Extension::new_nid(None, None, Nid::KEY_USAGE, usage)?
    } else if spec.ca.is_some() {
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?
    } else if key.id() == openssl::pkey::Id::EC {
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_agreement()
            .build()?
    } else {
        KeyUsage::new().critical().digital_signature().build()?
    };
    b.append_extension(ku)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer_cert, None))?;
    b.append_extension(ski)?;
    if issuer_cert.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(issuer_cert, None))?;
        b.append_extension(aki)?;
    }
    if let Some(url) = &spec.ocsp_url {
        // The crate has no builder for Authority Information Access; the
        // config-string constructor is the way to make one.
        #[allow(deprecated)]
        let aia = openssl::x509::X509Extension::new_nid(
            None,
            None,
            Nid::INFO_ACCESS,
            &format!("OCSP;URI:{url}"),
        )?;
        b.append_extension(aia)?;
    }
    // The signer's key decides the digest, as ISO 15118 pairs them: EdDSA
    // takes none, P-521 signs with SHA-512.
    let signer_curve = signer.ec_key().ok().and_then(|k| k.group().curve_name());
    if let Some(url) = &spec.crl_url {
        // As for AIA: the config-string constructor is the way.
        #[allow(deprecated)]
        let crl = openssl::x509::X509Extension::new_nid(
            None,
            None,
            Nid::CRL_DISTRIBUTION_POINTS,
            &format!("URI:{url}"),
        )?;
        b.append_extension(crl)?;
    }
    let digest = if signer.id() == openssl::pkey::Id::ED448 {
        MessageDigest::null()
    } else if signer_curve == Some(Nid::SECP521R1) {
        MessageDigest::sha512()
    } else if spec.sha384 {
        MessageDigest::sha384()
    } else {
        MessageDigest::sha256()
    };
    b.sign(signer, digest)?;
    Ok(b.build())
}

/// A copy of `cert` whose signature no longer verifies.
pub fn tampered(cert: &X509) -> Result<X509, ErrorStack> {
    let mut der = cert.to_der()?;
    if let Some(last) = der.last_mut() {
        *last ^= 0x01;
    }
    X509::from_der(&der)
}

/// The ISO 15118-2 test PKI and the other domains' roots.
#[derive(Clone)]
pub struct Pki {
    /// V2G root.
    pub v2g_root: Issued,
    /// CPO Sub-CA 1 (pathlen 1).
    pub cpo_sub1: Issued,
    /// CPO Sub-CA 2 (pathlen 0).
    pub cpo_sub2: Issued,
    /// SECC leaf, DC=CPO.
    pub secc_leaf: Issued,
    /// Mobility operator root.
    pub mo_root: Issued,
    /// CSMS root.
    pub csms_root: Issued,
    /// The station's OCPP client certificate, under the CSMS root.
    pub csms_leaf: Issued,
    /// Manufacturer root.
    pub mf_root: Issued,
}

impl Pki {
    /// The OCSP responder URL of the CPO Sub-CAs and the SECC leaf.
    pub const OCSP_URL: &'static str = "http://ocsp.cpo.test/";

    /// Generates a fresh PKI.
    pub fn generate() -> Result<Pki, ErrorStack> {
        let v2g_root = issue(&CertSpec::ca("V2G Root CA", None), None)?;
        let cpo_sub1 = issue(
            &CertSpec::ca("CPO Sub-CA 1", Some(1)).ocsp(Self::OCSP_URL),
            Some(&v2g_root),
        )?;
        let cpo_sub2 = issue(
            &CertSpec::ca("CPO Sub-CA 2", Some(0)).ocsp(Self::OCSP_URL),
            Some(&cpo_sub1),
        )?;
        let secc_leaf = issue(
            &CertSpec::secc("SECC-0001").ocsp(Self::OCSP_URL),
            Some(&cpo_sub2),
        )?;
        let csms_root = issue(&CertSpec::ca("CSMS Root CA", None), None)?;
        Ok(Pki {
            csms_leaf: issue(&CertSpec::leaf("CS-0001"), Some(&csms_root))?,
            mo_root: issue(&CertSpec::ca("MO Root CA", None), None)?,
            mf_root: issue(&CertSpec::ca("MF Root CA", None), None)?,
            v2g_root,
            cpo_sub1,
            cpo_sub2,
            secc_leaf,
            csms_root,
        })
    }

    /// The SECC chain as sent by a CSMS: leaf, Sub-CA 2, Sub-CA 1.
    pub fn secc_chain_pem(&self) -> String {
        [&self.secc_leaf, &self.cpo_sub2, &self.cpo_sub1]
            .iter()
            .map(|i| i.pem())
            .collect()
    }

    /// Writes an EVerest certificate tree under `certs_dir` with the default
    /// layout: file bundles holding the roots (the V2G bundle also holds the
    /// Sub-CAs), the SECC leaf with its chain file and key in `client/cso`,
    /// and the CSMS leaf with its key in `client/csms`. Keys are mode 0600.
    pub fn write_everest_tree(&self, certs_dir: &Path) -> io::Result<()> {
        let write = |rel: &str, data: &[u8], mode: u32| -> io::Result<()> {
            let path = certs_dir.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            crate::store::atomic_write(&path, data, mode)
        };
        let v2g: String = [&self.v2g_root, &self.cpo_sub1, &self.cpo_sub2]
            .iter()
            .map(|i| i.pem())
            .collect();
        write("ca/v2g/V2G_ROOT_CA.pem", v2g.as_bytes(), 0o644)?;
        write("ca/mo/MO_ROOT_CA.pem", self.mo_root.pem().as_bytes(), 0o644)?;
        write(
            "ca/csms/CSMS_ROOT_CA.pem",
            self.csms_root.pem().as_bytes(),
            0o644,
        )?;
        write("ca/mf/MF_ROOT_CA.pem", self.mf_root.pem().as_bytes(), 0o644)?;
        write(
            "client/cso/SECC_LEAF.pem",
            self.secc_leaf.pem().as_bytes(),
            0o644,
        )?;
        write(
            "client/cso/CPO_CERT_SECC_LEAF_CHAIN.pem",
            self.secc_chain_pem().as_bytes(),
            0o644,
        )?;
        write("client/cso/SECC_LEAF.key", &self.secc_leaf.key_pem(), 0o600)?;
        write(
            "client/csms/CSMS_LEAF.pem",
            self.csms_leaf.pem().as_bytes(),
            0o644,
        )?;
        write(
            "client/csms/CSMS_LEAF.key",
            &self.csms_leaf.key_pem(),
            0o600,
        )?;
        Ok(())
    }
}

/// The ISO 15118-20 test PKI, all of one key kind: a V2G root with two CPO
/// Sub-CAs, a SECC leaf, and the vehicle side of mutual TLS (an OEM root, an
/// OEM Sub-CA and a vehicle leaf), plus a vehicle of an OEM the station does
/// not know.
#[derive(Clone)]
pub struct Pki20 {
    /// V2G root.
    pub v2g_root: Issued,
    /// CPO Sub-CA 1 (pathlen 1).
    pub cpo_sub1: Issued,
    /// CPO Sub-CA 2 (pathlen 0).
    pub cpo_sub2: Issued,
    /// SECC leaf, DC=CPO.
    pub secc_leaf: Issued,
    /// OEM root.
    pub oem_root: Issued,
    /// OEM Sub-CA, under the OEM root.
    pub oem_sub: Issued,
    /// A vehicle's certificate, under the OEM Sub-CA.
    pub vehicle: Issued,
    /// The root of an OEM the station does not know.
    pub foreign_oem_root: Issued,
    /// A vehicle of that OEM.
    pub foreign_vehicle: Issued,
}

impl Pki20 {
    /// Generates a fresh -20 PKI of `kind` keys.
    pub fn generate(kind: CsrKey) -> Result<Pki20, ErrorStack> {
        let issue20 = |spec: &CertSpec, issuer: Option<&Issued>| {
            issue_with_key(spec, issuer, generate_key(kind)?)
        };
        let v2g_root = issue20(&CertSpec::ca("V2G Root CA 20", None), None)?;
        let cpo_sub1 = issue20(&CertSpec::ca("CPO Sub-CA 1 20", Some(1)), Some(&v2g_root))?;
        let cpo_sub2 = issue20(&CertSpec::ca("CPO Sub-CA 2 20", Some(0)), Some(&cpo_sub1))?;
        let secc_leaf = issue20(&CertSpec::secc("SECC-20-0001"), Some(&cpo_sub2))?;
        let oem_root = issue20(&CertSpec::ca("OEM Root CA", None), None)?;
        let oem_sub = issue20(&CertSpec::ca("OEM Sub-CA", Some(0)), Some(&oem_root))?;
        let vehicle = issue20(&CertSpec::leaf("VEHICLE-0001"), Some(&oem_sub))?;
        let foreign_oem_root = issue20(&CertSpec::ca("Other OEM Root CA", None), None)?;
        let foreign_vehicle = issue20(&CertSpec::leaf("VEHICLE-9999"), Some(&foreign_oem_root))?;
        Ok(Pki20 {
            v2g_root,
            cpo_sub1,
            cpo_sub2,
            secc_leaf,
            oem_root,
            oem_sub,
            vehicle,
            foreign_oem_root,
            foreign_vehicle,
        })
    }
}
