//! OCSP responses as UpdateOcspCache gets them: base64 text, decoded and
//! checked against a certificate and its issuer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static PKI: OnceLock<evsec::testpki::Pki> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let pki = PKI.get_or_init(|| evsec::testpki::Pki::generate().expect("test PKI"));
    let text = String::from_utf8_lossy(data);
    let der = evsec::x509::decode_base64(&text).unwrap_or_else(|| data.to_vec());
    let _ = evsec::x509::check_ocsp_response(&der, &pki.secc_leaf.cert, &pki.cpo_sub2.cert);
});
