//! Hash data: parsing any four strings, and matching what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fields: Vec<&str> = text.splitn(4, '\n').collect();
    let [alg, name, key, serial] = fields[..] else { return };
    if let Ok(hash) = evsec::types::HashData::parse(alg, name, key, serial) {
        let (a, n, k, s) = hash.to_wire();
        // What was accepted is canonical: parsing it again changes nothing.
        assert_eq!(evsec::types::HashData::parse(&a, &n, &k, &s).as_ref(), Ok(&hash));
        assert_eq!(n, n.to_ascii_lowercase());
        assert!(!s.starts_with('0') || s == "0");
    }
});
