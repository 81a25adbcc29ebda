//! Runs evsecd on a private bus with a demo store, and prints how to talk
//! to it. Nothing to configure first:
//!
//! ```sh
//! cargo run --example demo
//! ```
//!
//! The store is written once to `target/demo/certs` (config/dev.toml); the
//! bus lives in `target/demo/bus.sock` until Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use evsec::daemon;
use evsec::dbus::Bus;
use evsec::testpki::Pki;
use evsec::{Config, EvseSecurity};

#[tokio::main]
async fn main() -> ExitCode {
    evsec::logging::init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = std::env::set_current_dir(root) {
        eprintln!("demo: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::load(Path::new("config/dev.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.v2g_ca_bundle.exists() {
        let written = Pki::generate().map_err(|e| e.to_string()).and_then(|pki| {
            pki.write_everest_tree(&config.certs_directory)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            eprintln!("demo: cannot write the demo store: {e}");
            return ExitCode::FAILURE;
        }
    }
    let socket = config.certs_directory.with_file_name("bus.sock");
    let _ = std::fs::remove_file(&socket);
    let mut bus = match Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
        .arg(format!("--address=unix:path={}", socket.display()))
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("demo: cannot start dbus-daemon ({e}); run .ci/deps first");
            return ExitCode::FAILURE;
        }
    };
    let mut address = String::new();
    if let Some(out) = bus.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut address);
    }
    let address = address.trim().to_owned();
    let certs = config.certs_directory.clone();
    let security = match EvseSecurity::open(config) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("demo: {e}");
            let _ = bus.kill();
            return ExitCode::FAILURE;
        }
    };
    let i = "org.evsec.EvseSecurity1 /org/evsec/EvseSecurity1 org.evsec.EvseSecurity1";
    println!(
        "\nevsecd demo: store {store}, bus {address}\n\n\
         In another shell:\n\
         \x20 export A='{address}'\n\
         \x20 busctl --address \"$A\" introspect {i}\n\
         \x20 busctl --address \"$A\" call {i} GetInstalledCertificates as 0\n\
         \x20 busctl --address \"$A\" call {i} IsCaCertificateInstalled s V2G\n\
         \x20 busctl --address \"$A\" call {i} GetVerifyFile s V2G\n\
         \x20 busctl --address \"$A\" get-property {i} CertificateEntries\n\
         \x20 busctl --address \"$A\" call {i} VerifyCertificate -- sas \"$(cat {store}/client/cso/CPO_CERT_SECC_LEAF_CHAIN.pem)\" 1 V2G\n\
         \x20 busctl --address \"$A\" monitor --match \"type='signal',interface='org.evsec.EvseSecurity1'\"\n\n\
         Ctrl-C stops the daemon and the bus.\n",
        store = certs.display(),
    );
    let roles = match evsec::access::Roles::resolve(&security.config().access) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: {e}");
            let _ = bus.kill();
            return ExitCode::FAILURE;
        }
    };
    let code = daemon::serve_until_signal(security, roles, &Bus::Address(address)).await;
    let _ = bus.kill();
    let _ = bus.wait();
    code
}
