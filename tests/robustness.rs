//! The daemon under stress: a corrupt store at start, many clients at
//! once, SIGKILL in the middle of writes, and a full disk.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{client, tree_contents, Daemon, PrivateBus, TempStore};
use evsec::testpki::{issue, CertSpec, Pki};

/// Every certificate file under `dir` parses, and no temporary file is left.
fn assert_store_sound(dir: &std::path::Path) {
    for (path, bytes) in tree_contents(dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".evsec-tmp-"),
            "temporary file left: {}",
            path.display()
        );
        if name.ends_with(".pem") {
            let (certs, others) = evsec::x509::parse_pem_certificates(&bytes)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            assert_eq!(others, 0, "{}", path.display());
            assert!(
                !certs.is_empty() || bytes.is_empty(),
                "{} holds no certificate",
                path.display()
            );
        }
        if name.ends_with(".key") {
            openssl::pkey::PKey::private_key_from_pem(&bytes)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_starts_serves_and_stays_untouched() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    // A truncated bundle, a garbage file in a directory bundle, an
    // unparsable key and a key under another password.
    let mo = store.path("ca/mo/MO_ROOT_CA.pem");
    let text = std::fs::read_to_string(&mo).unwrap();
    std::fs::write(&mo, &text[..text.len() / 2]).unwrap();
    std::fs::create_dir_all(store.path("ca/mf-dir")).unwrap();
    std::fs::write(store.path("ca/mf-dir/good.pem"), pki.mf_root.pem()).unwrap();
    std::fs::write(
        store.path("ca/mf-dir/garbage.pem"),
        b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        store.path("client/cso/broken.key"),
        b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let locked = pki
        .csms_leaf
        .key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"other")
        .unwrap();
    std::fs::write(store.path("client/csms/CSMS_LEAF.key"), locked).unwrap();
    let before = tree_contents(&store.certs);

    let bus = PrivateBus::start();
    let daemon = Daemon::start(&store.write_config("mf_ca_bundle = \"ca/mf-dir\"\n"), &bus);
    let c = client(&bus).await;
    assert!(
        !c.is_ca_certificate_installed("MO").await.unwrap(),
        "the truncated root is not served"
    );
    assert!(
        c.is_ca_certificate_installed("MF").await.unwrap(),
        "the good file beside the garbage is"
    );
    assert_eq!(
        c.verify_certificate(&pki.secc_chain_pem(), &["V2G"])
            .await
            .unwrap(),
        "Valid"
    );
    assert_eq!(
        c.get_leaf_certificate_info("V2G", "PEM", false)
            .await
            .unwrap()
            .0,
        "Accepted"
    );
    assert_eq!(
        c.get_leaf_certificate_info("CSMS", "PEM", false)
            .await
            .unwrap()
            .0,
        "PrivateKeyNotFound"
    );

    std::thread::sleep(Duration::from_millis(200));
    let log = daemon.log();
    for bad in [
        "MO_ROOT_CA.pem",
        "garbage.pem",
        "broken.key",
        "CSMS_LEAF.key",
    ] {
        assert_eq!(
            log.lines().filter(|l| l.contains(bad)).count(),
            1,
            "{bad} named once:\n{log}"
        );
    }
    // Only the daemon's lock file and the empty OEM bundle, which an
    // EVerest tree lacks, are new (and its parse cache, which tree_contents
    // leaves out); every file of the store, the bad ones included, is
    // byte-identical.
    let oem_bundle = store.path("ca/oem/OEM_ROOT_CA.pem");
    let after: Vec<_> = tree_contents(&store.certs)
        .into_iter()
        .filter(|(p, bytes)| {
            !(p.ends_with(".evsecd.lock") || (*p == oem_bundle && bytes.is_empty()))
        })
        .collect();
    let changed: Vec<String> = before
        .iter()
        .filter(|f| !after.contains(f))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        changed.is_empty() && after.len() == before.len(),
        "changed: {changed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_at_once() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let chain = pki.secc_chain_pem();
    let roots: Vec<String> = (0..64)
        .map(|i| {
            issue(&CertSpec::ca(&format!("Concurrent Root {i}"), None), None)
                .unwrap()
                .pem()
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, root) in roots.iter().cloned().enumerate() {
        let c = client(&bus).await;
        let chain = chain.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            for round in 0..10 {
                let start = Instant::now();
                let ok = match (i + round) % 4 {
                    0 => c
                        .verify_certificate(&chain, &["V2G"])
                        .await
                        .is_ok_and(|r| r == "Valid"),
                    1 => c
                        .get_installed_certificates(&["MORootCertificate"])
                        .await
                        .is_ok(),
                    2 => c
                        .get_leaf_certificate_info("V2G", "PEM", true)
                        .await
                        .is_ok_and(|r| r.0 == "Accepted"),
                    _ => c
                        .install_ca_certificate(&root, "MO")
                        .await
                        .is_ok_and(|r| r == "Accepted"),
                };
                latencies.push(start.elapsed());
                errors += usize::from(!ok);
            }
            (errors, latencies)
        }));
    }
    let mut errors = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (e, l) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("no deadlock")
            .unwrap();
        errors += e;
        latencies.extend(l);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "64 clients × 10 calls: {errors} errors, p50 {:?}, p99 {:?}",
        at(0.5),
        at(0.99)
    );
    assert_eq!(errors, 0);
    // Every root was installed exactly once.
    let c = client(&bus).await;
    let (_, chains) = c
        .get_installed_certificates(&["MORootCertificate"])
        .await
        .unwrap();
    assert_eq!(chains.len(), 65);
    let distinct: HashSet<_> = chains
        .iter()
        .map(|c| c.certificate_hash_data.clone())
        .collect();
    assert_eq!(distinct.len(), 65);
    assert_eq!(c.certificate_entries().await.unwrap(), 10 + 64);
    assert_store_sound(&store.certs);
}

/// The least number of SIGKILLs the crash test sends;
/// `EVSEC_CRASH_KILLS` runs it longer.
fn kills() -> usize {
    std::env::var("EVSEC_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_nothing_accepted() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let config = store.write_config("");
    let kills = kills();
    let calls_per_life = 16;
    let mut accepted_roots: Vec<String> = Vec::new();
    let mut accepted_leaves: Vec<String> = Vec::new();
    let mut calls = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    // At least `kills` SIGKILLs and at least 300 mutating calls.
    let mut life = 0;
    while life < kills || calls < 300 {
        life += 1;
        let mut daemon = Daemon::start(&config, &bus);
        let c = client(&bus).await;
        // The killer fires at a pseudo-random moment within this life.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(5 + seed % 60);
        let pid = daemon.child.id() as i32;
        let killer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        for i in 0..calls_per_life {
            calls += 1;
            let answer = match i % 3 {
                0 => {
                    let root = issue(&CertSpec::ca(&format!("Crash {life} {i}"), None), None)
                        .unwrap()
                        .pem();
                    c.install_ca_certificate(&root, "MO")
                        .await
                        .map(|r| (r, Some(root), None))
                }
                1 => match c
                    .generate_certificate_signing_request(
                        "V2G",
                        "DE",
                        "O",
                        &format!("crash-{life}-{i}"),
                        false,
                    )
                    .await
                {
                    Ok((status, csr)) if status == "Accepted" => {
                        let leaf =
                            evsec::testpki::sign_csr(&csr, &CertSpec::leaf("crash"), &pki.cpo_sub2)
                                .unwrap();
                        let pem = String::from_utf8(leaf.to_pem().unwrap()).unwrap();
                        c.update_leaf_certificate(&pem, "V2G")
                            .await
                            .map(|r| (r, None, Some(pem)))
                    }
                    Ok((status, _)) => Ok((status, None, None)),
                    Err(e) => Err(e),
                },
                _ => c
                    .garbage_collect()
                    .await
                    .map(|()| ("done".to_owned(), None, None)),
            };
            match answer {
                Ok((r, Some(root), _)) if r == "Accepted" => accepted_roots.push(root),
                Ok((r, _, Some(leaf))) if r == "Accepted" => accepted_leaves.push(leaf),
                Ok(_) => {}
                Err(_) => break, // killed
            }
        }
        let _ = killer.await;
        let _ = common::wait_with_timeout(&mut daemon.child, Duration::from_secs(5));
    }
    println!(
        "{life} kills, {calls} mutating calls, {} roots and {} leaves accepted",
        accepted_roots.len(),
        accepted_leaves.len()
    );

    // After the last kill: a clean start removes temporary files; every
    // answered Accepted is there, and every file parses.
    let daemon = Daemon::start(&config, &bus);
    let c = client(&bus).await;
    assert_store_sound(&store.certs);
    let mo = std::fs::read_to_string(store.path("ca/mo/MO_ROOT_CA.pem")).unwrap();
    let lost_roots = accepted_roots
        .iter()
        .filter(|r| !mo.contains(r.as_str()))
        .count();
    let leaf_files: String = tree_contents(&store.path("client/cso"))
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .collect();
    let lost_leaves = accepted_leaves
        .iter()
        .filter(|l| !leaf_files.contains(l.as_str()))
        .count();
    println!("lost: {lost_roots} roots, {lost_leaves} leaves");
    assert_eq!((lost_roots, lost_leaves), (0, 0));
    assert!(c.is_ca_certificate_installed("MO").await.unwrap());
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_write_error_and_recovers() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let pki = Pki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let certs = mount.join("certs");
    pki.write_everest_tree(&certs).unwrap();
    let config = dir.path().join("evsec.toml");
    std::fs::write(
        &config,
        format!("certs_directory = \"{}\"\n", certs.display()),
    )
    .unwrap();
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&config, &bus);
    let c = client(&bus).await;

    // Fill the file system, leaving a few bytes.
    let filler = mount.join("filler");
    let mut size = 0usize;
    while std::fs::write(&filler, vec![0u8; size + 4096]).is_ok() {
        size += 4096;
    }
    std::fs::write(&filler, vec![0u8; size]).unwrap();
    let before = tree_contents(&certs);
    let root = issue(&CertSpec::ca("No Room", None), None).unwrap();
    assert_eq!(
        c.install_ca_certificate(&root.pem(), "MO").await.unwrap(),
        "WriteError"
    );
    assert_eq!(
        c.generate_certificate_signing_request("V2G", "DE", "O", "x", false)
            .await
            .unwrap()
            .0,
        "GenerationError"
    );
    assert_eq!(tree_contents(&certs), before, "no partial file");
    assert_store_sound(&certs);

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        c.install_ca_certificate(&root.pem(), "MO").await.unwrap(),
        "Accepted"
    );
    assert!(std::fs::read_to_string(certs.join("ca/mo/MO_ROOT_CA.pem"))
        .unwrap()
        .contains(&root.pem()));
    let _ = std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o755));
}

/// A daemon whose bus is gone can serve nobody: it exits with a failure
/// (and releases the store lock), so that systemd restarts it.
#[test]
fn a_lost_bus_ends_the_daemon_with_a_failure() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let mut bus = PrivateBus::start();
    let mut daemon = Daemon::start(&store.write_config(""), &bus);
    bus.kill();
    let code = common::wait_with_timeout(&mut daemon.child, Duration::from_secs(5));
    assert_eq!(code, Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("bus connection closed: exiting"), "{log}");
    // The lock is free: a new daemon on a new bus opens the same store.
    let bus = PrivateBus::start();
    let again = Daemon::start(&store.write_config(""), &bus);
    assert_eq!(again.terminate(), Some(0));
}

/// A daemon allowed to hash a sparse 1 TiB file, which takes hours.
struct HugeFile {
    pki: Pki,
    store: TempStore,
    bus: PrivateBus,
    daemon: Daemon,
    path: std::path::PathBuf,
    signer: String,
    signature: String,
}

impl HugeFile {
    fn start() -> HugeFile {
        let pki = Pki::generate().unwrap();
        let store = TempStore::with_pki(&pki);
        let bus = PrivateBus::start();
        let config = store.write_config("[limits]\nmax_file_bytes = 1099511627776\n");
        let daemon = Daemon::start(&config, &bus);
        let path = store.dir.path().join("huge.bin");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let signer = pki.mf_root.pem();
        HugeFile {
            pki,
            store,
            bus,
            daemon,
            path,
            signer,
            // An ECDSA signature of the right shape: the hash must be made.
            signature: openssl::base64::encode_block(&[0x30, 0x06, 2, 1, 1, 2, 1, 1]),
        }
    }

    /// `VerifyFileSignature` of the huge file by busctl, a caller of its own.
    fn check_by_busctl(&self) -> std::process::Child {
        std::process::Command::new("busctl")
            .args([
                "--address",
                &self.bus.address,
                "--timeout=3600",
                "call",
                "--",
            ])
            .args([
                "org.evsec.EvseSecurity1",
                "/org/evsec/EvseSecurity1",
                "org.evsec.EvseSecurity1",
                "VerifyFileSignature",
                "sss",
                self.path.to_str().unwrap(),
                &self.signer,
                &self.signature,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// File checks hash on a pool of their own: sixteen checks of a sparse
/// 1 TiB file leave the certificate methods answering, and once their
/// callers leave the bus the hashing stops, so that the next check runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_file_checks_neither_starve_others_nor_outlive_their_callers() {
    let huge = HugeFile::start();
    let (pki, store, bus) = (&huge.pki, &huge.store, &huge.bus);
    let (signer, sig) = (&huge.signer, &huge.signature);
    let c = client(bus).await;
    let mut callers: Vec<std::process::Child> = (0..16).map(|_| huge.check_by_busctl()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for caller in &mut callers {
        assert!(caller.try_wait().unwrap().is_none(), "a check ended early");
    }
    // The certificate methods answer while the hashing goes on.
    for _ in 0..20 {
        let answer = tokio::time::timeout(Duration::from_secs(5), c.get_verify_file("V2G")).await;
        assert!(answer.is_ok_and(|r| r.unwrap().ends_with("V2G_ROOT_CA.pem")));
        let verdict = tokio::time::timeout(
            Duration::from_secs(5),
            c.verify_certificate(&pki.secc_chain_pem(), &["V2G"]),
        )
        .await;
        assert_eq!(verdict.unwrap().unwrap(), "Valid");
    }
    // The callers leave; their checks stop, and a small file is checked
    // by the same pool within seconds, not hours.
    for caller in &mut callers {
        let _ = caller.kill();
        let _ = caller.wait();
    }
    let small = store.dir.path().join("small.bin");
    std::fs::write(&small, b"firmware").unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        c.verify_file_signature(small.to_str().unwrap(), signer, sig),
    )
    .await;
    assert!(
        matches!(answer, Ok(Ok(false))),
        "the pool stayed busy: {answer:?} after {:?}",
        started.elapsed()
    );
}

/// A file over `limits.max_file_bytes` is refused before it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_size_cap_are_false_at_once() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let sec =
        evsec::EvseSecurity::open(store.config_with("[limits]\nmax_file_bytes = 1000\n")).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&pki.mf_root.key_pem()).unwrap();
    let sign = |data: &[u8]| {
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        openssl::base64::encode_block(&signer.sign_oneshot_to_vec(data).unwrap())
    };
    for (len, expected) in [(1000usize, true), (1001, false)] {
        let data = vec![7u8; len];
        let file = store.dir.path().join(format!("fw{len}.bin"));
        std::fs::write(&file, &data).unwrap();
        assert_eq!(
            sec.verify_file_signature(
                file.to_str().unwrap(),
                &pki.mf_root.pem(),
                &sign(&data),
                None
            ),
            expected,
            "{len} bytes"
        );
    }
}

/// A sender may have 16 calls in flight, waiting ones included; beyond
/// that it is told `LimitsExceeded` at once, and other callers are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_bounded_per_sender() {
    let huge = HugeFile::start();
    let (bus, signer, sig) = (&huge.bus, huge.signer.clone(), huge.signature.clone());
    let greedy = client(bus).await;
    let path = huge.path.to_str().unwrap().to_owned();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (c, path, signer, sig) = (greedy.clone(), path.clone(), signer.clone(), sig.clone());
        calls.spawn(async move { c.verify_file_signature(&path, &signer, &sig).await });
    }
    // 24 are refused at once; the 16 admitted ones hash for hours.
    let mut refusals = 0;
    while refusals < 24 {
        let ended = tokio::time::timeout(Duration::from_secs(5), calls.join_next())
            .await
            .expect("refusals are immediate")
            .unwrap()
            .unwrap();
        match ended {
            Err(evsec::dbus::ClientError::Method { name, .. })
                if name == "org.freedesktop.DBus.Error.LimitsExceeded" =>
            {
                refusals += 1
            }
            other => panic!("expected LimitsExceeded, got {other:?}"),
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(1), calls.join_next())
            .await
            .is_err(),
        "the admitted checks are still hashing"
    );
    let other = client(bus).await;
    assert!(other
        .get_verify_file("V2G")
        .await
        .unwrap()
        .ends_with("V2G_ROOT_CA.pem"));
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        greedy.verify_file_signature(&path, &signer, &sig),
    )
    .await
    .expect("a refusal is immediate");
    match refused {
        Err(evsec::dbus::ClientError::Method { name, message }) => {
            assert_eq!(name, "org.freedesktop.DBus.Error.LimitsExceeded");
            assert!(message.contains("try again later"), "{message}");
        }
        other => panic!("expected LimitsExceeded, got {other:?}"),
    }
}

/// SIGTERM while a huge file is hashed: the daemon stops the hashing and
/// exits cleanly at once, instead of waiting for the file's end.
#[test]
fn sigterm_during_a_file_check_exits_at_once() {
    let huge = HugeFile::start();
    let mut caller = huge.check_by_busctl();
    std::thread::sleep(Duration::from_millis(500));
    assert!(caller.try_wait().unwrap().is_none(), "the check is running");
    let started = Instant::now();
    assert_eq!(huge.daemon.terminate(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let _ = caller.kill();
    let _ = caller.wait();
}
