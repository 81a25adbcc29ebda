//! evsecd over D-Bus against an in-process OpenSSL baseline, on generated
//! stores. `cargo bench --bench dbus` (add `-- --quick` for a short run,
//! `-- --max-extra N` to stop at N extra roots).
//!
//! For each N in 10, 100, 1000, 10000 extra roots in the V2G bundle (plus 50
//! SECC leaves with their 50 keys) it starts a private dbus-daemon and
//! evsecd as a real process, times every contract method from a zbus client
//! and prints median and p90 per call, each as a ratio to the baseline: the
//! library calling OpenSSL directly to parse and verify the same chain,
//! measured in the same run. It also prints start-to-ready time, idle RSS
//! before and after 100,000 calls, and the size of the stripped release
//! binary.
//!
//! `-- --iso15118-20` measures instead what the -20 leaf costs against the
//! -2 one: `GenerateCertificateSigningRequest` with a P-521 and an Ed448
//! key against P-256, and `GetLeafCertificateInfo(V2G20)` against `(V2G)`,
//! each also as a ratio to a `Peer.Ping` of the same daemon.
//!
//! `-- --hostile` measures instead what hostile calls cost the daemon: peak
//! RSS while clients flood it with 16 MiB arguments, against its idle RSS;
//! and daemon CPU per call of chains of crafted RSA keys (a 3070-bit public
//! exponent), against the same calls with an ordinary chain.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evsec::dbus::{Bus, Client};
use evsec::testpki::{issue, issue_with_key, sign_csr, CertSpec, Pki};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509};

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The baseline: parse each PEM chain and verify it, with OpenSSL
/// directly.
fn baseline<'a>(chains: impl Iterator<Item = &'a str>, anchors: &[X509]) -> Stats {
    let mut builder = X509StoreBuilder::new().unwrap();
    for a in anchors {
        builder.add_cert(a.clone()).unwrap();
    }
    let store = builder.build();
    let samples = chains
        .map(|chain_pem| {
            let start = Instant::now();
            let certs = X509::stack_from_pem(chain_pem.as_bytes()).unwrap();
            let mut untrusted = Stack::new().unwrap();
            for c in &certs[1..] {
                untrusted.push(c.clone()).unwrap();
            }
            let mut ctx = X509StoreContext::new().unwrap();
            let ok = ctx
                .init(&store, &certs[0], &untrusted, |c| c.verify_cert())
                .unwrap();
            assert!(ok);
            start.elapsed()
        })
        .collect();
    stats(samples)
}

struct Bench {
    _dir: tempfile::TempDir,
    bus: Child,
    daemon: Child,
    address: String,
    ready: Duration,
    started: Instant,
    config: PathBuf,
    notify: std::os::unix::net::UnixDatagram,
    notify_path: PathBuf,
}

impl Bench {
    /// Stops evsecd and starts it again on the same store, as after a
    /// reboot: the parse cache the first start wrote is there now.
    fn restart(&mut self) {
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let _ = self.daemon.wait();
        self.started = Instant::now();
        self.daemon = spawn_evsecd(&self.config, &self.address, &self.notify_path);
        let mut buf = [0u8; 16];
        self.notify.recv(&mut buf).expect("READY=1");
        self.ready = self.started.elapsed();
    }
}

fn spawn_evsecd(config: &Path, address: &str, notify: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_evsecd"))
        .arg("--config")
        .arg(config)
        .args(["--bus", address])
        .env("NOTIFY_SOCKET", notify)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// Writes the store: the demo PKI, `extra` more roots in the V2G bundle,
/// and 50 SECC leaves with their keys.
fn make_store(pki: &Pki, certs: &Path, extra: usize, extra_pem: &str) {
    pki.write_everest_tree(certs).unwrap();
    let bundle = certs.join("ca/v2g/V2G_ROOT_CA.pem");
    let mut text = std::fs::read_to_string(&bundle).unwrap();
    text.push_str(
        extra_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .take(extra)
            .collect::<String>()
            .as_str(),
    );
    std::fs::write(&bundle, text).unwrap();
    for i in 0..50 {
        let leaf = issue(
            &CertSpec::leaf(&format!("SECC-{i:03}")).valid(-(i as i64) - 1, 300 + i as i64),
            Some(&pki.cpo_sub2),
        )
        .unwrap();
        let chain = leaf.pem() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
        std::fs::write(
            certs.join(format!("client/cso/SECC_LEAF_{i:03}.pem")),
            leaf.pem(),
        )
        .unwrap();
        std::fs::write(
            certs.join(format!("client/cso/CPO_CERT_SECC_LEAF_CHAIN_{i:03}.pem")),
            chain,
        )
        .unwrap();
        std::fs::write(
            certs.join(format!("client/cso/SECC_LEAF_{i:03}.key")),
            leaf.key_pem(),
        )
        .unwrap();
    }
}

fn start(pki: &Pki, extra: usize, extra_pem: &str) -> Bench {
    start_with(pki, extra, extra_pem, "")
}

/// As [`start`], with more TOML for the config (tables after `[limits]`).
fn start_with(pki: &Pki, extra: usize, extra_pem: &str, more_config: &str) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_store(pki, &certs, extra, extra_pem);
    let config = dir.path().join("evsec.toml");
    std::fs::write(&config, format!("certs_directory = \"{}\"\n[limits]\nmax_store_entries = 100000\nmax_store_bytes = 1000000000\n{more_config}", certs.display())).unwrap();
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
        .arg(format!(
            "--address=unix:path={}",
            dir.path().join("bus.sock").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon");
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim().to_owned();
    let notify = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let started = Instant::now();
    let daemon = spawn_evsecd(&config, &address, &notify);
    let mut buf = [0u8; 16];
    socket.recv(&mut buf).expect("READY=1");
    let ready = started.elapsed();
    Bench {
        _dir: dir,
        bus,
        daemon,
        address,
        ready,
        started,
        config,
        notify: socket,
        notify_path: notify,
    }
}

async fn time<F, Fut, T>(iterations: usize, mut call: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..iterations.min(20) {
        call().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        call().await;
        samples.push(start.elapsed());
    }
    stats(samples)
}

/// Times two calls taking turns, so that both see the same conditions.
async fn time_pair<A, FutA, B, FutB>(iterations: usize, mut a: A, mut b: B) -> (Stats, Stats)
where
    A: FnMut() -> FutA,
    FutA: std::future::Future,
    B: FnMut() -> FutB,
    FutB: std::future::Future,
{
    for _ in 0..iterations.min(20) {
        a().await;
        b().await;
    }
    let (mut of_a, mut of_b) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let start = Instant::now();
        a().await;
        of_a.push(start.elapsed());
        let start = Instant::now();
        b().await;
        of_b.push(start.elapsed());
    }
    (stats(of_a), stats(of_b))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let max_extra: usize = args
        .iter()
        .position(|a| a == "--max-extra")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let iterations = if quick { 50 } else { 300 };
    let pki = Pki::generate().unwrap();
    if args.iter().any(|a| a == "--hostile") {
        hostile(&pki).await;
        return;
    }
    if args.iter().any(|a| a == "--iso15118-20") {
        iso15118_20(&pki, iterations).await;
        return;
    }
    let chain = pki.secc_chain_pem();
    eprintln!("generating {max_extra} extra roots…");
    let extra_pem: String = (0..max_extra)
        .map(|i| {
            issue(&CertSpec::ca(&format!("Extra Root {i}"), None), None)
                .unwrap()
                .pem()
        })
        .collect();

    // Chains never seen before, for verifications the verdict cache cannot
    // answer.
    let fresh_chains: Vec<String> = (0..iterations + 20)
        .map(|i| {
            let leaf = issue(&CertSpec::leaf(&format!("EV {i}")), Some(&pki.cpo_sub2)).unwrap();
            leaf.pem() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem()
        })
        .collect();
    // The same with a chain never seen before on every call.
    let anchors = std::slice::from_ref(&pki.v2g_root.cert);
    let fresh_base = baseline(fresh_chains.iter().map(String::as_str), anchors);
    println!(
        "in-process OpenSSL parse + verify of a new chain each time: median {}, p90 {}",
        fmt(fresh_base.median),
        fmt(fresh_base.p90)
    );
    let base = baseline(std::iter::repeat_n(chain.as_str(), iterations * 2), anchors);
    println!(
        "baseline (in-process OpenSSL parse + verify of leaf + 2 Sub-CAs): median {}, p90 {}\n",
        fmt(base.median),
        fmt(base.p90)
    );
    let ratio = |s: &Stats| format!("{:.2}x", s.median.as_secs_f64() / base.median.as_secs_f64());

    let mut rows: Vec<(String, usize, Stats)> = Vec::new();
    for extra in [10usize, 100, 1000, 10_000]
        .into_iter()
        .filter(|n| *n <= max_extra)
    {
        let mut bench = start(&pki, extra, &extra_pem);
        let c = Client::connect(&Bus::Address(bench.address.clone()))
            .await
            .unwrap();
        c.verify_certificate(&chain, &["V2G"]).await.unwrap();
        let first_verify = bench.started.elapsed();
        println!(
            "N = {extra}: start to bus-ready {} ms, RSS after start {} KiB",
            bench.ready.as_millis(),
            rss_kib(bench.daemon.id())
        );
        let nobody = evsec::dbus::WireHashData {
            hash_algorithm: "SHA256".into(),
            issuer_name_hash: "00".repeat(32),
            issuer_key_hash: "00".repeat(32),
            serial_number: "1".into(),
        };
        let n = if extra >= 10_000 {
            iterations / 3
        } else {
            iterations
        };
        println!(
            "N = {extra}: start to the first VerifyCertificate answered {} ms",
            first_verify.as_millis()
        );
        bench.restart();
        c.verify_certificate(&chain, &["V2G"]).await.unwrap();
        println!(
            "N = {extra}: restart (parse cache) to the first VerifyCertificate answered {} ms",
            bench.started.elapsed().as_millis()
        );
        let mut add = |name: &str, s: Stats| rows.push((name.to_owned(), extra, s));
        // The two baselines of this N, measured in the same run: a round
        // trip with no work behind it, and one durable small write on the
        // store's file system.
        add(PING, time(n, || c.ping()).await);
        add(DURABLE_WRITE, durable_write(bench._dir.path(), n));
        add(
            "VerifyCertificate (repeated chain)",
            time(n, || c.verify_certificate(&chain, &["V2G"])).await,
        );
        let mut fresh = fresh_chains.iter();
        add(
            "VerifyCertificate (new chain)",
            time(n, || c.verify_certificate(fresh.next().unwrap(), &["V2G"])).await,
        );
        add(
            "GetInstalledCertificates (all)",
            time(n, || c.get_installed_certificates(&[])).await,
        );
        add(
            "GetLeafCertificateInfo V2G",
            time(n, || c.get_leaf_certificate_info("V2G", "PEM", false)).await,
        );
        add(
            "GetLeafCertificateInfo V2G +ocsp",
            time(n, || c.get_leaf_certificate_info("V2G", "PEM", true)).await,
        );
        add(
            "GetAllValidCertificatesInfo V2G",
            time(n, || c.get_all_valid_certificates_info("V2G", "PEM", true)).await,
        );
        add(
            "GetLeafExpiryDaysCount",
            time(n, || c.get_leaf_expiry_days_count("V2G")).await,
        );
        add(
            "IsCaCertificateInstalled",
            time(n, || c.is_ca_certificate_installed("V2G")).await,
        );
        add("GetVerifyFile", time(n, || c.get_verify_file("V2G")).await);
        add(
            "GetVerifyLocation",
            time(n, || c.get_verify_location("V2G")).await,
        );
        add(
            "GetV2gOcspRequestData",
            time(n, || c.get_v2g_ocsp_request_data()).await,
        );
        add(
            "GetMoOcspRequestData",
            time(n, || c.get_mo_ocsp_request_data(&chain)).await,
        );
        add(
            "UpdateOcspCache (NotFound)",
            time(n, || c.update_ocsp_cache(&nobody, "MA==")).await,
        );
        add(
            "DeleteCertificate (NotFound)",
            time(n, || c.delete_certificate(&nobody)).await,
        );
        // Installs write and fsync: fewer rounds, each a new root.
        let installs = if quick { 10 } else { 30 };
        let roots: Vec<String> = (0..installs + 20)
            .map(|i| {
                issue(&CertSpec::ca(&format!("Bench {extra} {i}"), None), None)
                    .unwrap()
                    .pem()
            })
            .collect();
        let mut next = roots.iter();
        add(
            "InstallCaCertificate",
            time(installs, || {
                c.install_ca_certificate(next.next().unwrap(), "MO")
            })
            .await,
        );
        let csrs = if quick { 10 } else { 30 };
        add(
            "GenerateCertificateSigningRequest",
            time(csrs, || {
                c.generate_certificate_signing_request("V2G", "DE", "O", "bench", false)
            })
            .await,
        );
        let mut leaves = Vec::new();
        for i in 0..csrs + 20 {
            let (_, csr) = c
                .generate_certificate_signing_request("V2G", "DE", "O", &format!("leaf{i}"), false)
                .await
                .unwrap();
            let cert = sign_csr(&csr, &CertSpec::leaf(&format!("leaf{i}")), &pki.cpo_sub2).unwrap();
            leaves.push(String::from_utf8(cert.to_pem().unwrap()).unwrap() + &pki.cpo_sub2.pem());
        }
        let mut next_leaf = leaves.iter();
        add(
            "UpdateLeafCertificate",
            time(csrs, || {
                c.update_leaf_certificate(next_leaf.next().unwrap(), "V2G")
            })
            .await,
        );
        add("GarbageCollect", time(10, || c.garbage_collect()).await);

        // Verify from 8 clients at once: per-call median under load.
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(
                Client::connect(&Bus::Address(bench.address.clone()))
                    .await
                    .unwrap(),
            );
        }
        let per_client = n / 2;
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|cl| {
                let chain = chain.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    for _ in 0..per_client {
                        let start = Instant::now();
                        cl.verify_certificate(&chain, &["V2G"]).await.unwrap();
                        samples.push(start.elapsed());
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        add("VerifyCertificate, 8 clients", stats(all));

        if extra == 1000 {
            let before = rss_kib(bench.daemon.id());
            let total = if quick { 10_000 } else { 100_000 };
            for _ in 0..total {
                c.is_ca_certificate_installed("V2G").await.unwrap();
            }
            println!(
                "RSS before {total} calls {before} KiB, after {} KiB",
                rss_kib(bench.daemon.id())
            );
        }
        drop(bench);
    }

    println!(
        "\n{:<36} {:>7} {:>10} {:>10} {:>9} {:>9} {:>13}",
        "method", "N", "median", "p90", "÷ base", "÷ ping", "÷ write+ping"
    );
    let of = |name: &str, n: usize| {
        rows.iter()
            .find(|r| r.0 == name && r.1 == n)
            .map_or(f64::NAN, |r| r.2.median.as_secs_f64())
    };
    for (name, n, s) in &rows {
        let median = s.median.as_secs_f64();
        let ping = of(PING, *n);
        let writes = WRITES.iter().find(|(w, _)| w == name).map(|(_, k)| *k);
        let per_write = writes.map_or(String::new(), |k| {
            format!("{:.2}x", median / (k as f64 * of(DURABLE_WRITE, *n) + ping))
        });
        println!(
            "{name:<36} {n:>7} {:>10} {:>10} {:>9} {:>8.2}x {per_write:>13}",
            fmt(s.median),
            fmt(s.p90),
            ratio(s),
            median / ping,
        );
    }
    let fresh_budget = fresh_base.median.as_secs_f64();
    for (_, n, s) in rows
        .iter()
        .filter(|r| r.0 == "VerifyCertificate (new chain)")
    {
        println!(
            "VerifyCertificate (new chain) at N = {n}: {:.2}x in-process parse + verify + one ping",
            s.median.as_secs_f64() / (fresh_budget + of(PING, *n))
        );
    }
    mixed_load(&pki, &extra_pem, quick).await;
    println!("\ngrowth of the median from the smallest to the largest N:");
    let names: Vec<&String> = rows.iter().map(|r| &r.0).fold(Vec::new(), |mut v, n| {
        if !v.contains(&n) {
            v.push(n);
        }
        v
    });
    for name in names {
        let of: Vec<&Stats> = rows.iter().filter(|r| &r.0 == name).map(|r| &r.2).collect();
        if let (Some(first), Some(last)) = (of.first(), of.last()) {
            println!(
                "  {name:<36} {:.2}x",
                last.median.as_secs_f64() / first.median.as_secs_f64()
            );
        }
    }
    let release = PathBuf::from(env!("CARGO_BIN_EXE_evsecd"));
    if let Ok(meta) = std::fs::metadata(&release) {
        println!(
            "\nevsecd binary ({}): {:.2} MiB",
            release.display(),
            meta.len() as f64 / 1_048_576.0
        );
    }
}

/// The row of the ping baseline.
const PING: &str = "Peer.Ping (baseline)";
/// The row of the durable-write baseline.
const DURABLE_WRITE: &str = "durable small write (baseline)";
/// The writes, each with the number of durable writes it must make: a CSR
/// writes its key and the record of CSR keys; a leaf install writes its two
/// files as one group (each file, the intent record, and its removal).
const WRITES: &[(&str, usize)] = &[
    ("InstallCaCertificate", 1),
    ("GenerateCertificateSigningRequest", 2),
    ("UpdateLeafCertificate", 3),
];

/// A durable small write, `rounds` times: a temporary file, fsync, rename,
/// fsync of the directory, as the daemon writes.
fn durable_write(dir: &Path, rounds: usize) -> Stats {
    use std::io::Write;
    let target = dir.join("durable-baseline");
    let data = vec![b'x'; 1200];
    let samples = (0..rounds)
        .map(|i| {
            let start = Instant::now();
            let tmp = dir.join(format!(".tmp-{i}"));
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, &target).unwrap();
            std::fs::File::open(dir).unwrap().sync_all().unwrap();
            start.elapsed()
        })
        .collect();
    stats(samples)
}

/// A station's mix from 64 clients at once, 30% of it writes (CA installs
/// and CSRs), against a store with 100 extra roots; then the same clients
/// only reading. Prints read p50 and p99 of both, the write throughput
/// and the errors.
async fn mixed_load(pki: &Pki, extra_pem: &str, quick: bool) {
    const CLIENTS: usize = 64;
    let rounds = if quick { 20 } else { 50 };
    let bench = start(pki, 100, extra_pem);
    let chain = std::sync::Arc::new(pki.secc_chain_pem());
    let roots: Vec<String> = (0..CLIENTS * rounds)
        .map(|i| {
            issue(&CertSpec::ca(&format!("Mix {i}"), None), None)
                .unwrap()
                .pem()
        })
        .collect();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(
            Client::connect(&Bus::Address(bench.address.clone()))
                .await
                .unwrap(),
        );
    }
    for writes in [true, false] {
        let began = Instant::now();
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(k, c)| {
                let chain = chain.clone();
                let mine: Vec<String> = roots[k * rounds..(k + 1) * rounds].to_vec();
                tokio::spawn(async move {
                    let (mut reads, mut written, mut errors) = (Vec::new(), 0usize, 0usize);
                    for (i, root) in mine.iter().enumerate() {
                        let start = Instant::now();
                        let ok = match (writes, (i * 10 + k) % 10) {
                            (true, 0..=1) => c
                                .install_ca_certificate(root, "MO")
                                .await
                                .is_ok_and(|r| r == "Accepted"),
                            (true, 2) => c
                                .generate_certificate_signing_request(
                                    "V2G", "DE", "O", "mix", false,
                                )
                                .await
                                .is_ok_and(|(s, _)| s == "Accepted"),
                            (_, 3..=5) => c
                                .verify_certificate(&chain, &["V2G"])
                                .await
                                .is_ok_and(|r| r == "Valid"),
                            (_, 6..=7) => c
                                .get_leaf_certificate_info("V2G", "PEM", false)
                                .await
                                .is_ok_and(|(s, _)| s == "Accepted"),
                            _ => c.is_ca_certificate_installed("V2G").await.is_ok_and(|b| b),
                        };
                        let is_write = writes && (i * 10 + k) % 10 <= 2;
                        if is_write {
                            written += 1;
                        } else {
                            reads.push(start.elapsed());
                        }
                        errors += usize::from(!ok);
                    }
                    (reads, written, errors)
                })
            })
            .collect();
        let (mut reads, mut written, mut errors) = (Vec::new(), 0, 0);
        for t in tasks {
            let (r, w, e) = t.await.unwrap();
            reads.extend(r);
            written += w;
            errors += e;
        }
        let wall = began.elapsed();
        let s = stats(reads.clone());
        let mut sorted = reads;
        sorted.sort();
        let p99 = sorted[((sorted.len() as f64 - 1.0) * 0.99).round() as usize];
        println!(
            "mixed load, {CLIENTS} clients, {}: read p50 {}, p99 {}, {written} writes in {:.2} s ({:.0}/s), {errors} errors",
            if writes { "30% writes" } else { "reads only" },
            fmt(s.median),
            fmt(p99),
            wall.as_secs_f64(),
            written as f64 / wall.as_secs_f64(),
        );
    }
}

/// CPU time the process has used, user and system, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// An RSA-3072 key whose public exponent is a 3070-bit prime: each
/// signature check with it costs milliseconds.
fn crafted_rsa_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::rsa::Rsa;
    let bn = || BigNum::new().unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let (mut p, mut q, mut e) = (bn(), bn(), bn());
    p.generate_prime(1536, false, None, None).unwrap();
    q.generate_prime(1536, false, None, None).unwrap();
    // A prime e below phi(n) is coprime to it.
    e.generate_prime(3070, false, None, None).unwrap();
    let one = BigNum::from_u32(1).unwrap();
    let (mut n, mut p1, mut q1, mut phi) = (bn(), bn(), bn(), bn());
    n.checked_mul(&p, &q, &mut ctx).unwrap();
    p1.checked_sub(&p, &one).unwrap();
    q1.checked_sub(&q, &one).unwrap();
    phi.checked_mul(&p1, &q1, &mut ctx).unwrap();
    let (mut d, mut dp, mut dq, mut qi) = (bn(), bn(), bn(), bn());
    d.mod_inverse(&e, &phi, &mut ctx).unwrap();
    dp.nnmod(&d, &p1, &mut ctx).unwrap();
    dq.nnmod(&d, &q1, &mut ctx).unwrap();
    qi.mod_inverse(&q, &p, &mut ctx).unwrap();
    let rsa = Rsa::from_private_components(n, e, d, p, q, dp, dq, qi).unwrap();
    openssl::pkey::PKey::from_rsa(rsa).unwrap()
}

/// 32 self-issued CA certificates of `key` (as many PEM blocks as a chain
/// may hold), as one PEM text.
fn self_issued_chain(key: &openssl::pkey::PKey<openssl::pkey::Private>) -> String {
    (0..32)
        .map(|_| {
            issue_with_key(&CertSpec::ca("Self-issued", None), None, key.clone())
                .unwrap()
                .pem()
        })
        .collect()
}

/// Daemon CPU ticks per call, over `calls` calls.
async fn ticks_per_call<F, Fut, T>(pid: u32, calls: usize, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before = cpu_ticks(pid);
    for _ in 0..calls {
        call().await;
    }
    (cpu_ticks(pid) - before) as f64 / calls as f64
}

async fn hostile(pki: &Pki) {
    let bench = start(pki, 10, "");
    let pid = bench.daemon.id();
    let address = Bus::Address(bench.address.clone());
    let c = Client::connect(&address).await.unwrap();
    let chain = pki.secc_chain_pem();
    for _ in 0..50 {
        c.verify_certificate(&chain, &["V2G"]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);
    // Peak RSS from here on: writing 5 to clear_refs resets VmHWM.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();

    // 4 clients, 20 calls of 16 MiB each, all at once: 1.25 GiB sent.
    let huge = "A".repeat(16 << 20);
    let mut flooders = Vec::new();
    for _ in 0..4 {
        flooders.push(Client::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for cl in flooders {
        for _ in 0..20 {
            let (cl, huge) = (cl.clone(), huge.clone());
            tasks.push(tokio::spawn(async move {
                match cl.verify_certificate(&huge, &["V2G"]).await {
                    Ok(result) => result.to_string(),
                    Err(evsec::dbus::ClientError::Method { name, .. }) => name,
                    Err(e) => format!("{e}"),
                }
            }));
        }
    }
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        *answers.entry(t.await.unwrap()).or_default() += 1;
    }
    let flood_time = started.elapsed();
    let peak = status_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "flood of 80 VerifyCertificate calls of 16 MiB from 4 clients, {} ms: answers {answers:?}",
        flood_time.as_millis()
    );
    println!(
        "RSS idle {idle} KiB, peak during the flood {peak} KiB ({:.2}x idle), 2 s after {after} KiB ({:.2}x idle)",
        peak as f64 / idle as f64,
        after as f64 / idle as f64
    );

    // The baseline is the same shape with an ordinary key (e = 65537), so
    // that the ratio shows what the crafted keys add, not what parsing 32
    // certificates costs.
    let crafted = self_issued_chain(&crafted_rsa_key());
    let ordinary_key =
        openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(3072).unwrap()).unwrap();
    let ordinary = self_issued_chain(&ordinary_key);
    let end = "-----END CERTIFICATE-----\n";
    let first = |chain: &str| chain[..chain.find(end).unwrap() + end.len()].to_owned();
    let (crafted_root, ordinary_root) = (first(&crafted), first(&ordinary));
    println!(
        "chains of 32 self-issued RSA-3072 certificates: crafted {} bytes, ordinary {} bytes",
        crafted.len(),
        ordinary.len()
    );
    let calls = 200;
    let hz = 100.0; // USER_HZ on Linux
    let ocsp_ticks = |chain: String| {
        let c = c.clone();
        async move { ticks_per_call(pid, calls, || c.get_mo_ocsp_request_data(&chain)).await }
    };
    let verify_ticks = |chain: String| {
        let c = c.clone();
        async move { ticks_per_call(pid, calls, || c.verify_certificate(&chain, &["MO"])).await }
    };
    let rows = [
        (
            "GetMoOcspRequestData, 32 certificates",
            ocsp_ticks(ordinary.clone()).await,
            ocsp_ticks(crafted.clone()).await,
        ),
        (
            "VerifyCertificate, one root",
            verify_ticks(ordinary_root.clone()).await,
            verify_ticks(crafted_root.clone()).await,
        ),
    ];
    for (what, normal, crafted) in rows {
        println!(
            "{what}: daemon CPU per call {:.2} ms with crafted keys, {:.2} ms with ordinary ones: {:.2}x ({calls} calls each)",
            crafted * 1000.0 / hz,
            normal * 1000.0 / hz,
            crafted / normal
        );
    }
    let answer = c.verify_certificate(&crafted_root, &["MO"]).await.unwrap();
    let ocsp = c.get_mo_ocsp_request_data(&crafted).await.unwrap();
    println!(
        "answers to the crafted calls: VerifyCertificate {answer}, GetMoOcspRequestData {} entries",
        ocsp.len()
    );
}

/// `-- --iso15118-20`: the -20 CSR and leaf info against their -2
/// counterparts, on one daemon per -20 key kind.
async fn iso15118_20(pki: &Pki, iterations: usize) {
    use evsec::testpki::Pki20;
    use evsec::x509::CsrKey;

    println!("| call | median | p90 | ÷ -2 counterpart | ÷ Peer.Ping |");
    println!("|---|---|---|---|---|");
    for (kind, name) in [(CsrKey::P521, "P521"), (CsrKey::Ed448, "Ed448")] {
        let bench = start_with(
            pki,
            10,
            "",
            &format!("[iso15118]\nv2g20_key = \"{name}\"\n"),
        );
        let c = Client::connect(&Bus::Address(bench.address.clone()))
            .await
            .unwrap();
        let pki20 = Pki20::generate(kind).unwrap();
        assert_eq!(
            c.install_ca_certificate(&pki20.v2g_root.pem(), "V2G")
                .await
                .unwrap(),
            "Accepted"
        );
        let (status, csr) = c
            .generate_certificate_signing_request("V2G20", "DE", "O", "SECC-20", false)
            .await
            .unwrap();
        assert_eq!(status, "Accepted");
        let leaf = sign_csr(&csr, &CertSpec::leaf("SECC-20"), &pki20.cpo_sub2).unwrap();
        let chain = String::from_utf8(leaf.to_pem().unwrap()).unwrap()
            + &pki20.cpo_sub2.pem()
            + &pki20.cpo_sub1.pem();
        assert_eq!(
            c.update_leaf_certificate(&chain, "V2G20").await.unwrap(),
            "Accepted"
        );

        let ping = time(iterations, || c.ping()).await;
        let csr_of = |leaf: &'static str| {
            let c = c.clone();
            move || {
                let c = c.clone();
                async move {
                    let (status, _) = c
                        .generate_certificate_signing_request(leaf, "DE", "O", "bench", false)
                        .await
                        .unwrap();
                    assert_eq!(status, "Accepted");
                }
            }
        };
        // Interleaved: each CSR leaves a key behind, and the store the
        // later calls see is larger.
        let (csr2, csr20) = time_pair(iterations, csr_of("V2G"), csr_of("V2G20")).await;
        let info_of = |leaf: &'static str| {
            let c = c.clone();
            move || {
                let c = c.clone();
                async move {
                    let (status, _) = c
                        .get_leaf_certificate_info(leaf, "PEM", false)
                        .await
                        .unwrap();
                    assert_eq!(status, "Accepted");
                }
            }
        };
        let (info2, info20) = time_pair(iterations, info_of("V2G"), info_of("V2G20")).await;
        let div = |a: &Stats, b: &Stats| a.median.as_secs_f64() / b.median.as_secs_f64();
        let row = |what: String, s: &Stats, counterpart: Option<&Stats>| {
            println!(
                "| {what} | {} | {} | {} | {:.2}x |",
                fmt(s.median),
                fmt(s.p90),
                counterpart.map_or("–".to_owned(), |b| format!("{:.2}x", div(s, b))),
                div(s, &ping)
            );
        };
        row(format!("Peer.Ping ({name} daemon)"), &ping, None);
        row("CSR V2G (P-256)".into(), &csr2, None);
        row(format!("CSR V2G20 ({name})"), &csr20, Some(&csr2));
        row("GetLeafCertificateInfo(V2G)".into(), &info2, None);
        row(
            format!("GetLeafCertificateInfo(V2G20, {name})"),
            &info20,
            Some(&info2),
        );
    }
}
