//! `examples/ocpp_station.py`, the OCPP 2.1 client's view, run against
//! evsecd on a private bus: its messages built and validated by the
//! mobilityhouse `ocpp` package, its outcomes checked on disk here.
//! `.ci/deps` makes the Python environment (`target/py`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Daemon, PrivateBus, TempStore};
use evsec::testpki::{issue, CertSpec, Pki};

fn python() -> PathBuf {
    let python = std::env::var_os("EVSEC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python3"));
    assert!(
        python.exists(),
        "{} is missing: run .ci/deps, which makes it with the ocpp and jeepney packages",
        python.display()
    );
    python
}

#[test]
fn the_ocpp_client_plays_renewal_root_rotation_and_chain_status() {
    let python = python();
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(
        &store.write_config("[ocpp]\nadditional_root_certificate_check = true\n"),
        &bus,
    );

    // The CSMS side's files.
    let dir = store.dir.path().join("csms");
    std::fs::create_dir(&dir).unwrap();
    let write = |name: &str, text: &[u8]| std::fs::write(dir.join(name), text).unwrap();
    write("csms-ca.pem", pki.csms_root.pem().as_bytes());
    write("csms-ca.key", &pki.csms_root.key_pem());
    let next_root = issue(&CertSpec::ca("CSMS Root CA 2", None), Some(&pki.csms_root)).unwrap();
    write("next-root.pem", next_root.pem().as_bytes());
    let stranger = issue(&CertSpec::ca("Somebody's Root", None), None).unwrap();
    write("stranger-root.pem", stranger.pem().as_bytes());
    let sub1 = issue(
        &CertSpec::ca("MO Sub-CA 1", Some(1)).ocsp("http://ocsp.mo.test/"),
        Some(&pki.mo_root),
    )
    .unwrap();
    let sub2 = issue(
        &CertSpec::ca("MO Sub-CA 2", Some(0)).crl("http://crl.mo.test/sub2.crl"),
        Some(&sub1),
    )
    .unwrap();
    let contract = issue(
        &CertSpec::leaf("EMAID-0001").ocsp("http://ocsp.mo.test/"),
        Some(&sub2),
    )
    .unwrap();
    let chain = contract.pem() + &sub2.pem() + &sub1.pem() + &pki.mo_root.pem();
    write("contract-chain.pem", chain.as_bytes());

    let out = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ocpp_station.py"
        ))
        .args(["--bus", &bus.address, "--pki"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.ends_with("all rounds done\n"), "{stdout}");
    // Every message it sent or received was validated: 2 + 2 for the
    // renewal, 2 per root install, one request per asked member plus the
    // answer.
    let sent = |action: &str| {
        stdout
            .lines()
            .filter(|l| l.starts_with("-> [2,") && l.contains(action))
            .count()
    };
    assert_eq!(sent("\"SignCertificate\""), 1, "{stdout}");
    assert_eq!(sent("\"CertificateSigned\""), 1, "{stdout}");
    assert_eq!(sent("\"InstallCertificate\""), 2, "{stdout}");
    assert_eq!(sent("\"GetCertificateChainStatus\""), 3, "{stdout}");

    // What it left: one client certificate (the new one), its key, the
    // new CSMS root alone, and three fresh status entries.
    let leaf_files: Vec<String> = std::fs::read_dir(store.path("client/csms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pem") || n.ends_with(".key"))
        .collect();
    assert_eq!(leaf_files.len(), 2, "{leaf_files:?}");
    assert!(
        !leaf_files.contains(&"CSMS_LEAF.pem".to_owned()),
        "{leaf_files:?}"
    );
    assert_eq!(
        std::fs::read_to_string(store.path("ca/csms/CSMS_ROOT_CA.pem")).unwrap(),
        next_root.pem()
    );
    let record = std::fs::read_to_string(store.path(".evsecd-certificate-status")).unwrap();
    assert_eq!(
        record.matches("\"status\": \"Good\"").count(),
        3,
        "{record}"
    );
}
