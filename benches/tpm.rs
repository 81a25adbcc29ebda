//! TPM keys on a software TPM against software keys, measured in the same
//! run. `cargo bench --bench tpm` (add `-- --quick` for a short run).
//!
//! It starts swtpm, then times, as medians:
//! - in process: a software key and CSR (the baseline), a TPM key and CSR,
//!   and pairing a `.tkey` the daemon has not seen (a TPM load) or has;
//! - over D-Bus, against evsecd on a private bus:
//!   `GenerateCertificateSigningRequest` with `use_tpm` false and true.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, Daemon, PrivateBus, SoftwareTpm, TempStore};
use evsec::config::Tpm;
use evsec::tpm;
use evsec::x509::{self, CsrSubject};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(iterations: usize, mut call: impl FnMut()) -> Duration {
    call();
    median(
        (0..iterations)
            .map(|_| {
                let start = Instant::now();
                call();
                start.elapsed()
            })
            .collect(),
    )
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iterations = if quick { 10 } else { 50 };
    let Some(software_tpm) = SoftwareTpm::start() else {
        eprintln!("no swtpm: nothing to measure");
        return;
    };
    // Before any other thread exists, as evsecd does with [tpm] tcti.
    std::env::set_var(tpm::TCTI_VARIABLE, &software_tpm.tcti);
    let config = Tpm {
        enabled: true,
        ..Tpm::default()
    };
    let subject = CsrSubject {
        country: "DE".into(),
        organization: "Example CPO".into(),
        common_name: "SECC-BENCH".into(),
    };

    let baseline = time(iterations, || {
        x509::generate_csr(&subject, x509::CsrKey::P256).expect("software CSR");
    });
    let tpm_csr = time(iterations, || {
        tpm::generate_csr(&config, &subject, x509::CsrKey::P256).expect("TPM CSR");
    });
    // Key files made outside the daemon, so that their first pairing loads
    // them into the TPM.
    let dir = tempfile::tempdir().expect("tempdir");
    let unseen: Vec<Vec<u8>> = (0..=iterations)
        .map(|i| {
            let path = dir.path().join(format!("{i}.tkey"));
            let out = Command::new("openssl")
                .args(["genpkey", "-provider", "tpm2", "-provider", "default"])
                .args(["-algorithm", "EC", "-pkeyopt", "group:P-256", "-out"])
                .arg(&path)
                .env(tpm::TCTI_VARIABLE, &software_tpm.tcti)
                .output()
                .expect("openssl genpkey");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::read(&path).expect("key file")
        })
        .collect();
    let mut next = unseen.iter();
    let first_pairing = time(iterations, || {
        tpm::key_fingerprint(&config, next.next().expect("key")).expect("TPM load");
    });
    let seen = &unseen[0];
    let known_pairing = time(iterations, || {
        tpm::key_fingerprint(&config, seen).expect("known key");
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (dbus_software, dbus_tpm) = runtime.block_on(async {
        let store = TempStore::empty();
        let daemon_config = store.write_config(&format!(
            "[tpm]\nenabled = true\ntcti = \"{}\"\n",
            software_tpm.tcti
        ));
        let bus = PrivateBus::start();
        let _daemon = Daemon::start(&daemon_config, &bus);
        let c = client(&bus).await;
        let mut timed = Vec::new();
        for use_tpm in [false, true] {
            let mut samples = Vec::new();
            for i in 0..=iterations {
                let start = Instant::now();
                let (status, _) = c
                    .generate_certificate_signing_request(
                        "V2G",
                        "DE",
                        "Example CPO",
                        "SECC-BENCH",
                        use_tpm,
                    )
                    .await
                    .expect("call");
                assert_eq!(status, "Accepted");
                if i > 0 {
                    samples.push(start.elapsed());
                }
            }
            timed.push(median(samples));
        }
        (timed[0], timed[1])
    });

    let ratio = |d: Duration| format!("{:.2}x", d.as_secs_f64() / baseline.as_secs_f64());
    println!("medians of {iterations} calls; ratio to the baseline of this run");
    println!("{:<58} {:>10} {:>8}", "what", "median", "ratio");
    for (what, d) in [
        ("baseline: software P-256 key + CSR, in process", baseline),
        ("TPM P-256 key + CSR (swtpm), in process", tpm_csr),
        ("pair a .tkey not seen before (TPM load)", first_pairing),
        ("pair a .tkey seen before (remembered)", known_pairing),
        (
            "GenerateCertificateSigningRequest use_tpm=false, D-Bus",
            dbus_software,
        ),
        (
            "GenerateCertificateSigningRequest use_tpm=true, D-Bus",
            dbus_tpm,
        ),
    ] {
        println!("{what:<58} {:>10} {:>8}", fmt(d), ratio(d));
    }
}
