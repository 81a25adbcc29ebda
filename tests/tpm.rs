//! TPM-held keys end to end on a software TPM: evsecd generates the key in
//! swtpm through the tpm2 OpenSSL provider, and `openssl s_server` serves
//! TLS with the `.tkey` it wrote.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{client, tls_handshake, Daemon, PrivateBus, SoftwareTpm, TempStore};
use evsec::testpki::{sign_csr, CertSpec, Pki};
use evsec::types::HashAlgorithm;
use evsec::x509::CertFacts;

/// The files in `dir` whose name ends with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

/// `evsecctl csr V2G … --tpm`, the operator's way to a TPM key.
fn evsecctl_tpm_csr(bus: &PrivateBus, common_name: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_evsecctl"))
        .args(["--bus", &bus.address, "csr", "V2G", "--country", "DE"])
        .args(["--org", "Example CPO", "--cn", common_name, "--tpm"])
        .output()
        .unwrap()
}

fn tpm_config(tcti: &str) -> String {
    // A software-key password is set to show that TPM keys never use it.
    format!("private_key_password = \"station-pw\"\n[tpm]\nenabled = true\ntcti = \"{tcti}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_in_the_tpm_install_info_tls_gc_and_delete() {
    let Some(tpm) = SoftwareTpm::start() else {
        return;
    };
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let config = store.write_config(&tpm_config(&tpm.tcti));
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&config, &bus);
    let c = client(&bus).await;
    let log = daemon.log();
    assert!(log.contains("TPM provider loaded and self-tested"), "{log}");
    // What Debian 12's tpm2-openssl reports of itself.
    assert!(log.contains("loaded=TPM 2.0 Provider "), "{log}");
    let secc_dir = store.path("client/cso");
    let keys_before = files_ending(&secc_dir, ".key");

    // The CSR: signed by a key that the TPM made, kept as a TSS2 PEM.
    let (status, csr) = c
        .generate_certificate_signing_request("V2G", "DE", "Example CPO", "SECC-TPM-1", true)
        .await
        .unwrap();
    assert_eq!(status, "Accepted", "{}", daemon.log());
    let tkeys = files_ending(&secc_dir, ".tkey");
    assert_eq!(tkeys.len(), 1, "{tkeys:?}");
    let tkey = &tkeys[0];
    let name = tkey.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("SECC_LEAF_"), "{name}");
    assert_eq!(
        files_ending(&secc_dir, ".key"),
        keys_before,
        "no software key"
    );
    let key_text = std::fs::read_to_string(tkey).unwrap();
    assert!(
        key_text.starts_with("-----BEGIN TSS2 PRIVATE KEY-----\n"),
        "{key_text}"
    );
    assert!(!key_text.contains("ENCRYPTED"), "{key_text}");
    let mode = std::fs::metadata(tkey).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let req = openssl::x509::X509Req::from_pem(csr.as_bytes()).unwrap();
    let public = req.public_key().unwrap();
    assert!(req.verify(&public).unwrap(), "the CSR is signed by its key");
    assert_eq!(
        public.ec_key().unwrap().group().curve_name(),
        Some(openssl::nid::Nid::X9_62_PRIME256V1)
    );
    let subject: Vec<String> = req
        .subject_name()
        .entries()
        .map(|e| e.data().to_string().unwrap())
        .collect();
    assert_eq!(subject, ["DE", "Example CPO", "SECC-TPM-1", "CPO"]);

    // A leaf for another key finds no private key; the CSR's leaf installs.
    let stranger =
        evsec::testpki::issue(&CertSpec::secc("SECC-TPM-1"), Some(&pki.cpo_sub2)).unwrap();
    let chain_tail = pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    assert_eq!(
        c.update_leaf_certificate(&(stranger.pem() + &chain_tail), "V2G")
            .await
            .unwrap(),
        "PrivateKeyNotFound"
    );
    let leaf = sign_csr(&csr, &CertSpec::leaf("SECC-TPM-1"), &pki.cpo_sub2).unwrap();
    let leaf_pem = String::from_utf8(leaf.to_pem().unwrap()).unwrap();
    let chain = leaf_pem.clone() + &chain_tail;
    assert_eq!(
        c.update_leaf_certificate(&chain, "V2G").await.unwrap(),
        "Accepted"
    );

    let (status, info) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(info.key.as_deref(), Some(tkey.to_str().unwrap()));
    assert_eq!(info.password, None, "a TPM key has no password");
    let single = info.certificate_single.unwrap();
    let cert = info.certificate.unwrap();
    assert_eq!(std::fs::read_to_string(&single).unwrap(), leaf_pem);
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), chain);

    // The SECC's TLS server with the TPM key, as a station runs it, and a
    // car that trusts only the V2G root; TLS 1.2 and 1.3.
    let root = store.dir.path().join("v2g-root.pem");
    std::fs::write(&root, pki.v2g_root.pem()).unwrap();
    for version in ["-tls1_2", "-tls1_3"] {
        let text = tls_handshake(
            &[
                "-provider",
                "default",
                "-provider",
                "tpm2",
                "-propquery",
                "?tpm2.signature",
                "-cert",
                &single,
                "-key",
                tkey.to_str().unwrap(),
                "-cert_chain",
                &cert,
                version,
            ],
            &[("TPM2OPENSSL_TCTI", tpm.tcti.as_str())],
            &root,
        );
        assert!(text.contains("SECC-TPM-1"), "{text}");
        let protocol = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(
            text.contains(&format!("Protocol version: {protocol}")),
            "{text}"
        );
    }

    // A restart opens the .tkey through the TPM again and pairs it.
    drop(c);
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = Daemon::start(&config, &bus);
    let c = client(&bus).await;
    let (status, info) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted", "{}", daemon.log());
    assert_eq!(info.key.as_deref(), Some(tkey.to_str().unwrap()));

    // Three CSRs at once each get a key of their own (a TPM without a
    // resource manager serves them one after the other). Garbage collection
    // then removes these keys, which no certificate took up, once they are
    // old; the key in use stays.
    let csr = |cn: &'static str| {
        c.generate_certificate_signing_request("CSMS", "DE", "Example CPO", cn, true)
    };
    let (a, b, d) = tokio::join!(csr("CS-TPM-1"), csr("CS-TPM-2"), csr("CS-TPM-3"));
    let csrs = [a.unwrap(), b.unwrap(), d.unwrap()];
    assert!(
        csrs.iter().all(|(status, _)| status == "Accepted"),
        "{csrs:?} {}",
        daemon.log()
    );
    let public_keys: std::collections::HashSet<Vec<u8>> = csrs
        .iter()
        .map(|(_, pem)| {
            let req = openssl::x509::X509Req::from_pem(pem.as_bytes()).unwrap();
            req.public_key().unwrap().public_key_to_der().unwrap()
        })
        .collect();
    assert_eq!(public_keys.len(), 3);
    let csms_dir = store.path("client/csms");
    let abandoned = files_ending(&csms_dir, ".tkey");
    assert_eq!(abandoned.len(), 3);
    for key in &abandoned {
        std::fs::File::options()
            .write(true)
            .open(key)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
            .unwrap();
    }
    c.garbage_collect().await.unwrap();
    assert_eq!(files_ending(&csms_dir, ".tkey"), Vec::<PathBuf>::new());
    assert_eq!(files_ending(&secc_dir, ".tkey"), tkeys);

    // Deleting the SECC leaf deletes its TPM key with it.
    let facts = |x: &openssl::x509::X509| CertFacts::new(x.clone()).unwrap();
    let leaf_hash = evsec::dbus::WireHashData::from(
        &facts(&leaf).hash_data(HashAlgorithm::SHA256, &facts(&pki.cpo_sub2.cert).key_bits),
    );
    assert_eq!(c.delete_certificate(&leaf_hash).await.unwrap(), "Accepted");
    assert_eq!(files_ending(&secc_dir, ".tkey"), Vec::<PathBuf>::new());
    assert!(!Path::new(&single).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_tpm_answers_keygen_error_and_writes_nothing() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let nowhere = store.dir.path().join("no-tpm.sock");
    let tcti = format!("swtpm:path={}", nowhere.display());
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&store.write_config(&tpm_config(&tcti)), &bus);
    let c = client(&bus).await;
    let before = common::tree_contents(&store.certs);

    let (status, csr) = c
        .generate_certificate_signing_request("V2G", "DE", "Example CPO", "SECC-TPM-2", true)
        .await
        .unwrap();
    assert_eq!((status.as_str(), csr.as_str()), ("KeyGenError", ""));
    let out = evsecctl_tpm_csr(&bus, "SECC-TPM-2");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "KeyGenError\n");
    assert_eq!(common::tree_contents(&store.certs), before);
    let log = daemon.log();
    assert!(log.contains("TPM keys unavailable"), "{log}");
    assert!(
        log.contains("CSR with a TPM key failed")
            && log.contains("cannot load OpenSSL provider `tpm2`"),
        "{log}"
    );

    // Software keys are untouched by the TPM's absence.
    let (status, _) = c
        .generate_certificate_signing_request("V2G", "DE", "Example CPO", "SECC-SW", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_key_read_while_the_tpm_was_down_pairs_once_it_is_up() {
    let Some(mut tpm) = SoftwareTpm::start() else {
        return;
    };
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let config = store.write_config(&format!("{}retry_seconds = 1\n", tpm_config(&tpm.tcti)));
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&config, &bus);
    let c = client(&bus).await;
    let csr = evsecctl_tpm_csr(&bus, "SECC-TPM-3");
    assert_eq!(csr.status.code(), Some(0), "{csr:?}");
    let csr = String::from_utf8(csr.stdout).unwrap();
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );
    let leaf = sign_csr(&csr, &CertSpec::leaf("SECC-TPM-3"), &pki.cpo_sub2).unwrap();
    let chain = String::from_utf8(leaf.to_pem().unwrap()).unwrap()
        + &pki.cpo_sub2.pem()
        + &pki.cpo_sub1.pem();
    assert_eq!(
        c.update_leaf_certificate(&chain, "V2G").await.unwrap(),
        "Accepted"
    );
    drop(c);
    assert_eq!(daemon.terminate(), Some(0));

    // The station boots with the TPM not up yet: the daemon serves, and the
    // leaf waits for its key.
    tpm.stop();
    let daemon = Daemon::start(&config, &bus);
    let c = client(&bus).await;
    let (status, _) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "PrivateKeyNotFound");
    assert!(
        daemon.log().contains("TPM key cannot be opened"),
        "{}",
        daemon.log()
    );

    tpm.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, info) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted", "{}", daemon.log());
    assert!(info.key.unwrap().ends_with(".tkey"));
}

#[test]
fn with_tpm_keys_disabled_a_tkey_never_pairs_and_is_never_collected() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    // Any TSS2 PEM: without the provider it is never opened.
    let tkey = store.path("client/cso/SECC_LEAF_0001.tkey");
    std::fs::write(
        &tkey,
        "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tkey)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(30 * 86_400))
        .unwrap();
    let security = store.open();
    let changes = security.garbage_collect();
    assert!(changes.is_empty(), "{changes:?}");
    assert!(tkey.exists());
    let snapshot = security.snapshot();
    let key = snapshot.keys().find(|k| k.path == tkey).unwrap();
    assert!(key.tpm && key.key_fingerprint.is_none() && !key.awaits_tpm);
}

/// A -20 CSR with a TPM key: P-521 where the TPM implements the curve
/// (swtpm's libtpms does), and never Ed448, which TPM 2.0 does not define.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2g20_csr_in_the_tpm() {
    let Some(tpm) = SoftwareTpm::start() else {
        return;
    };
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let secc_dir = store.path("client/cso");
    for (key, expected) in [("P521", "Accepted"), ("Ed448", "KeyGenError")] {
        let config = store.write_config(&format!(
            "{}[iso15118]\nv2g20_key = \"{key}\"\n",
            tpm_config(&tpm.tcti)
        ));
        let bus = PrivateBus::start();
        let daemon = Daemon::start(&config, &bus);
        let c = client(&bus).await;
        let before = files_ending(&secc_dir, ".tkey");
        let (status, csr) = c
            .generate_certificate_signing_request("V2G20", "DE", "Example CPO", "SECC-20-TPM", true)
            .await
            .unwrap();
        assert_eq!(status, expected, "{key}: {}", daemon.log());
        let after = files_ending(&secc_dir, ".tkey");
        if expected == "Accepted" {
            assert_eq!(after.len(), before.len() + 1);
            let req = openssl::x509::X509Req::from_pem(csr.as_bytes()).unwrap();
            let public = req.public_key().unwrap();
            assert!(req.verify(&public).unwrap());
            assert_eq!(
                public.ec_key().unwrap().group().curve_name(),
                Some(openssl::nid::Nid::SECP521R1)
            );
            let csr_file = store.dir.path().join("v2g20.csr");
            std::fs::write(&csr_file, &csr).unwrap();
            let text = std::process::Command::new("openssl")
                .args(["req", "-noout", "-text", "-in"])
                .arg(&csr_file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains("ecdsa-with-SHA512"), "{text}");
        } else {
            assert_eq!(after, before, "no key file");
            assert_eq!(csr, "");
            let log = daemon.log();
            assert!(log.contains("TPM 2.0 defines no Ed448 key"), "{log}");
        }
    }
}
