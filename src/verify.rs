//! Path validation: OpenSSL's, made strict, with the RFC 5280 rules it
//! leaves out, inclusive notAfter, alternate paths on a budget, and a
//! reason for every verdict.

use foreign_types_shared::ForeignTypeRef;
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509NameRef, X509Ref, X509StoreContext, X509};

use crate::index::MAX_CHAIN_DEPTH;
use crate::types::CertificateValidationResult;
use crate::x509::{self, first_error, unix_time, CertFacts};

mod ffi {
    extern "C" {
        pub fn X509_STORE_CTX_get0_param(
            ctx: *mut openssl_sys::X509_STORE_CTX,
        ) -> *mut openssl_sys::X509_VERIFY_PARAM;
    }
}

/// Most alternate paths verified after the first path fails, and most
/// issuer signatures checked to find them: like rustls-webpki's budget, so
/// that no input makes path building expensive.
const MAX_ALTERNATE_PATHS: usize = 8;
const MAX_ISSUER_CHECKS: usize = 64;

/// OpenSSL 3.0's `X509_STRICT` profile errors (`x509_vfy.h`, from
/// `X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY` to
/// `X509_V_ERR_EC_KEY_EXPLICIT_PARAMS`), which openssl-sys does not name:
/// a missing AKI or SKI, empty names, non-critical CA basicConstraints and
/// the like. Like the RFC 5280 rules checked here, they break the chain.
const STRICT_PROFILE_ERRORS: std::ops::RangeInclusive<libc::c_int> = 78..=94;

/// When the leaf of a chain must be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafTime {
    /// Now: a chain checked for use (VerifyCertificate, contract 5.4).
    ValidNow,
    /// Now or from a later notBefore on: a leaf installed ahead of its use
    /// (UpdateLeafCertificate, 5.3), checked as of its notBefore.
    ValidNowOrLater,
}

/// A chain verification's result, and why.
#[derive(Debug, Clone)]
pub struct ChainVerdict {
    /// The contract's result.
    pub result: CertificateValidationResult,
    /// Why, as a sentence for an operator; empty when valid.
    pub reason: String,
    /// Position of the certificate that failed: 0 is the leaf.
    pub depth: Option<usize>,
    /// Its subject, one line.
    pub subject: Option<String>,
    /// OpenSSL's verify error code, when OpenSSL decided.
    pub openssl_error: Option<i32>,
    /// The path that was valid, leaf first and anchor last; empty on
    /// failure.
    pub path: Vec<X509>,
}

impl ChainVerdict {
    /// A verdict with no certificate named.
    pub fn new(result: CertificateValidationResult, reason: impl Into<String>) -> ChainVerdict {
        ChainVerdict {
            result,
            reason: reason.into(),
            depth: None,
            subject: None,
            openssl_error: None,
            path: Vec::new(),
        }
    }

    /// The same, naming the certificate at `depth`.
    pub fn at(mut self, depth: usize, cert: &X509Ref) -> ChainVerdict {
        self.depth = Some(depth);
        self.subject = Some(one_line_name(cert.subject_name()));
        self
    }

    fn is_valid(&self) -> bool {
        self.result == CertificateValidationResult::Valid
    }
}

/// A name as `CN=…, O=…`, for operators.
fn one_line_name(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e
                .data()
                .to_string()
                .map(|v| v.to_string())
                .unwrap_or_else(|_| "?".to_owned());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verifies `chain` (leaf first) against the trust anchors at `now`.
///
/// Every anchor is trusted as it is, self-signed or not (RFC 5280 6.1).
/// Self-signed certificates in the input are dropped, so a peer cannot
/// bring its own anchor. Every certificate of the path is checked for time,
/// unlike the reference, which stops checking once the leaf is not expired.
/// A leaf that is not yet valid is checked at its own notBefore instead, so
/// that it can be installed ahead of use. When the path OpenSSL builds
/// fails, the other paths through the chain's certificates are tried, on a
/// budget; the first failure is the answer when none is valid.
pub fn verify_chain(
    anchors: &[&CertFacts],
    chain: &[CertFacts],
    now: i64,
    leaf_time: LeafTime,
) -> ChainVerdict {
    use CertificateValidationResult as V;
    let Some(leaf) = chain.first() else {
        return ChainVerdict::new(V::Unknown, "the chain is empty");
    };
    if chain.len() > MAX_CHAIN_DEPTH {
        return ChainVerdict::new(
            V::InvalidChain,
            format!("the chain has more than {MAX_CHAIN_DEPTH} certificates"),
        );
    }
    let Some(leaf_x509) = leaf.x509() else {
        return ChainVerdict::new(V::Unknown, "the certificate cannot be read");
    };
    if leaf.not_after < now {
        return ChainVerdict::new(V::Expired, "the certificate has expired").at(0, leaf_x509);
    }
    let at = match leaf_time {
        LeafTime::ValidNow => now,
        LeafTime::ValidNowOrLater => now.max(leaf.not_before),
    };
    let internal = |e: openssl::error::ErrorStack| {
        ChainVerdict::new(
            V::Unknown,
            format!("verification failed: {}", first_error(&e)),
        )
    };
    let store = match build_store(anchors) {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let intermediates: Vec<&CertFacts> = chain.iter().skip(1).filter(|c| !c.self_signed).collect();
    let first = match judge(&store, leaf, &intermediates, at) {
        Ok(v) if v.is_valid() => return v,
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let (paths, _) = alternate_paths(leaf, &intermediates, anchors);
    for path in paths {
        if let Ok(v) = judge(&store, leaf, &path, at) {
            if v.is_valid() {
                return v;
            }
        }
    }
    first
}

fn build_store(anchors: &[&CertFacts]) -> Result<X509Store, openssl::error::ErrorStack> {
    let mut builder = X509StoreBuilder::new()?;
    for cert in anchors {
        // A duplicate is refused by OpenSSL with an error we do not care about.
        if let Some(x509) = cert.x509() {
            let _ = builder.add_cert(x509.clone());
        }
    }
    builder.set_flags(X509VerifyFlags::X509_STRICT | X509VerifyFlags::PARTIAL_CHAIN)?;
    Ok(builder.build())
}

/// One verification of `leaf` with these intermediates: OpenSSL's, then
/// [`check_path`](crate::rfc5280::check_path) on the path it built.
fn judge(
    store: &X509Store,
    leaf: &CertFacts,
    intermediates: &[&CertFacts],
    at: i64,
) -> Result<ChainVerdict, openssl::error::ErrorStack> {
    let Some(leaf_x509) = leaf.x509() else {
        return Ok(ChainVerdict::new(
            CertificateValidationResult::Unknown,
            "the certificate cannot be read",
        ));
    };
    let mut untrusted = Stack::new()?;
    for x509 in intermediates.iter().filter_map(|c| c.x509()) {
        untrusted.push(x509.clone())?;
    }
    let mut verdict = openssl_verify(store, leaf_x509, &untrusted, at)?;
    // RFC 5280 4.1.2.5: notAfter is the last valid second; OpenSSL holds
    // it expired. One second earlier decides the same, unless a notBefore
    // is that very second, which then rejects: the safe side.
    if let OpenSslVerdict::Error {
        code,
        cert: Some(cert),
        ..
    } = &verdict
    {
        if *code == openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED && unix_time(cert.not_after()) == at {
            verdict = openssl_verify(store, leaf_x509, &untrusted, at - 1)?;
        }
    }
    Ok(match verdict {
        OpenSslVerdict::Path(path) => match crate::rfc5280::check_path(&path) {
            Ok(()) => ChainVerdict {
                path,
                ..ChainVerdict::new(CertificateValidationResult::Valid, "")
            },
            Err(v) => {
                let verdict =
                    ChainVerdict::new(CertificateValidationResult::InvalidChain, v.reason);
                match path.get(v.depth) {
                    Some(cert) => verdict.at(v.depth, cert),
                    None => verdict,
                }
            }
        },
        OpenSslVerdict::Error {
            code,
            reason,
            depth,
            cert,
        } => {
            let mut verdict = ChainVerdict::new(map_verify_error(code), reason);
            verdict.openssl_error = Some(code);
            match cert {
                Some(cert) => verdict.at(depth, &cert),
                None => verdict,
            }
        }
    })
}

/// What one OpenSSL verification said: the path it built, or the error
/// with the depth and certificate it was found at.
enum OpenSslVerdict {
    Path(Vec<X509>),
    Error {
        code: i32,
        reason: String,
        depth: usize,
        cert: Option<X509>,
    },
}

fn openssl_verify(
    store: &X509Store,
    leaf: &X509Ref,
    untrusted: &StackRef<X509>,
    at: i64,
) -> Result<OpenSslVerdict, openssl::error::ErrorStack> {
    let mut ctx = X509StoreContext::new()?;
    ctx.init(store, leaf, untrusted, |ctx| {
        // SAFETY: the param belongs to the initialised context and outlives
        // this closure's use of it.
        unsafe {
            let param = ffi::X509_STORE_CTX_get0_param(ctx.as_ptr());
            if !param.is_null() {
                openssl_sys::X509_VERIFY_PARAM_set_time(param, at as libc::time_t);
            }
        }
        if ctx.verify_cert()? {
            let path = ctx
                .chain()
                .map(|chain| chain.iter().map(X509Ref::to_owned).collect())
                .unwrap_or_default();
            Ok(OpenSslVerdict::Path(path))
        } else {
            Ok(OpenSslVerdict::Error {
                code: ctx.error().as_raw(),
                reason: ctx.error().error_string().to_owned(),
                depth: usize::try_from(ctx.error_depth()).unwrap_or(0),
                cert: ctx.current_cert().map(X509Ref::to_owned),
            })
        }
    })
}

/// The intermediates of each path from `leaf` to an anchor, depth first,
/// within the budget, and the issuer checks spent. Each path is later
/// given to OpenSSL alone, so that it cannot choose another.
fn alternate_paths<'a>(
    leaf: &'a CertFacts,
    intermediates: &[&'a CertFacts],
    anchors: &[&'a CertFacts],
) -> (Vec<Vec<&'a CertFacts>>, usize) {
    struct Search<'s, 'a> {
        intermediates: &'s [&'a CertFacts],
        anchors: &'s [&'a CertFacts],
        checks: usize,
        found: Vec<Vec<&'a CertFacts>>,
    }
    impl<'a> Search<'_, 'a> {
        fn extend(&mut self, path: &mut Vec<&'a CertFacts>) {
            let Some(child) = path.last().copied() else {
                return;
            };
            if path.len() > MAX_CHAIN_DEPTH {
                return;
            }
            // Anchors first: a path ends at the first one that issued it.
            if self.anchors.iter().any(|a| self.issued(child, a)) {
                self.found.push(path[1..].to_vec());
                return;
            }
            for cert in self.intermediates {
                if self.found.len() >= MAX_ALTERNATE_PATHS {
                    return;
                }
                let fresh = !path.iter().any(|p| p.fingerprint == cert.fingerprint);
                if fresh && self.issued(child, cert) {
                    path.push(cert);
                    self.extend(path);
                    path.pop();
                }
            }
        }

        fn issued(&mut self, child: &CertFacts, issuer: &CertFacts) -> bool {
            if child.issuer_der != issuer.subject_der || self.checks >= MAX_ISSUER_CHECKS {
                return false;
            }
            self.checks += 1;
            child.is_issued_by(issuer)
        }
    }
    let mut search = Search {
        intermediates,
        anchors,
        checks: 0,
        found: Vec::new(),
    };
    search.extend(&mut vec![leaf]);
    (search.found, search.checks)
}

/// OpenSSL's verdict to the contract's, as EVerest maps it, with the
/// structural failures of a path as `InvalidChain`. Time errors are
/// `Expired` at any depth, since every certificate of the path is checked
/// for time here.
fn map_verify_error(code: libc::c_int) -> CertificateValidationResult {
    use openssl_sys as s;
    match code {
        s::X509_V_ERR_CERT_HAS_EXPIRED | s::X509_V_ERR_CERT_NOT_YET_VALID => {
            CertificateValidationResult::Expired
        }
        s::X509_V_ERR_CERT_SIGNATURE_FAILURE => CertificateValidationResult::InvalidSignature,
        s::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | s::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY => {
            CertificateValidationResult::IssuerNotFound
        }
        s::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE => {
            CertificateValidationResult::InvalidLeafSignature
        }
        s::X509_V_ERR_CERT_CHAIN_TOO_LONG
        | s::X509_V_ERR_CERT_UNTRUSTED
        | s::X509_V_ERR_PATH_LENGTH_EXCEEDED
        | s::X509_V_ERR_INVALID_CA
        | s::X509_V_ERR_KEYUSAGE_NO_CERTSIGN
        | s::X509_V_ERR_INVALID_NON_CA
        | s::X509_V_ERR_PERMITTED_VIOLATION
        | s::X509_V_ERR_EXCLUDED_VIOLATION
        | s::X509_V_ERR_SUBTREE_MINMAX
        | s::X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE
        | s::X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX
        | s::X509_V_ERR_UNSUPPORTED_NAME_SYNTAX
        | s::X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION
        | s::X509_V_ERR_INVALID_EXTENSION
        | s::X509_V_ERR_INVALID_POLICY_EXTENSION
        | s::X509_V_ERR_NO_EXPLICIT_POLICY => CertificateValidationResult::InvalidChain,
        code if STRICT_PROFILE_ERRORS.contains(&code) => CertificateValidationResult::InvalidChain,
        _ => CertificateValidationResult::Unknown,
    }
}

/// Most PEM blocks a chain argument may hold: twice the longest path
/// followed, so that a chain with a few extra certificates still parses.
pub const MAX_PEM_BLOCKS: usize = 2 * MAX_CHAIN_DEPTH;

/// Parses a chain argument, leaf first, with the number of PEM blocks that
/// are not certificates; or the verdict on text that is no chain: more PEM
/// blocks than any path (counted before anything is parsed), no
/// certificate, or a block or certificate that does not parse.
pub fn read_chain(pem: &str) -> Result<(Vec<CertFacts>, usize), ChainVerdict> {
    use CertificateValidationResult as V;
    if x509::pem_block_count(pem.as_bytes()) > MAX_PEM_BLOCKS {
        return Err(ChainVerdict::new(
            V::InvalidChain,
            format!("the chain has more than {MAX_PEM_BLOCKS} PEM blocks"),
        ));
    }
    let (certs, others) = x509::parse_pem_certificates(pem.as_bytes())
        .map_err(|e| ChainVerdict::new(V::Unknown, format!("the chain does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(ChainVerdict::new(
            V::Unknown,
            "the text holds no certificate",
        ));
    }
    let mut chain = Vec::with_capacity(certs.len());
    for (depth, cert) in certs.into_iter().enumerate() {
        match CertFacts::new(cert.clone()) {
            Ok(facts) => chain.push(facts),
            Err(e) => return Err(ChainVerdict::new(V::Unknown, e).at(depth, &cert)),
        }
    }
    Ok((chain, others))
}

#[cfg(test)]
mod tests {
    use super::{alternate_paths, verify_chain, LeafTime, MAX_ISSUER_CHECKS};
    use crate::testpki::{issue, issue_with_key, CertSpec, Issued};
    use crate::types::CertificateValidationResult as V;
    use crate::x509::CertFacts;

    /// Two names that issue each other, seven certificates each (with the
    /// leaf, a chain of the longest length taken): every certificate of one
    /// name is an issuer of every one of the other, so the paths from the
    /// leaf number 7 × 7 × 6 × 6 × … and none reaches an anchor. The search
    /// stops at its budget.
    #[test]
    fn a_mesh_of_cross_certificates_costs_the_budget_only() {
        let a = issue(&CertSpec::ca("Mesh A", None), None).unwrap();
        let b = issue(&CertSpec::ca("Mesh B", None), None).unwrap();
        let mut mesh = Vec::new();
        for _ in 0..7 {
            // Subject A with A's key, signed by B; and the converse.
            let a_by_b = issue_with_key(&CertSpec::ca("Mesh A", None), Some(&b), a.key.clone());
            let b_by_a = issue_with_key(&CertSpec::ca("Mesh B", None), Some(&a), b.key.clone());
            mesh.push(CertFacts::new(a_by_b.unwrap().cert).unwrap());
            mesh.push(CertFacts::new(b_by_a.unwrap().cert).unwrap());
        }
        let leaf: Issued = issue(&CertSpec::leaf("meshed"), Some(&a)).unwrap();
        let leaf = CertFacts::new(leaf.cert).unwrap();
        let stranger = issue(&CertSpec::ca("Stranger Root", None), None).unwrap();
        let anchor = CertFacts::new(stranger.cert).unwrap();
        let intermediates: Vec<&CertFacts> = mesh.iter().collect();
        let (paths, checks) = alternate_paths(&leaf, &intermediates, &[&anchor]);
        assert!(paths.is_empty());
        assert_eq!(checks, MAX_ISSUER_CHECKS);
        let mut chain = vec![leaf];
        chain.extend(mesh);
        let verdict = verify_chain(&[&anchor], &chain, crate::x509::now(), LeafTime::ValidNow);
        assert_eq!(verdict.result, V::IssuerNotFound);
    }
}
