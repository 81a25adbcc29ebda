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

    /// A store with the PKI's bundles, the CSMS leaf and no SECC leaf.
    pub fn without_secc_leaf(pki: &Pki) -> TempStore {
        let store = TempStore::with_pki(pki);
        for f in [
            "client/cso/SECC_LEAF.pem",
            "client/cso/CPO_CERT_SECC_LEAF_CHAIN.pem",
            "client/cso/SECC_LEAF.key",
        ] {
            std::fs::remove_file(store.path(f)).expect("remove SECC leaf");
        }
        store
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
/// that a call left the store byte-identical. The daemon's parse cache is
/// left out: it is not store content, and the maintenance task rewrites it
/// whenever the certificates change.
pub fn tree_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && !path.ends_with(evsec::PARSE_CACHE_FILE) {
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

impl PrivateBus {
    /// Kills the bus, as a crash of dbus-daemon would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.kill();
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

/// Runs `openssl s_server` for one connection with `server_args` (the
/// certificate and key options) and `env`, connects `openssl s_client`
/// trusting only `root`, and returns the client's output. Panics unless the
/// handshake completed and verified.
pub fn tls_handshake(server_args: &[&str], env: &[(&str, &str)], root: &Path) -> String {
    let root = root.to_str().expect("UTF-8 path");
    let run = tls_session(server_args, env, &["-CAfile", root]);
    let text = run.client;
    assert!(run.client_ok, "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    // s_client can report a verified chain for a handshake that failed
    // later: a cipher must have been agreed.
    assert!(
        text.contains("Ciphersuite: ") && !text.contains("(NONE)"),
        "{text}"
    );
    text
}

/// What one `openssl s_server`/`s_client` connection printed.
pub struct TlsSession {
    /// s_client exited 0.
    pub client_ok: bool,
    /// s_client's stderr and stdout.
    pub client: String,
    /// s_server's stdout and stderr, after the connection.
    pub server: String,
}

/// One connection of `openssl s_client` (with `-verify_return_error -brief`
/// and `client_args`) to `openssl s_server` (with `server_args` and `env`).
/// The client sends one line, so that a TLS 1.3 server's verdict on the
/// client's certificate reaches it.
pub fn tls_session(server_args: &[&str], env: &[(&str, &str)], client_args: &[&str]) -> TlsSession {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    // s_server exits when its stdin closes: keep it open.
    let mut server = Command::new("openssl")
        .args(["s_server", "-accept", &port, "-naccept", "1"])
        .args(server_args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut out = BufReader::new(server.stdout.take().expect("stdout"));
    let mut line = String::new();
    let start = Instant::now();
    while !line.contains("ACCEPT") {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = server.kill();
            let mut err = String::new();
            let _ =
                std::io::Read::read_to_string(server.stderr.as_mut().expect("stderr"), &mut err);
            panic!("s_server exited: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "s_server is not ready"
        );
    }
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(client_args)
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    if let Some(mut stdin) = client.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"hello from the car\n");
        std::thread::sleep(Duration::from_millis(300));
    }
    let client = client.wait_with_output().expect("s_client");
    // With -naccept 1 the server exits by itself, freeing its key (a TPM
    // key's objects are flushed then).
    wait_with_timeout(&mut server, Duration::from_secs(10));
    let mut server_text = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut server_text);
    let _ =
        std::io::Read::read_to_string(server.stderr.as_mut().expect("stderr"), &mut server_text);
    TlsSession {
        client_ok: client.status.success(),
        client: String::from_utf8_lossy(&client.stderr).into_owned()
            + &String::from_utf8_lossy(&client.stdout),
        server: server_text,
    }
}

/// A software TPM (swtpm) on a Unix socket in a temp dir, killed on drop.
pub struct SoftwareTpm {
    pub dir: tempfile::TempDir,
    /// The TCTI string that reaches it.
    pub tcti: String,
    child: Option<Child>,
}

impl SoftwareTpm {
    /// Starts swtpm; `None`, with the reason on stderr, when it cannot.
    pub fn start() -> Option<SoftwareTpm> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("state")).expect("mkdir");
        let mut tpm = SoftwareTpm {
            tcti: format!("swtpm:path={}", dir.path().join("swtpm.sock").display()),
            dir,
            child: None,
        };
        match tpm.resume() {
            Ok(()) => Some(tpm),
            Err(why) => {
                eprintln!("SKIPPED: swtpm cannot start: {why}; install swtpm (.ci/deps)");
                None
            }
        }
    }

    /// Stops the TPM; its state stays for [`SoftwareTpm::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("swtpm.sock"));
    }

    /// Starts the TPM (again) on its state and socket.
    pub fn resume(&mut self) -> Result<(), String> {
        let socket = self.dir.path().join("swtpm.sock");
        // A file, not a pipe: swtpm writes to stderr per connection, and a
        // pipe that nobody reads would block it.
        let log = self.dir.path().join("swtpm.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        // The swtpm TCTI finds the control socket at `<socket>.ctrl`.
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", self.dir.path().join("state").display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("exited with {status}: {err}"));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return Err("no socket within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for SoftwareTpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The SHA-256 hash data of `cert` under `issuer`, as it goes on the wire.
pub fn wire_hash_of(
    cert: &evsec::testpki::Issued,
    issuer: &evsec::testpki::Issued,
) -> evsec::dbus::WireHashData {
    let facts = |i: &evsec::testpki::Issued| evsec::x509::CertFacts::new(i.cert.clone()).unwrap();
    evsec::dbus::WireHashData::from(
        &facts(cert).hash_data(evsec::types::HashAlgorithm::SHA256, &facts(issuer).key_bits),
    )
}

/// The message of an `InvalidArgs` answer; any other answer fails.
pub fn invalid_args(result: Result<impl std::fmt::Debug, evsec::dbus::ClientError>) -> String {
    match result {
        Err(evsec::dbus::ClientError::Method { name, message }) => {
            assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
            message
        }
        other => panic!("expected InvalidArgs, got {other:?}"),
    }
}
