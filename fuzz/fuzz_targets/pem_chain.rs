//! PEM and chain parsing: the block scanner, OpenSSL's parse, and the
//! facts computed of each certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (blocks, _) = evsec::x509::pem_blocks(data);
    for block in &blocks {
        assert!(block.range.end <= data.len());
    }
    if let Ok((certs, _)) = evsec::x509::parse_pem_certificates(data) {
        for cert in certs {
            let _ = evsec::x509::CertFacts::new(cert);
        }
    }
});
