//! The RFC 5280 rules that OpenSSL does not enforce, even with
//! `X509_STRICT`, checked on a path OpenSSL has accepted.
//!
//! Measured on x509-limbo (`tests/limbo.rs`): each rule here turns a case
//! that OpenSSL accepts into the rejection the RFC requires.

use foreign_types_shared::ForeignTypeRef;
use openssl::nid::Nid;
use openssl::x509::{X509Ref, X509};

/// Why a certificate of an accepted path breaks RFC 5280.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Position in the path: 0 is the leaf.
    pub depth: usize,
    /// What is wrong, as a sentence.
    pub reason: String,
}

/// Checks every certificate of `path` (leaf first, trust anchor last).
///
/// The anchor's own encoding is the operator's choice (real roots have
/// serial 0), so it is held only to the rules about what it imposes on the
/// path: its extensions, and an AKI when it is cross-signed. A leaf that is
/// itself trusted is still a leaf, held to every rule.
pub fn check_path(path: &[X509]) -> Result<(), Violation> {
    let anchor = path.len().saturating_sub(1);
    for (depth, cert) in path.iter().enumerate() {
        let violation = |reason: String| Violation { depth, reason };
        if depth == 0 || depth < anchor {
            check_serial(cert).map_err(violation)?;
            check_alt_names(cert).map_err(violation)?;
        }
        check_extensions(cert).map_err(violation)?;
    }
    Ok(())
}

/// 4.1.2.2: a positive integer of at most 20 octets.
fn check_serial(cert: &X509Ref) -> Result<(), String> {
    let serial = cert
        .serial_number()
        .to_bn()
        .map_err(|e| format!("unreadable serial number: {e}"))?;
    if serial.is_negative() || serial.num_bits() == 0 {
        return Err("the serial number is not positive".to_owned());
    }
    // DER adds a leading zero octet when the top bit is set.
    let octets = serial.num_bits() / 8 + 1;
    if octets > 20 {
        return Err(format!("the serial number has {octets} octets, over 20"));
    }
    Ok(())
}

/// An extension of `cert`: its criticality and its DER value.
pub(crate) fn extension(cert: &X509Ref, nid: Nid) -> Option<(bool, &[u8])> {
    // SAFETY: the extension and its data belong to `cert`, which outlives
    // the returned slice; the pointers are checked for null.
    unsafe {
        let x = cert.as_ptr();
        let index = openssl_sys::X509_get_ext_by_NID(x, nid.as_raw(), -1);
        if index < 0 {
            return None;
        }
        let ext = openssl_sys::X509_get_ext(x, index);
        if ext.is_null() {
            return None;
        }
        let critical = openssl_sys::X509_EXTENSION_get_critical(ext) == 1;
        let data = openssl_sys::X509_EXTENSION_get_data(ext);
        if data.is_null() {
            return None;
        }
        let bytes = openssl_sys::ASN1_STRING_get0_data(data as *const _);
        let len = usize::try_from(openssl_sys::ASN1_STRING_length(data as *const _)).ok()?;
        if bytes.is_null() {
            return None;
        }
        Some((critical, std::slice::from_raw_parts(bytes, len)))
    }
}

fn check_extensions(cert: &X509Ref) -> Result<(), String> {
    // 4.2.1.1: every certificate but a self-issued one names its issuer's
    // key. OpenSSL checks this below the anchor only.
    let self_issued =
        cert.subject_name().try_cmp(cert.issuer_name()).ok() == Some(std::cmp::Ordering::Equal);
    if !self_issued && extension(cert, Nid::AUTHORITY_KEY_IDENTIFIER).is_none() {
        return Err("the certificate has no authority key identifier".to_owned());
    }
    // 4.2.1.12: KeyPurposeId SIZE (1..MAX); an empty SEQUENCE is 30 00.
    if let Some((_, b"\x30\x00")) = extension(cert, Nid::EXT_KEY_USAGE) {
        return Err("the extended key usage extension is empty".to_owned());
    }
    // 4.2.1.10: only in CA certificates, and always critical.
    if let Some((critical, _)) = extension(cert, Nid::NAME_CONSTRAINTS) {
        if !is_ca(cert) {
            return Err("an end-entity certificate carries name constraints".to_owned());
        }
        if !critical {
            return Err("the name constraints extension is not critical".to_owned());
        }
        check_dns_constraints(cert)?;
    }
    // 4.2.1.11: conforming CAs MUST mark it critical.
    if let Some((false, _)) = extension(cert, Nid::POLICY_CONSTRAINTS) {
        return Err("the policy constraints extension is not critical".to_owned());
    }
    Ok(())
}

mod ffi {
    /// `GENERAL_SUBTREE` of `x509v3.h`.
    #[repr(C)]
    pub struct GeneralSubtree {
        pub base: *mut openssl_sys::GENERAL_NAME,
        pub minimum: *mut openssl_sys::ASN1_INTEGER,
        pub maximum: *mut openssl_sys::ASN1_INTEGER,
    }

    /// `NAME_CONSTRAINTS` of `x509v3.h`: two `STACK_OF(GENERAL_SUBTREE)`.
    #[repr(C)]
    pub struct NameConstraints {
        pub permitted: *mut openssl_sys::OPENSSL_STACK,
        pub excluded: *mut openssl_sys::OPENSSL_STACK,
    }

    extern "C" {
        pub fn NAME_CONSTRAINTS_free(constraints: *mut NameConstraints);
    }
}

/// 4.2.1.10: a dNSName constraint is a DNS name: `example.com` covers the
/// host and its subdomains, and a leading period is not allowed (OpenSSL
/// reads `.example.com` as a subdomain match; the RFC does so only for
/// URIs).
fn check_dns_constraints(cert: &X509Ref) -> Result<(), String> {
    use openssl::x509::GeneralNameRef;
    let mut malformed = None;
    // SAFETY: OpenSSL decodes a fresh NAME_CONSTRAINTS that this function
    // owns and frees; its subtrees and names are read while it lives, each
    // pointer checked for null.
    unsafe {
        let constraints = openssl_sys::X509_get_ext_d2i(
            cert.as_ptr(),
            Nid::NAME_CONSTRAINTS.as_raw(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ) as *mut ffi::NameConstraints;
        if constraints.is_null() {
            return Err("the name constraints do not decode".to_owned());
        }
        for stack in [(*constraints).permitted, (*constraints).excluded] {
            if stack.is_null() {
                continue;
            }
            for i in 0..openssl_sys::OPENSSL_sk_num(stack) {
                let subtree = openssl_sys::OPENSSL_sk_value(stack, i) as *const ffi::GeneralSubtree;
                if subtree.is_null() || (*subtree).base.is_null() {
                    continue;
                }
                let name = GeneralNameRef::from_ptr((*subtree).base);
                if let Some(dns) = name.dnsname() {
                    let wildcard = dns.starts_with('*');
                    if wildcard || (!dns.is_empty() && !is_dns_name(dns)) {
                        malformed = Some(printable(dns));
                    }
                }
            }
        }
        ffi::NAME_CONSTRAINTS_free(constraints);
    }
    match malformed {
        Some(dns) => Err(format!("the DNS name constraint `{dns}` is malformed")),
        None => Ok(()),
    }
}

pub(crate) fn is_ca(cert: &X509Ref) -> bool {
    // SAFETY: reads the cached extension flags of a parsed certificate.
    let flags = unsafe { openssl_sys::X509_get_extension_flags(cert.as_ptr()) };
    flags & openssl_sys::EXFLAG_CA != 0
}

/// 4.2.1.6: dNSName in the preferred name syntax; rfc822Name a mailbox.
fn check_alt_names(cert: &X509Ref) -> Result<(), String> {
    for name in cert.subject_alt_names().iter().flatten() {
        if let Some(dns) = name.dnsname() {
            if !is_dns_name(dns) {
                return Err(format!("the DNS name `{}` is malformed", printable(dns)));
            }
        }
        if let Some(mail) = name.email() {
            if !is_mailbox(mail) {
                return Err(format!(
                    "the email address `{}` is malformed",
                    printable(mail)
                ));
            }
        }
    }
    Ok(())
}

/// Labels of letters, digits and inner hyphens, separated by single dots;
/// a leading `*.` wildcard label is accepted, as Web PKI certificates use
/// it.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `local@domain`, with one `@`, a non-empty local part and a DNS domain.
fn is_mailbox(address: &str) -> bool {
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && local.bytes().all(|b| b.is_ascii_graphic())
                && is_dns_name(domain)
        }
        None => false,
    }
}

/// A name from a certificate, shortened and without control characters,
/// for a reason an operator reads.
fn printable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{is_dns_name, is_mailbox};

    #[test]
    fn dns_names() {
        for good in [
            "example.com",
            "a-b.example",
            "*.example.com",
            "xn--bcher-kva.de",
            "localhost",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            ".example.com",
            "foo_bar.example.com",
            "a..b",
            "-a.example",
            "a-.example",
            "*.",
            "a.*.b",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn mailboxes() {
        assert!(is_mailbox("ops@example.com"));
        for bad in [
            "invalid@address@example.com",
            "@example.com",
            "ops",
            "ops@",
            "ops@.example.com",
        ] {
            assert!(!is_mailbox(bad), "{bad}");
        }
    }
}
