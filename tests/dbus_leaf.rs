//! The leaf lifecycle end to end: evsecd on a private bus, checked with
//! `openssl s_server`/`s_client`, `openssl ocsp` and `openssl dgst`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{client, next_update, ocsp_response, tls_handshake, Daemon, PrivateBus, TempStore};
use evsec::dbus::{WireHashData, WireOcspEntry};
use evsec::testpki::{sign_csr, CertSpec, Pki};
use evsec::types::HashAlgorithm;
use evsec::x509::CertFacts;

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_sign_install_info_then_a_real_tls_handshake() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(
        &store.write_config("private_key_password = \"station-pw\"\n"),
        &bus,
    );
    let c = client(&bus).await;
    let mut updates = c.store_updates().await.unwrap();

    let (status, csr) = c
        .generate_certificate_signing_request("V2G", "DE", "Example CPO", "SECC-0042", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let leaf = sign_csr(&csr, &CertSpec::leaf("SECC-0042"), &pki.cpo_sub2).unwrap();
    let leaf_pem = String::from_utf8(leaf.to_pem().unwrap()).unwrap();
    let chain = leaf_pem.clone() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    assert_eq!(
        c.update_leaf_certificate(&chain, "V2G").await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        next_update(&mut updates).await,
        ("Installed".into(), "".into(), "V2G".into())
    );

    let (status, info) = c
        .get_leaf_certificate_info("V2G", "PEM", true)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(
        info.keys,
        [
            "certificate",
            "certificate_count",
            "certificate_single",
            "common_name",
            "key",
            "key_algorithm",
            "ocsp",
            "password"
        ]
    );
    assert_eq!(info.certificate_count, Some(3));
    assert_eq!(info.common_name.as_deref(), Some("SECC-0042"));
    assert_eq!(info.key_algorithm.as_deref(), Some("P256"));
    assert_eq!(info.password.as_deref(), Some("station-pw"));
    let (cert, single, key) = (
        info.certificate.unwrap(),
        info.certificate_single.unwrap(),
        info.key.unwrap(),
    );
    for p in [&cert, &single, &key] {
        assert!(Path::new(p).is_absolute() && Path::new(p).exists(), "{p}");
    }
    assert_eq!(std::fs::read_to_string(&single).unwrap(), leaf_pem);
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), chain);
    assert_eq!(
        info.ocsp.unwrap().len(),
        3,
        "one entry per certificate of the chain file"
    );
    let days = c.get_leaf_expiry_days_count("V2G").await.unwrap();
    assert!((363..=365).contains(&days), "{days}");
    let (status, all) = c
        .get_all_valid_certificates_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].certificate_root.as_deref(),
        Some(pki.v2g_root.pem().as_str())
    );
    assert_eq!(
        c.get_leaf_certificate_info("MF", "PEM", false)
            .await
            .unwrap()
            .0,
        "Rejected"
    );

    // The SECC's TLS server, set up from the paths alone, and a car that
    // trusts only the V2G root.
    let root = store.dir.path().join("v2g-root.pem");
    std::fs::write(&root, pki.v2g_root.pem()).unwrap();
    let text = tls_handshake(
        &[
            "-cert",
            &single,
            "-key",
            &key,
            "-cert_chain",
            &cert,
            "-pass",
            "pass:station-pw",
            "-tls1_2",
        ],
        &[],
        &root,
    );
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("SECC-0042"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_response_from_openssl_is_cached_as_der() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;

    let requests = c.get_v2g_ocsp_request_data().await.unwrap();
    assert_eq!(requests.len(), 3);
    let facts = |x: &openssl::x509::X509| CertFacts::new(x.clone()).unwrap();
    let leaf_hash = WireHashData::from(
        &facts(&pki.secc_leaf.cert)
            .hash_data(HashAlgorithm::SHA256, &facts(&pki.cpo_sub2.cert).key_bits),
    );
    assert_eq!(
        requests[0],
        WireOcspEntry {
            certificate_hash_data: leaf_hash.clone(),
            location: Pki::OCSP_URL.to_owned()
        }
    );

    let der = ocsp_response(&pki.secc_leaf.cert, &pki.cpo_sub2, store.dir.path());
    let b64 = openssl::base64::encode_block(&der);
    assert_eq!(
        c.update_ocsp_cache(&leaf_hash, &b64).await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        c.update_ocsp_cache(&leaf_hash, "").await.unwrap(),
        "InvalidFormat"
    );
    let nobody = WireHashData {
        hash_algorithm: "SHA256".to_owned(),
        issuer_name_hash: "00".repeat(32),
        issuer_key_hash: "00".repeat(32),
        serial_number: "1".to_owned(),
    };
    assert_eq!(
        c.update_ocsp_cache(&nobody, &b64).await.unwrap(),
        "NotFound"
    );

    let (_, info) = c
        .get_leaf_certificate_info("V2G", "PEM", true)
        .await
        .unwrap();
    let ocsp = info.ocsp.unwrap();
    assert_eq!(ocsp[0].certificate_hash_data, leaf_hash);
    let path = &ocsp[0].location;
    assert_eq!(std::fs::read(path).unwrap(), der);
    let out = openssl(&["ocsp", "-respin", path, "-resp_text", "-noverify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Cert Status: good"), "{text}");
    assert!(text.contains("OCSP Response Status: successful"), "{text}");

    // The ocsp/ directory removed by hand is made again by the next call.
    let ocsp_dir = store.path("client/cso/ocsp");
    std::fs::remove_dir_all(&ocsp_dir).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        c.update_ocsp_cache(&leaf_hash, &b64).await.unwrap(),
        "Accepted"
    );
    assert!(ocsp_dir.is_dir());
    let (_, info) = c
        .get_leaf_certificate_info("V2G", "PEM", true)
        .await
        .unwrap();
    let again = &info.ocsp.unwrap()[0].location;
    assert!(again.starts_with(ocsp_dir.to_str().unwrap()), "{again}");
    assert_eq!(std::fs::read(again).unwrap(), der);

    let mo_sub = evsec::testpki::issue(
        &CertSpec::ca("MO Sub", Some(0)).ocsp("http://mo.test/"),
        Some(&pki.mo_root),
    )
    .unwrap();
    let contract = evsec::testpki::issue(
        &CertSpec::leaf("EMAID").ocsp("http://mo.test/"),
        Some(&mo_sub),
    )
    .unwrap();
    let mo = c
        .get_mo_ocsp_request_data(&(contract.pem() + &mo_sub.pem()))
        .await
        .unwrap();
    assert_eq!(mo.len(), 2);
    assert_eq!(mo[1].location, "http://mo.test/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_signatures_made_with_openssl_dgst() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;
    let dir = store.dir.path();
    let file = dir.join("firmware.bin");
    std::fs::write(
        &file,
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();

    // EC: the manufacturer root's key; RSA: a fresh RSA-2048 certificate.
    let ec_key = dir.join("ec.key");
    std::fs::write(&ec_key, pki.mf_root.key_pem()).unwrap();
    let rsa_key = dir.join("rsa.key");
    let rsa_cert = dir.join("rsa.pem");
    let out = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=fw-rsa",
        "-days",
        "2",
        "-keyout",
        rsa_key.to_str().unwrap(),
        "-out",
        rsa_cert.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rsa_pem = std::fs::read_to_string(&rsa_cert).unwrap();

    let sign = |key: &Path, extra: &[&str]| {
        let sig = dir.join("sig.bin");
        let mut args = vec!["dgst", "-sha256", "-sign", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-out", sig.to_str().unwrap(), file_s]);
        let out = openssl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        openssl::base64::encode_block(&std::fs::read(sig).unwrap())
    };
    let ec_sig = sign(&ec_key, &[]);
    let rsa_sig = sign(&rsa_key, &[]);
    let pss_sig = sign(
        &rsa_key,
        &[
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
        ],
    );

    assert!(c
        .verify_file_signature(file_s, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    assert!(c
        .verify_file_signature(file_s, &rsa_pem, &rsa_sig)
        .await
        .unwrap());
    assert!(c
        .verify_file_signature(file_s, &rsa_pem, &pss_sig)
        .await
        .unwrap());
    assert!(!c
        .verify_file_signature(file_s, &rsa_pem, &ec_sig)
        .await
        .unwrap());
    assert!(!c
        .verify_file_signature("/dev/zero", &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    // The caller checks the signing certificate itself against the MF roots.
    assert_eq!(
        c.verify_certificate(&pki.mf_root.pem(), &["MF"])
            .await
            .unwrap(),
        "Valid"
    );
    // A self-signed certificate outside the store: OpenSSL's "self-signed
    // certificate", which the reference maps to Unknown.
    assert_eq!(
        c.verify_certificate(&rsa_pem, &["MF"]).await.unwrap(),
        "Unknown"
    );

    // By descriptor: the same verdicts, read from offset 0 whatever the
    // caller's offset, which stays where it was.
    let mut opened = std::fs::File::open(&file).unwrap();
    std::io::Seek::seek(&mut opened, std::io::SeekFrom::Start(4096)).unwrap();
    assert!(c
        .verify_file_signature_fd(&opened, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    assert!(c
        .verify_file_signature_fd(&opened, &rsa_pem, &pss_sig)
        .await
        .unwrap());
    assert_eq!(std::io::Seek::stream_position(&mut opened).unwrap(), 4096);
    assert!(!c
        .verify_file_signature_fd(&opened, &rsa_pem, &ec_sig)
        .await
        .unwrap());
    // Not a regular file, or not open for reading: false.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    assert!(!c
        .verify_file_signature_fd(&zero, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    let write_only = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    assert!(!c
        .verify_file_signature_fd(&write_only, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    // A file that no path names any more, which no check by path can
    // reach, is checked by its descriptor.
    let hidden = dir.join("hidden.bin");
    std::fs::copy(&file, &hidden).unwrap();
    let hidden_file = std::fs::File::open(&hidden).unwrap();
    std::fs::remove_file(&hidden).unwrap();
    assert!(c
        .verify_file_signature_fd(&hidden_file, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());

    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100_000] ^= 0x80;
    std::fs::write(&file, bytes).unwrap();
    assert!(!c
        .verify_file_signature_fd(&opened, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    assert!(!c
        .verify_file_signature(file_s, &pki.mf_root.pem(), &ec_sig)
        .await
        .unwrap());
    assert!(!c
        .verify_file_signature(file_s, &rsa_pem, &pss_sig)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_over_the_bus() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;
    let mut updates = c.store_updates().await.unwrap();

    let (status, _) = c
        .generate_certificate_signing_request("V2G", "DE", "O", "abandoned", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    // The new key is a change on disk, and is announced as one.
    assert_eq!(
        next_update(&mut updates).await,
        ("Installed".into(), "".into(), "V2G".into())
    );
    let key = std::fs::read_dir(store.path("client/cso"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    c.garbage_collect().await.unwrap();
    assert!(key.exists(), "a fresh CSR key stays");
    std::fs::File::options()
        .write(true)
        .open(&key)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    c.garbage_collect().await.unwrap();
    assert!(
        !key.exists(),
        "an abandoned CSR key older than an hour goes"
    );
    assert_eq!(
        next_update(&mut updates).await,
        ("Deleted".into(), "".into(), "V2G".into())
    );
    assert!(store.path("client/csms/CSMS_LEAF.key").exists());
}

/// `OpenLeafCredentials` hands over the key and chain that leaf info names,
/// as read-only descriptors at offset 0; by SECC ID too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_credentials_by_descriptor() {
    use std::io::{Read, Write};
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;

    let (status, info) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    let (status, mut files, by_fd) = c.open_leaf_credentials("V2G", "").await.unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(by_fd, info);
    assert_eq!(files.len(), 2);
    let chain_path = info
        .certificate
        .clone()
        .or(info.certificate_single.clone())
        .unwrap();
    for (file, path) in files
        .iter_mut()
        .zip([info.key.clone().unwrap(), chain_path])
    {
        let mut got = Vec::new();
        file.read_to_end(&mut got).unwrap();
        assert_eq!(got, std::fs::read(&path).unwrap(), "{path}");
        assert!(file.write_all(b"x").is_err(), "{path} is read-only");
    }
    // By SECC ID: the leaf whose commonName it is, else NotFound.
    let cn = CertFacts::new(pki.secc_leaf.cert.clone())
        .unwrap()
        .common_name();
    let (status, files, _) = c.open_leaf_credentials("V2G", &cn).await.unwrap();
    assert_eq!((status.as_str(), files.len()), ("Accepted", 2));
    let (status, files, info) = c.open_leaf_credentials("V2G", "SECC-NONE").await.unwrap();
    assert_eq!(
        (status.as_str(), files.len(), info.keys.len()),
        ("NotFound", 0, 0)
    );
    let (status, files, _) = c.open_leaf_credentials("MO", "").await.unwrap();
    assert_eq!((status.as_str(), files.len()), ("Rejected", 0));
}
