//! The config file: any text gets a config or a one-line error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = evsec::Config::parse(text) {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
