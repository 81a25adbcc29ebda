//! Shared fixtures: temporary stores, a private dbus-daemon and evsecd as
//! a real process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evsec::testpki::Pki;
use evsec::{Config, EvseSecurity};

/// A temporary store with the EVerest default layout.
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub certs: PathBuf,
}

impl TempStore {
    /// An empty store directory.
    pub fn empty() -> TempStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("mkdir");
        TempStore { dir, certs }
    }

    /// A store holding `pki` in the EVerest layout.
    pub fn with_pki(pki: &Pki) -> TempStore {
        let store = TempStore::empty();
        pki.write_everest_tree(&store.certs).expect("write tree");
        store
    }

    pub fn config(&self) -> Config {
        self.config_with("")
    }

    /// A config for this store with extra TOML lines.
    pub fn config_with(&self, extra: &str) -> Config {
        let text = format!("certs_directory = \"{}\"\n{extra}", self.certs.display());
        Config::parse(&text).expect("config")
    }

    pub fn open(&self) -> EvseSecurity {
        EvseSecurity::open(self.config()).expect("open store")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.certs.join(rel)
    }

    /// Writes a config file for evsecd and returns its path.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("evsec.toml");
        std::fs::write(
            &path,
            format!("certs_directory = \"{}\"\n{extra}", self.certs.display()),
        )
        .expect("config");
        path
    }
}

/// Every regular file under `dir` with its bytes, sorted by path: to show
/// that a call left the store byte-identical.
pub fn tree_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                out.push((path.clone(), std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// Hash data as `openssl ocsp -req_text` prints it for `cert` under
/// `issuer`: (name hash, key hash, serial), lowercase.
pub fn openssl_ocsp_hash(
    cert_pem: &str,
    issuer_pem: &str,
    digest: &str,
) -> (String, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let issuer = dir.path().join("issuer.pem");
    std::fs::write(&cert, cert_pem).expect("write");
    std::fs::write(&issuer, issuer_pem).expect("write");
    let out = Command::new("openssl")
        .args([
            "ocsp",
            &format!("-{digest}"),
            "-no_nonce",
            "-req_text",
            "-issuer",
        ])
        .arg(&issuer)
        .arg("-cert")
        .arg(&cert)
        .output()
        .expect("openssl ocsp");
    // Long hex values are wrapped with a trailing backslash.
    let text = String::from_utf8_lossy(&out.stdout).replace("\\\n", "");
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_else(|| panic!("no {label} in {text}"))
    };
    (
        field("Issuer Name Hash:"),
        field("Issuer Key Hash:"),
        field("Serial Number:"),
    )
}

/// A private dbus-daemon on a socket in a temp dir, killed on drop.
pub struct PrivateBus {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Child,
}

impl PrivateBus {
    pub fn start() -> PrivateBus {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("bus.sock");
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon must be installed");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("bus address");
        PrivateBus {
            dir,
            address: line.trim().to_owned(),
            child,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `evsecd` as a real process, stopped on drop.
pub struct Daemon {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Daemon {
    /// Starts evsecd with `config` on `bus` and waits until it owns its name.
    pub fn start(config: &Path, bus: &PrivateBus) -> Daemon {
        let daemon = Daemon::spawn(config, bus);
        wait_for_name(&bus.address);
        daemon
    }

    pub fn spawn(config: &Path, bus: &PrivateBus) -> Daemon {
        let stderr_path = config.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_evsecd"))
            .arg("--config")
            .arg(config)
            .arg("--bus")
            .arg(&bus.address)
            .env("RUST_LOG", "info")
            .stderr(stderr)
            .spawn()
            .expect("evsecd");
        Daemon { child, stderr_path }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(10));
        std::mem::forget(self);
        status
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `org.evsec.EvseSecurity1` has an owner on the bus.
pub fn wait_for_name(address: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let out = Command::new("busctl")
            .args(["--address", address, "status", "org.evsec.EvseSecurity1"])
            .output()
            .expect("busctl must be installed");
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("evsecd did not take its name within 20 s");
}

/// Runs busctl against the private bus and returns (success, stdout, stderr).
pub fn busctl(address: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("busctl")
        .arg("--address")
        .arg(address)
        .args(args)
        .output()
        .expect("busctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An OCSP response for `cert` by `issuer` from `openssl ocsp` as a
/// responder, DER.
pub fn ocsp_response(
    cert: &openssl::x509::X509,
    issuer: &evsec::testpki::Issued,
    dir: &std::path::Path,
) -> Vec<u8> {
    let w = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let cert_path = w("cert.pem", &cert.to_pem().unwrap());
    let issuer_path = w("issuer.pem", issuer.pem().as_bytes());
    let key_path = w("issuer.key", &issuer.key_pem());
    let serial = evsec::x509::CertFacts::new(cert.clone())
        .unwrap()
        .serial
        .to_uppercase();
    let serial = if serial.len() % 2 == 1 {
        format!("0{serial}")
    } else {
        serial
    };
    let index = w(
        "index.txt",
        format!("V\t301231235959Z\t\t{serial}\tunknown\t/CN=x\n").as_bytes(),
    );
    let req = dir.join("req.der");
    let resp = dir.join("resp.der");
    let run = |args: Vec<&std::ffi::OsStr>| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(vec![
        "ocsp".as_ref(),
        "-sha256".as_ref(),
        "-no_nonce".as_ref(),
        "-issuer".as_ref(),
        issuer_path.as_os_str(),
        "-cert".as_ref(),
        cert_path.as_os_str(),
        "-reqout".as_ref(),
        req.as_os_str(),
    ]);
    run(vec![
        "ocsp".as_ref(),
        "-index".as_ref(),
        index.as_os_str(),
        "-CA".as_ref(),
        issuer_path.as_os_str(),
        "-rsigner".as_ref(),
        issuer_path.as_os_str(),
        "-rkey".as_ref(),
        key_path.as_os_str(),
        "-reqin".as_ref(),
        req.as_os_str(),
        "-respout".as_ref(),
        resp.as_os_str(),
        "-ndays".as_ref(),
        "7".as_ref(),
    ]);
    std::fs::read(resp).unwrap()
}

/// A zbus client on the private bus.
pub async fn client(bus: &PrivateBus) -> evsec::dbus::Client {
    evsec::dbus::Client::connect(&evsec::dbus::Bus::Address(bus.address.clone()))
        .await
        .expect("connect")
}

/// The next `CertificateStoreUpdated` signal, within 10 s.
pub async fn next_update(updates: &mut evsec::dbus::StoreUpdates) -> (String, String, String) {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("signal within 10 s")
        .expect("signal stream open")
}
