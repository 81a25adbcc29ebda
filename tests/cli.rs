//! `evsecctl` as a process against evsecd on a private bus.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Daemon, PrivateBus, TempStore};
use evsec::testpki::{issue, CertSpec, Pki};
use evsec::types::HashAlgorithm;
use evsec::x509::CertFacts;

fn ctl(bus: &PrivateBus, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evsecctl"))
        .args(["--bus", &bus.address])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn evsecctl_commands_tables_json_and_exit_codes() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let dir = store.dir.path();
    let file = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_owned()
    };

    let (code, out, _) = ctl(&bus, &["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("certificates: 10"), "{out}");
    assert!(out.contains("  V2GRootCertificate: 3"), "{out}");
    // The leaves are valid for 365 days from their creation a moment ago:
    // 365 whole days while that second lasts, 364 after it, each on its own.
    let expiry = out
        .lines()
        .find_map(|l| l.strip_prefix("leaf expiry: "))
        .unwrap_or_default();
    let days: Vec<&str> = expiry
        .split(", ")
        .filter_map(|part| part.split(' ').nth(1))
        .collect();
    assert!(
        expiry.starts_with("CSMS ")
            && expiry.contains(", V2G ")
            && expiry.ends_with(", V2G20 0 days"),
        "{out}"
    );
    assert!(
        days.len() == 3 && days[..2].iter().all(|d| ["364", "365"].contains(d)),
        "{out}"
    );
    // The bundles' files (the empty OEM one too) and the leaves'.
    assert!(out.contains("store: 10 of 2000 files"), "{out}");

    let (code, out, _) = ctl(&bus, &["list", "V2GRootCertificate"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("TYPE") && lines[0].contains("NOT AFTER (UTC)"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].contains("V2G Root CA") && lines[1].contains("valid"),
        "{out}"
    );
    assert!(lines[0].contains(" KEY "), "{out}");
    assert!(lines[1].contains(" P256 "), "{out}");

    // One EVSE's leaf by its SECC ID.
    let (code, out, _) = ctl(&bus, &["info", "V2G", "--id", "SECC-0001"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("Accepted\n"), "{out}");
    assert!(out.contains("  common_name: SECC-0001\n"), "{out}");
    assert!(out.contains("  key_algorithm: P256\n"), "{out}");
    assert_eq!(
        ctl(&bus, &["info", "V2G20", "--id", "SECC-0001"]).1,
        "NotFound\n"
    );
    let root = CertFacts::new(pki.v2g_root.cert.clone()).unwrap();
    let h = root.hash_data(HashAlgorithm::SHA256, &root.key_bits);
    let hash = format!(
        "SHA256:{}:{}:{}",
        h.issuer_name_hash, h.issuer_key_hash, h.serial_number
    );
    assert!(lines[1].ends_with(&hash), "{out}");

    let (code, out, _) = ctl(&bus, &["--json", "list", "MORootCertificate"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["subject"], "MO Root CA");
    assert_eq!(json[0]["state"], "valid");
    assert_eq!(
        json[0]["file"],
        store.path("ca/mo/MO_ROOT_CA.pem").display().to_string()
    );

    // Installs and refusals, with their exit codes.
    let extra = issue(&CertSpec::ca("Extra MF Root", None), None).unwrap();
    let extra_file = file("extra.pem", &extra.pem());
    assert_eq!(
        ctl(&bus, &["install-ca", "MF", &extra_file]),
        (Some(0), "Accepted\n".into(), String::new())
    );
    let leaf_file = file("leaf.pem", &pki.secc_leaf.pem());
    assert_eq!(ctl(&bus, &["install-ca", "MF", &leaf_file]).0, Some(1));
    assert_eq!(
        ctl(&bus, &["install-leaf", "V2G", &leaf_file]),
        (Some(0), "Accepted\n".into(), String::new())
    );
    let (code, out, _) = ctl(&bus, &["--json", "install-ca", "MF", &leaf_file]);
    assert_eq!(code, Some(1));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["result"],
        "InvalidCertificateChain"
    );

    // Verify.
    let chain_file = file("chain.pem", &pki.secc_chain_pem());
    assert_eq!(ctl(&bus, &["verify", "V2G", &chain_file]).1, "Valid\n");
    let (code, out, _) = ctl(&bus, &["verify", "MF", "MO", &chain_file]);
    assert_eq!((code, out.as_str()), (Some(1), "IssuerNotFound\n"));
    // Why, for an operator: a leaf that expired an hour ago.
    let stale = issue(
        &CertSpec::leaf("SECC-STALE").valid_for_seconds(-30 * 86_400, -3600),
        Some(&pki.cpo_sub2),
    )
    .unwrap();
    let stale_file = file(
        "stale.pem",
        &(stale.pem() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem()),
    );
    let (code, out, _) = ctl(&bus, &["verify", "--explain", "V2G", &stale_file]);
    assert_eq!(
        (code, out.as_str()),
        (
            Some(1),
            "Expired\nreason: the certificate has expired; the chain was valid a day ago: \
             check the station's clock\nat depth 0: C=DE, O=evsec test, CN=SECC-STALE\n"
        )
    );
    let (_, json, _) = ctl(&bus, &["--json", "verify", "--explain", "V2G", &chain_file]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!({"depth": null, "openssl_error": null, "reason": "", "result": "Valid", "subject": null})
    );

    // Delete by file and by hash data.
    assert_eq!(
        ctl(&bus, &["delete", "--file", &extra_file]).1,
        "Accepted\n"
    );
    assert_eq!(
        ctl(&bus, &["delete", "--file", &extra_file]),
        (Some(1), "NotFound\n".into(), String::new())
    );
    let mo = CertFacts::new(pki.mo_root.cert.clone()).unwrap();
    let m = mo.hash_data(HashAlgorithm::SHA256, &mo.key_bits);
    let mo_hash = format!(
        "SHA256:{}:{}:{}",
        m.issuer_name_hash, m.issuer_key_hash, m.serial_number
    );
    assert_eq!(
        ctl(&bus, &["delete", &mo_hash]).1,
        format!("Accepted  {mo_hash}\n")
    );

    // Roots and expiry.
    let (code, out, _) = ctl(&bus, &["ca", "V2G"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        format!(
            "installed: yes\nverify file: {0}\nverify location: {0}\n",
            store.path("ca/v2g/V2G_ROOT_CA.pem").display()
        )
    );
    let (code, out, _) = ctl(&bus, &["--json", "expiry", "CSMS"]);
    assert_eq!(code, Some(0));
    let days = serde_json::from_str::<serde_json::Value>(&out).unwrap()["days"]
        .as_i64()
        .unwrap();
    assert!((364..=365).contains(&days), "{out}");

    // CSR, info, OCSP, GC.
    let (code, out, _) = ctl(
        &bus,
        &[
            "csr",
            "V2G",
            "--country",
            "DE",
            "--org",
            "O",
            "--cn",
            "SECC-9",
        ],
    );
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{out}"
    );
    let (code, out, _) = ctl(&bus, &["info", "V2G", "--ocsp"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("Accepted\n")
            && out.contains("  certificate_count: 3")
            && out.contains("(none cached)"),
        "{out}"
    );
    assert_eq!(ctl(&bus, &["info", "MF"]).0, Some(1));
    let (code, out, _) = ctl(&bus, &["ocsp"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().filter(|l| l.starts_with(Pki::OCSP_URL)).count(),
        3,
        "{out}"
    );
    assert_eq!(ctl(&bus, &["gc"]).1, "done\n");

    // Usage and bus errors.
    assert_eq!(ctl(&bus, &["frobnicate"]).0, Some(2));
    assert_eq!(
        ctl(&bus, &["install-ca", "MF", "/nonexistent.pem"]).0,
        Some(2)
    );
    let (code, _, err) = ctl(&bus, &["install-ca", "mf", &extra_file]);
    assert_eq!(code, Some(3));
    assert!(
        err.contains("org.freedesktop.DBus.Error.InvalidArgs"),
        "{err}"
    );
}

#[test]
fn evsecctl_watch_prints_signals() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let mut watch = Command::new(env!("CARGO_BIN_EXE_evsecctl"))
        .args(["--bus", &bus.address, "watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The subscription is in place once a GC round trip has been seen by
    // nobody; retry the install until the watcher prints it.
    let extra = issue(&CertSpec::ca("Watched Root", None), None).unwrap();
    let path = store.dir.path().join("w.pem");
    std::fs::write(&path, extra.pem()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        ctl(&bus, &["install-ca", "MO", path.to_str().unwrap()]).0,
        Some(0)
    );
    let line = lines.next().unwrap().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(line, "Installed ca=MO leaf=");
}
