//! evsecd as a real process on a private dbus-daemon, called with the zbus
//! client, busctl and dbus-send.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    busctl, client, invalid_args, next_update, tree_contents, wire_hash_of, Daemon, PrivateBus,
    TempStore,
};
use evsec::dbus::WireHashData;
use evsec::testpki::{issue, CertSpec, Pki};

const DEST: &str = "org.evsec.EvseSecurity1";
const PATH: &str = "/org/evsec/EvseSecurity1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_over_a_real_bus() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;
    let mut updates = c.store_updates().await.unwrap();

    assert_eq!(c.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(c.certificate_entries().await.unwrap(), 10);

    // InstallCaCertificate, with its signal and the entry count.
    let extra = issue(&CertSpec::ca("Second MO Root", None), None).unwrap();
    assert_eq!(
        c.install_ca_certificate(&extra.pem(), "MO").await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        next_update(&mut updates).await,
        ("Installed".into(), "MO".into(), "".into())
    );
    assert_eq!(c.certificate_entries().await.unwrap(), 11);
    assert_eq!(
        c.install_ca_certificate(&extra.pem(), "MO").await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        c.install_ca_certificate("junk", "MO").await.unwrap(),
        "InvalidFormat"
    );
    assert_eq!(
        c.install_ca_certificate(&pki.secc_leaf.pem(), "V2G")
            .await
            .unwrap(),
        "InvalidCertificateChain"
    );
    assert_eq!(c.certificate_entries().await.unwrap(), 11);
    let msg = invalid_args(c.install_ca_certificate(&extra.pem(), "mo").await);
    assert!(msg.contains("expected one of: V2G, MO, CSMS, MF"), "{msg}");

    // IsCaCertificateInstalled, GetVerifyFile, GetVerifyLocation.
    assert!(c.is_ca_certificate_installed("MO").await.unwrap());
    let mo = store.path("ca/mo/MO_ROOT_CA.pem").display().to_string();
    assert_eq!(c.get_verify_file("MO").await.unwrap(), mo);
    assert_eq!(c.get_verify_location("MO").await.unwrap(), mo);
    assert!(invalid_args(c.get_verify_file("EV").await).contains("OEM"));

    // VerifyCertificate.
    assert_eq!(
        c.verify_certificate(&pki.secc_chain_pem(), &["V2G"])
            .await
            .unwrap(),
        "Valid"
    );
    assert_eq!(
        c.verify_certificate(&pki.secc_chain_pem(), &["MF"])
            .await
            .unwrap(),
        "IssuerNotFound"
    );
    assert_eq!(
        c.verify_certificate("x", &["V2G"]).await.unwrap(),
        "Unknown"
    );
    assert!(
        invalid_args(c.verify_certificate("x", &["V2G", "Nope"]).await)
            .contains("certificate_types")
    );

    // GetInstalledCertificates.
    let (status, chains) = c
        .get_installed_certificates(&["V2GRootCertificate", "V2GCertificateChain"])
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(chains.len(), 2);
    assert_eq!(chains[0].certificate_type, "V2GRootCertificate");
    assert_eq!(
        chains[0].certificate_hash_data,
        wire_hash_of(&pki.v2g_root, &pki.v2g_root)
    );
    assert_eq!(
        chains[0].child_certificate_hash_data,
        vec![
            wire_hash_of(&pki.cpo_sub1, &pki.v2g_root),
            wire_hash_of(&pki.cpo_sub2, &pki.cpo_sub1)
        ]
    );
    assert_eq!(chains[1].certificate_type, "V2GCertificateChain");
    assert_eq!(
        chains[1].certificate_hash_data,
        wire_hash_of(&pki.secc_leaf, &pki.cpo_sub2)
    );
    assert!(
        invalid_args(c.get_installed_certificates(&["EVRootCertificate"]).await)
            .contains("MFRootCertificate")
    );
    // Repeats count once; a list longer than 32 is refused before parsing.
    let repeated = c
        .get_installed_certificates(&["V2GRootCertificate"; 20])
        .await
        .unwrap();
    assert_eq!(repeated.1.len(), 1);
    assert_eq!(
        repeated.1[0].certificate_hash_data,
        wire_hash_of(&pki.v2g_root, &pki.v2g_root)
    );
    assert!(invalid_args(
        c.get_installed_certificates(&["V2GRootCertificate"; 33])
            .await
    )
    .contains("33 values; at most 32"));
    assert!(
        invalid_args(c.verify_certificate("x", &["nope"; 100_000]).await).contains("100000 values")
    );

    // DeleteCertificate: Accepted with its signal, then NotFound, then the
    // refused CSMS client certificate; neither of the last two signals.
    let h = wire_hash_of(&extra, &extra);
    assert_eq!(c.delete_certificate(&h).await.unwrap(), "Accepted");
    assert_eq!(
        next_update(&mut updates).await,
        ("Deleted".into(), "MO".into(), "".into())
    );
    assert_eq!(c.delete_certificate(&h).await.unwrap(), "NotFound");
    let before = tree_contents(&store.certs);
    assert_eq!(
        c.delete_certificate(&wire_hash_of(&pki.csms_leaf, &pki.csms_root))
            .await
            .unwrap(),
        "Failed"
    );
    assert_eq!(tree_contents(&store.certs), before);
    let leaf = wire_hash_of(&pki.secc_leaf, &pki.cpo_sub2);
    let upper = WireHashData {
        hash_algorithm: leaf.hash_algorithm.clone(),
        issuer_name_hash: leaf.issuer_name_hash.to_uppercase(),
        issuer_key_hash: leaf.issuer_key_hash.to_uppercase(),
        serial_number: format!("00{}", leaf.serial_number),
    };
    assert_eq!(c.delete_certificate(&upper).await.unwrap(), "Accepted");
    // The next signal is the SECC delete: nothing was sent in between.
    assert_eq!(
        next_update(&mut updates).await,
        ("Deleted".into(), "".into(), "V2G".into())
    );
    assert!(!store.path("client/cso/SECC_LEAF.key").exists());
    let bad = WireHashData {
        hash_algorithm: "SHA256".to_owned(),
        issuer_name_hash: "zz".repeat(32),
        issuer_key_hash: "00".repeat(32),
        serial_number: "1".to_owned(),
    };
    assert!(invalid_args(c.delete_certificate(&bad).await)
        .contains("issuer_name_hash must be hexadecimal"));
    let long = WireHashData {
        hash_algorithm: "SHA256".to_owned(),
        issuer_name_hash: "00".repeat(33),
        issuer_key_hash: "00".repeat(32),
        serial_number: "1".to_owned(),
    };
    assert!(invalid_args(c.delete_certificate(&long).await).contains("64 hex digits"));

    assert_eq!(daemon.terminate(), Some(0));
}

fn pem_arg(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn busctl_installs_lists_and_deletes() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::empty();
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let a = bus.address.as_str();
    let root = store.dir.path().join("root.pem");
    std::fs::write(&root, pki.mf_root.pem()).unwrap();

    let (ok, out, err) = busctl(
        a,
        &[
            "call",
            DEST,
            PATH,
            DEST,
            "InstallCaCertificate",
            "--",
            "ss",
            &pem_arg(&root),
            "MF",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "s \"Accepted\"");
    assert_eq!(
        std::fs::read_to_string(store.path("ca/mf/MF_ROOT_CA.pem")).unwrap(),
        pki.mf_root.pem()
    );

    let (ok, out, err) = busctl(
        a,
        &[
            "--json=short",
            "call",
            DEST,
            PATH,
            DEST,
            "GetInstalledCertificates",
            "as",
            "1",
            "MFRootCertificate",
        ],
    );
    assert!(ok, "{err}");
    let h = wire_hash_of(&pki.mf_root, &pki.mf_root);
    let expected = format!(
        "{{\"type\":\"sa(s(ssss)a(ssss))\",\"data\":[\"Accepted\",[[\"MFRootCertificate\",[\"SHA256\",\"{}\",\"{}\",\"{}\"],[]]]]}}",
        h.issuer_name_hash, h.issuer_key_hash, h.serial_number
    );
    assert_eq!(out.trim(), expected);

    let (ok, out, _) = busctl(a, &["get-property", DEST, PATH, DEST, "CertificateEntries"]);
    assert!(ok);
    assert_eq!(out.trim(), "u 1");

    let (ok, out, err) = busctl(
        a,
        &[
            "call",
            DEST,
            PATH,
            DEST,
            "DeleteCertificate",
            "(ssss)",
            "SHA256",
            &h.issuer_name_hash,
            &h.issuer_key_hash,
            &h.serial_number,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "s \"Accepted\"");
    assert_eq!(
        std::fs::read_to_string(store.path("ca/mf/MF_ROOT_CA.pem")).unwrap(),
        ""
    );

    let (ok, _, err) = busctl(
        a,
        &[
            "call",
            DEST,
            PATH,
            DEST,
            "IsCaCertificateInstalled",
            "s",
            "mf",
        ],
    );
    assert!(!ok);
    assert!(err.contains("expected one of: V2G, MO, CSMS, MF"), "{err}");
}

#[test]
fn a_wrong_signature_is_invalid_args() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let before = tree_contents(store.dir.path());
    // A struct argument's fields, sent loose, decode as the struct would:
    // only the header's signature tells them apart.
    let WireHashData {
        hash_algorithm: a,
        issuer_name_hash: b,
        issuer_key_hash: c,
        serial_number: d,
    } = wire_hash_of(&pki.mo_root, &pki.mo_root);
    let fields = [a.as_str(), b.as_str(), c.as_str(), d.as_str()];
    let call = |signature: &str, args: &[&str]| {
        let mut argv = vec![
            "call",
            "--",
            DEST,
            PATH,
            DEST,
            "DeleteCertificate",
            signature,
        ];
        argv.extend_from_slice(args);
        busctl(&bus.address, &argv)
    };
    let (ok, _, err) = call("ssss", &fields);
    assert!(!ok);
    assert!(
        err.contains("DeleteCertificate takes a body of signature `(ssss)`, not `ssss`"),
        "{err}"
    );
    let (ok, _, err) = call("(sss)", &fields[..3]);
    assert!(!ok);
    assert!(err.contains("not `(sss)`"), "{err}");
    assert_eq!(tree_contents(store.dir.path()), before);
    // The same fields as the struct are executed.
    let (ok, out, err) = call("(ssss)", &fields);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "s \"Accepted\"");
    // The properties interface is held to its signatures too.
    let (ok, _, err) = busctl(
        &bus.address,
        &[
            "call",
            DEST,
            PATH,
            "org.freedesktop.DBus.Properties",
            "Get",
            "(ss)",
            DEST,
            "Version",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("Get takes a body of signature `ss`, not `(ss)`"),
        "{err}"
    );
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", bus.address))
        .args([
            "--print-reply",
            "--dest=org.evsec.EvseSecurity1",
            PATH,
            "org.evsec.EvseSecurity1.IsCaCertificateInstalled",
            "int32:5",
        ])
        .output()
        .expect("dbus-send");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("org.freedesktop.DBus.Error.InvalidArgs"),
        "{err}"
    );
}

/// The interface section of the live introspection data.
fn live_interface_xml(address: &str) -> String {
    let (ok, out, err) = busctl(address, &["--xml-interface", "introspect", DEST, PATH]);
    assert!(ok, "{err}");
    let start = out
        .find("  <interface name=\"org.evsec.EvseSecurity1\">")
        .expect("interface in XML");
    let end = start
        + out[start..]
            .find("  </interface>")
            .expect("end of interface")
        + "  </interface>\n".len();
    out[start..end].to_owned()
}

#[test]
fn introspection_matches_the_xml_in_the_repository() {
    let store = TempStore::empty();
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let live = live_interface_xml(&bus.address);
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/dbus")
        .join(evsec::dbus::INTROSPECTION_FILE);
    if std::env::var_os("EVSEC_UPDATE_XML").is_some() {
        std::fs::write(&file, format!("<node>\n{live}</node>\n")).unwrap();
    }
    let kept = std::fs::read_to_string(&file).expect("introspection XML in the repository");
    assert_eq!(
        kept,
        format!("<node>\n{live}</node>\n"),
        "run with EVSEC_UPDATE_XML=1 to refresh {}",
        file.display()
    );
    for (name, sig) in [
        ("InstallCaCertificate", "ss"),
        ("DeleteCertificate", "(ssss)"),
        ("VerifyCertificate", "sas"),
        ("GetInstalledCertificates", "as"),
        ("IsCaCertificateInstalled", "s"),
        ("GetVerifyFile", "s"),
        ("GetVerifyLocation", "s"),
    ] {
        let (ok, out, _) = busctl(&bus.address, &["introspect", DEST, PATH, DEST]);
        assert!(ok);
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!(".{name} ")))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(line.split_whitespace().nth(2), Some(sig), "{line}");
    }
}

#[test]
fn second_instance_fails_without_taking_the_name_and_sigterm_exits_zero() {
    let first_store = TempStore::empty();
    let second_store = TempStore::empty();
    let bus = PrivateBus::start();
    let first = Daemon::start(&first_store.write_config(""), &bus);
    let mut second = Daemon::spawn(&second_store.write_config(""), &bus);
    let code = common::wait_with_timeout(&mut second.child, Duration::from_secs(10));
    assert_eq!(code, Some(1));
    let log = second.log();
    assert!(
        log.contains("bus name org.evsec.EvseSecurity1 is already owned"),
        "{log}"
    );
    // The first still answers, from its own store.
    let (ok, out, _) = busctl(
        &bus.address,
        &["call", DEST, PATH, DEST, "GetVerifyFile", "s", "V2G"],
    );
    assert!(ok);
    assert!(
        out.contains(
            &first_store
                .path("ca/v2g/V2G_ROOT_CA.pem")
                .display()
                .to_string()
        ),
        "{out}"
    );
    // A second daemon on the same store is refused by the store lock.
    let mut third = Daemon::spawn(&first_store.write_config(""), &bus);
    assert_eq!(
        common::wait_with_timeout(&mut third.child, Duration::from_secs(10)),
        Some(1)
    );
    assert!(
        third.log().contains("held by another evsecd"),
        "{}",
        third.log()
    );
    assert_eq!(first.terminate(), Some(0));
}

#[test]
fn start_up_errors_are_one_line_and_name_the_cause() {
    let store = TempStore::empty();
    let bus = PrivateBus::start();
    let run = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_evsecd"))
            .arg("--config")
            .arg(config)
            .arg("--bus")
            .arg(&bus.address)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&store.write_config("v2g_bundle = \"x\"\n"));
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("evsec.toml") && err.contains("key `v2g_bundle`"),
        "{err}"
    );

    let (code, err) = run(&store.dir.path().join("missing.toml"));
    assert_eq!(code, Some(1));
    assert!(err.contains("missing.toml"), "{err}");

    std::fs::write(store.dir.path().join("file"), b"").unwrap();
    let (code, err) = run(&store.write_config(&format!(
        "mo_ca_bundle = \"{}/file/mo.pem\"\n",
        store.dir.path().display()
    )));
    assert_eq!(code, Some(1));
    assert!(err.contains("config key `mo_ca_bundle`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn readiness_is_notified_to_systemd() {
    use std::os::unix::net::UnixDatagram;
    let store = TempStore::empty();
    let bus = PrivateBus::start();
    let socket_path = store.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_evsecd"))
        .arg("--config")
        .arg(store.write_config(""))
        .arg("--bus")
        .arg(&bus.address)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means the name is owned.
    let (ok, _, _) = busctl(&bus.address, &["status", DEST]);
    assert!(ok);
    // SAFETY: signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(
        common::wait_with_timeout(&mut child, Duration::from_secs(10)),
        Some(0)
    );
}

/// `VerifyCertificateDetailed` on the wire, read with busctl's JSON.
#[test]
fn verify_detailed_names_the_failure() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let detailed = |chain: &str| -> serde_json::Value {
        let (ok, out, err) = busctl(
            &bus.address,
            &[
                "--json=short",
                "call",
                "--",
                DEST,
                PATH,
                DEST,
                "VerifyCertificateDetailed",
                "sas",
                chain,
                "1",
                "V2G",
            ],
        );
        assert!(ok, "{err}");
        let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reply["type"], "sa{sv}");
        reply["data"].clone()
    };
    // A CA under Sub-CA 2, whose pathlen is 0.
    let sub3 = issue(&CertSpec::ca("Sub 3", None), Some(&pki.cpo_sub2)).unwrap();
    let deep = issue(&CertSpec::leaf("deep"), Some(&sub3)).unwrap();
    let chain = deep.pem() + &sub3.pem() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    assert_eq!(
        detailed(&chain),
        serde_json::json!(["InvalidChain", {
            "reason": {"type": "s", "data": "path length constraint exceeded"},
            "depth": {"type": "u", "data": 2},
            "subject": {"type": "s", "data": "C=DE, O=evsec test, CN=CPO Sub-CA 2"},
            "openssl_error": {"type": "i", "data": 25},
        }])
    );
    // Not valid for another hour: the station's clock may be behind.
    let early = issue(
        &CertSpec::leaf("early").valid_for_seconds(3600, 86_400 * 30),
        Some(&pki.cpo_sub2),
    )
    .unwrap();
    let data = detailed(&(early.pem() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem()));
    assert_eq!(data[0], "Expired");
    assert_eq!(
        data[1]["reason"]["data"],
        "certificate is not yet valid; the chain is valid a day from now: check the station's clock"
    );
    assert_eq!(data[1]["depth"]["data"], 0);
    assert_eq!(data[1]["openssl_error"]["data"], 9);
    assert_eq!(
        detailed(&pki.secc_chain_pem()),
        serde_json::json!(["Valid", {"reason": {"type": "s", "data": ""}}])
    );
}
