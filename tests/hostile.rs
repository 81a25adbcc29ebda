//! Hostile input, method by method: every case has a defined answer (a
//! result value or `InvalidArgs`), the daemon still answers afterwards, and
//! the store stays byte-identical.

mod common;

use std::time::Duration;

use common::{client, tree_contents, Daemon, PrivateBus, TempStore};
use evsec::dbus::{Client, ClientError};
use evsec::testpki::{issue, issue_with_key, CertSpec, Issued, Pki};

/// What a call answered, reduced to something a table can expect.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Value(String),
    InvalidArgs,
}

fn answer<T: ToString>(r: Result<T, ClientError>) -> Answer {
    match r {
        Ok(v) => Answer::Value(v.to_string()),
        Err(ClientError::Method { name, .. })
            if name == "org.freedesktop.DBus.Error.InvalidArgs" =>
        {
            Answer::InvalidArgs
        }
        Err(e) => panic!("undefined answer: {e}"),
    }
}

fn v(s: &str) -> Answer {
    Answer::Value(s.to_owned())
}

/// Printable noise, as a hostile client would send.
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b' ' + (x % 95) as u8)
        })
        .collect()
}

/// A leaf with this serial and no extensions, which RFC 5280 and
/// `X509_STRICT` refuse in a chain (`InvalidChain`), whatever the serial.
fn with_serial(hex: &str, issuer: &Issued) -> String {
    let mut spec = CertSpec::leaf("odd serial");
    spec.serial = 1;
    let leaf = issue(&spec, Some(issuer)).unwrap();
    // Re-sign with the wanted serial through the builder API.
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let bn = openssl::bn::BigNum::from_hex_str(hex).unwrap();
    b.set_serial_number(&openssl::asn1::Asn1Integer::from_bn(&bn).unwrap())
        .unwrap();
    b.set_subject_name(leaf.cert.subject_name()).unwrap();
    b.set_issuer_name(issuer.cert.subject_name()).unwrap();
    b.set_pubkey(&leaf.key).unwrap();
    b.set_not_before(leaf.cert.not_before()).unwrap();
    b.set_not_after(leaf.cert.not_after()).unwrap();
    b.sign(&issuer.key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_hostile_input_and_the_store_stays_as_it_was() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&store.write_config(""), &bus);
    let c: Client = client(&bus).await;
    let dir = store.dir.path();
    let before = tree_contents(&store.certs);

    let root = pki.mo_root.pem();
    let truncated = root[..root.len() / 2].to_owned();
    let bad_base64 = root.replacen("MII", "M!I", 1);
    // D-Bus strings cannot hold NUL: a bus drops a client that sends one.
    let der = String::from_utf8_lossy(&pki.mo_root.cert.to_der().unwrap()).replace('\0', "");
    let thousand: String = std::iter::repeat_n(pki.mo_root.pem(), 1000).collect();
    let near_limit = "A".repeat(60_000);
    let over_limit = "A".repeat(1 << 20);
    // A chain 50 deep, issuer cycles, odd serials.
    let mut deep = vec![pki.v2g_root.clone()];
    for i in 0..50 {
        let next = issue(&CertSpec::ca(&format!("Deep {i}"), None), deep.last()).unwrap();
        deep.push(next);
    }
    let deep_chain: String = deep.iter().rev().map(Issued::pem).collect();
    let key_a = pki.mo_root.key.clone();
    let key_b = pki.mf_root.key.clone();
    let a0 = issue_with_key(&CertSpec::ca("Cycle A", None), None, key_a.clone()).unwrap();
    let b = issue_with_key(&CertSpec::ca("Cycle B", None), Some(&a0), key_b).unwrap();
    let a = issue_with_key(&CertSpec::ca("Cycle A", None), Some(&b), key_a).unwrap();
    let cycle = a.pem() + &b.pem();
    let zero_serial = with_serial("0", &pki.cpo_sub2);
    let negative_serial = with_serial("-1F", &pki.cpo_sub2);
    let long_serial = with_serial(&"7F".repeat(24), &pki.cpo_sub2);
    let big_subject = {
        let mut spec = CertSpec::leaf("x");
        spec.cn = "y".repeat(64);
        let mut chain = issue(&spec, Some(&pki.cpo_sub2)).unwrap().pem();
        while chain.len() < 66_000 {
            chain += &pki.cpo_sub2.pem();
        }
        chain
    };
    let fifo = dir.join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink("/nonexistent/x", &dangling).unwrap();
    let sig = openssl::base64::encode_block(b"not a signature");
    let hash = |a: &str, n: &str, k: &str, s: &str| evsec::dbus::WireHashData {
        hash_algorithm: a.to_owned(),
        issuer_name_hash: n.to_owned(),
        issuer_key_hash: k.to_owned(),
        serial_number: s.to_owned(),
    };
    let h64 = "ab".repeat(32);

    let mut cases: Vec<(String, Answer, Answer)> = Vec::new();
    macro_rules! case {
        ($name:expr, $call:expr, $expected:expr) => {
            cases.push(($name.to_string(), answer($call.await), $expected));
        };
    }
    // InstallCaCertificate
    case!(
        "install: empty",
        c.install_ca_certificate("", "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: noise",
        c.install_ca_certificate(&noise(5000, 1), "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: near the limit",
        c.install_ca_certificate(&near_limit, "MO"),
        v("InvalidFormat")
    );
    let near_bus_limit = "A".repeat(30 << 20);
    case!(
        "install: 30 MiB, near the system bus limit",
        c.install_ca_certificate(&near_bus_limit, "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: 1 MiB",
        c.install_ca_certificate(&over_limit, "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: truncated PEM",
        c.install_ca_certificate(&truncated, "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: bad base64",
        c.install_ca_certificate(&bad_base64, "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: DER",
        c.install_ca_certificate(&der, "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: 1000 certificates",
        c.install_ca_certificate(&thousand, "MO"),
        v("InvalidFormat")
    );
    case!(
        "install: cycle",
        c.install_ca_certificate(&a.pem(), "MO"),
        v("NoRootCertificateInstalled")
    );
    case!(
        "install: bad type",
        c.install_ca_certificate(&root, ""),
        Answer::InvalidArgs
    );
    // UpdateLeafCertificate
    case!(
        "leaf: empty",
        c.update_leaf_certificate("", "V2G"),
        v("InvalidFormat")
    );
    case!(
        "leaf: noise",
        c.update_leaf_certificate(&noise(3000, 2), "V2G"),
        v("InvalidFormat")
    );
    case!(
        "leaf: 50 deep",
        c.update_leaf_certificate(&deep_chain, "V2G"),
        v("InvalidFormat")
    );
    case!(
        "leaf: zero serial, no key",
        c.update_leaf_certificate(&zero_serial, "V2G"),
        v("InvalidCertificateChain")
    );
    case!(
        "leaf: 1 MiB",
        c.update_leaf_certificate(&over_limit, "V2G"),
        v("InvalidFormat")
    );
    // VerifyCertificate
    case!(
        "verify: empty",
        c.verify_certificate("", &["V2G"]),
        v("Unknown")
    );
    case!(
        "verify: noise",
        c.verify_certificate(&noise(5000, 3), &["V2G"]),
        v("Unknown")
    );
    case!(
        "verify: truncated",
        c.verify_certificate(&truncated, &["MO"]),
        v("Unknown")
    );
    case!(
        "verify: 50 deep",
        c.verify_certificate(&deep_chain, &["V2G"]),
        v("InvalidChain")
    );
    case!(
        "verify: cycle",
        c.verify_certificate(&cycle, &["MO", "V2G"]),
        v("IssuerNotFound")
    );
    case!(
        "verify: serial 0",
        c.verify_certificate(&zero_serial, &["V2G"]),
        v("InvalidChain")
    );
    case!(
        "verify: negative serial",
        c.verify_certificate(&negative_serial, &["V2G"]),
        v("InvalidChain")
    );
    case!(
        "verify: 24-byte serial",
        c.verify_certificate(&long_serial, &["V2G"]),
        v("InvalidChain")
    );
    case!(
        "verify: 64 KiB of subject and chain",
        c.verify_certificate(&big_subject, &["V2G"]),
        v("Unknown")
    );
    case!(
        "verify: no types",
        c.verify_certificate(&root, &[]),
        v("IssuerNotFound")
    );
    case!(
        "verify: empty type",
        c.verify_certificate(&root, &[""]),
        Answer::InvalidArgs
    );
    // DeleteCertificate
    case!(
        "delete: empty fields",
        c.delete_certificate(&hash("", "", "", "")),
        Answer::InvalidArgs
    );
    case!(
        "delete: non-hex",
        c.delete_certificate(&hash("SHA256", &"zz".repeat(32), &h64, "1")),
        Answer::InvalidArgs
    );
    case!(
        "delete: overlong",
        c.delete_certificate(&hash("SHA256", &h64, &h64, &"1".repeat(200))),
        Answer::InvalidArgs
    );
    case!(
        "delete: SHA1",
        c.delete_certificate(&hash("SHA1", &h64, &h64, "1")),
        Answer::InvalidArgs
    );
    case!(
        "delete: unknown",
        c.delete_certificate(&hash("SHA512", &h64.repeat(2), &h64.repeat(2), "0")),
        v("NotFound")
    );
    // GetInstalledCertificates, IsCaCertificateInstalled, GetVerify*
    case!(
        "installed: bad type",
        async {
            c.get_installed_certificates(&["", &"x".repeat(10_000)])
                .await
                .map(|r| r.0)
        },
        Answer::InvalidArgs
    );
    case!(
        "is installed: lower case",
        c.is_ca_certificate_installed("v2g"),
        Answer::InvalidArgs
    );
    case!(
        "verify file: noise",
        c.get_verify_file(&noise(100, 4)),
        Answer::InvalidArgs
    );
    case!(
        "verify location: empty",
        c.get_verify_location(""),
        Answer::InvalidArgs
    );
    // OCSP
    case!(
        "mo ocsp: noise",
        async {
            c.get_mo_ocsp_request_data(&noise(4000, 5))
                .await
                .map(|r| r.len())
        },
        v("0")
    );
    case!(
        "mo ocsp: 1 MiB",
        async {
            c.get_mo_ocsp_request_data(&over_limit)
                .await
                .map(|r| r.len())
        },
        v("0")
    );
    case!(
        "ocsp update: empty",
        c.update_ocsp_cache(&hash("SHA256", &h64, &h64, "1"), ""),
        v("InvalidFormat")
    );
    case!(
        "ocsp update: noise",
        c.update_ocsp_cache(&hash("SHA256", &h64, &h64, "1"), &noise(2000, 6)),
        v("InvalidFormat")
    );
    case!(
        "ocsp update: 1 MiB",
        c.update_ocsp_cache(&hash("SHA256", &h64, &h64, "1"), &over_limit),
        v("InvalidFormat")
    );
    // CSR (refusals only: an accepted CSR writes a key)
    case!(
        "csr: empty",
        async {
            c.generate_certificate_signing_request("V2G", "", "", "", false)
                .await
                .map(|r| r.0)
        },
        Answer::InvalidArgs
    );
    case!(
        "csr: long CN",
        async {
            c.generate_certificate_signing_request("V2G", "DE", "O", &"x".repeat(70_000), false)
                .await
                .map(|r| r.0)
        },
        Answer::InvalidArgs
    );
    case!(
        "csr: MO",
        async {
            c.generate_certificate_signing_request("MO", "DE", "O", "CN", false)
                .await
                .map(|r| r.0)
        },
        v("InvalidRequestedType")
    );
    case!(
        "csr: tpm",
        async {
            c.generate_certificate_signing_request("V2G", "DE", "O", "CN", true)
                .await
                .map(|r| r.0)
        },
        v("KeyGenError")
    );
    // Leaf info
    case!(
        "info: bad encoding",
        async {
            c.get_leaf_certificate_info("V2G", "pem", false)
                .await
                .map(|r| r.0)
        },
        Answer::InvalidArgs
    );
    case!(
        "all info: bad type",
        async {
            c.get_all_valid_certificates_info("EV", "PEM", false)
                .await
                .map(|r| r.0)
        },
        Answer::InvalidArgs
    );
    case!("expiry: MF", c.get_leaf_expiry_days_count("MF"), v("0"));
    // VerifyFileSignature: never hangs, never errors.
    let mf = pki.mf_root.pem();
    for (name, path) in [
        ("FIFO", fifo.to_str().unwrap().to_owned()),
        ("/dev/zero", "/dev/zero".to_owned()),
        ("directory", dir.to_str().unwrap().to_owned()),
        ("dangling symlink", dangling.to_str().unwrap().to_owned()),
        ("relative", "fifo".to_owned()),
        ("64 KiB path", format!("/{}", "a/".repeat(32_000))),
        ("empty", String::new()),
    ] {
        let call = tokio::time::timeout(
            Duration::from_secs(10),
            c.verify_file_signature(&path, &mf, &sig),
        );
        case!(
            format!("file signature: {name}"),
            async { call.await.expect("no hang") },
            v("false")
        );
    }
    case!(
        "file signature: bad base64",
        c.verify_file_signature("/etc/hostname", &mf, "%%%"),
        v("false")
    );
    case!(
        "file signature: bad certificate",
        c.verify_file_signature("/etc/hostname", "x", &sig),
        v("false")
    );

    let wrong: Vec<String> = cases
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name}: got {got:?}, expected {want:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    println!("{} hostile cases answered as defined", cases.len());

    // The daemon still answers, and nothing in the store changed.
    assert_eq!(
        c.verify_certificate(&pki.secc_chain_pem(), &["V2G"])
            .await
            .unwrap(),
        "Valid"
    );
    assert_eq!(tree_contents(&store.certs), before);
    // Caller-chosen paths are cut short in the log, and a burst of failed
    // file checks is held back after the first lines.
    for _ in 0..30 {
        c.verify_file_signature("/nonexistent", &mf, &sig)
            .await
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = daemon.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "a log line of {longest} bytes");
    let checks = log
        .lines()
        .filter(|l| l.contains("file signature not checked"))
        .count();
    assert_eq!(checks, 20, "{log}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_rejected_large_calls_does_not_grow_memory() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;
    let big = "A".repeat(1 << 20);
    let calls: usize = std::env::var("EVSEC_FLOOD_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Warm up, so that buffers and threads that stay are counted in both.
    for _ in 0..200 {
        assert!(matches!(
            answer(c.install_ca_certificate(&big, "MO").await),
            Answer::Value(ref r) if r == "InvalidFormat"
        ));
    }
    let before = rss_kib(daemon.child.id());
    for _ in 0..calls {
        assert!(matches!(
            answer(c.install_ca_certificate(&big, "MO").await),
            Answer::Value(ref r) if r == "InvalidFormat"
        ));
    }
    let after = rss_kib(daemon.child.id());
    println!("RSS before {calls} rejected 1 MiB calls: {before} KiB, after: {after} KiB");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(c.is_ca_certificate_installed("MO").await.unwrap());
}
