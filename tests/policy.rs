//! Access control for real: a system-bus-like dbus-daemon with the shipped
//! policy file, evsecd as the `evsec` user, and callers as other Unix users.
//! Needs root (to create users and switch to them); skipped otherwise.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::TempStore;
use evsec::testpki::Pki;

const DEST: &str = "org.evsec.EvseSecurity1";
const PATH: &str = "/org/evsec/EvseSecurity1";
const WRITER: &str = "evsec-test-writer";
const READER: &str = "evsec-test-reader";
const OTHER: &str = "evsec-test-other";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Creates the service user, the role groups and the test callers, as the
/// package's postinst would; existing ones are kept.
fn ensure_users() {
    for group in ["evsec", "evsec-write", "evsec-read"] {
        if !run("getent", &["group", group]).status.success() {
            assert!(
                run("groupadd", &["--system", group]).status.success(),
                "groupadd {group}"
            );
        }
    }
    let users = [
        ("evsec", "evsec"),
        (WRITER, "evsec-write"),
        (READER, "evsec-read"),
        (OTHER, ""),
    ];
    for (user, group) in users {
        if !run("getent", &["passwd", user]).status.success() {
            let mut args = vec![
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ];
            if user == "evsec" {
                args.extend(["--gid", "evsec"]);
            } else if !group.is_empty() {
                args.extend(["--groups", group]);
            }
            args.push(user);
            let out = run("useradd", &args);
            assert!(
                out.status.success(),
                "useradd {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A private bus with the system bus's default policy, plus `include` when
/// given (the shipped policy file).
struct SystemLikeBus {
    address: String,
    child: Child,
}

impl SystemLikeBus {
    fn start(dir: &Path, include: Option<&Path>) -> SystemLikeBus {
        let socket = dir.join("system_bus_socket");
        let include = include
            .map(|p| format!("<include>{}</include>", p.display()))
            .unwrap_or_default();
        // Without the shipped policy, a permissive one: only the daemon's
        // own check stands between callers and the store.
        let open = if include.is_empty() {
            "<policy context=\"default\"><allow own=\"*\"/><allow send_type=\"method_call\"/></policy>"
        } else {
            ""
        };
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  {open}
  {include}
</busconfig>
"#,
            socket = socket.display()
        );
        let config_path = dir.join("system-bus.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        SystemLikeBus {
            address: line.trim().to_owned(),
            child,
        }
    }
}

impl Drop for SystemLikeBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// evsecd as the `evsec` user.
struct ServiceDaemon(Child);

impl ServiceDaemon {
    fn start(config: &Path, bus: &SystemLikeBus, log: &Path) -> ServiceDaemon {
        let (uid, gid) = ids("evsec", "evsec");
        let child = Command::new(env!("CARGO_BIN_EXE_evsecd"))
            .arg("--config")
            .arg(config)
            .args(["--bus", &bus.address])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        common::wait_for_name(&bus.address);
        ServiceDaemon(child)
    }
}

impl Drop for ServiceDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// UID of `user` and GID of `group`.
fn ids(user: &str, group: &str) -> (u32, u32) {
    let id = |args: &[&str]| -> u32 {
        let out = run(args[0], &args[1..]);
        let text = String::from_utf8_lossy(&out.stdout);
        let field = if args[0] == "id" {
            text.trim().to_owned()
        } else {
            text.split(':').nth(2).unwrap_or("").to_owned()
        };
        field.parse().unwrap_or_else(|_| panic!("{args:?}: {text}"))
    };
    (id(&["id", "-u", user]), id(&["getent", "group", group]))
}

/// The role group each test caller runs with, as its primary group.
fn group_of(user: &str) -> &'static str {
    match user {
        WRITER => "evsec-write",
        READER => "evsec-read",
        "root" => "root",
        _ => "nogroup",
    }
}

/// dbus-send as `user`; returns (success, stdout + stderr).
fn call_as(user: &str, bus: &SystemLikeBus, member: &str, args: &[&str]) -> (bool, String) {
    let (uid, gid) = ids(user, group_of(user));
    let out = Command::new("dbus-send")
        .args([&format!("--bus={}", bus.address), "--print-reply"])
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .arg(format!("--dest={DEST}"))
        .arg(PATH)
        .arg(member)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A world-readable store owned by `evsec`.
fn service_store(pki: &Pki) -> (TempStore, std::path::PathBuf) {
    let store = TempStore::with_pki(pki);
    std::fs::set_permissions(store.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = store.write_config(
        "[access]\nwrite_groups = [\"evsec-write\"]\nread_groups = [\"evsec-read\"]\n",
    );
    assert!(run(
        "chown",
        &["-R", "evsec:evsec", store.certs.to_str().unwrap()]
    )
    .status
    .success());
    (store, config)
}

fn denied(result: &(bool, String)) -> bool {
    !result.0 && result.1.contains("org.freedesktop.DBus.Error.AccessDenied")
}

#[test]
fn shipped_policy_and_daemon_checks_keep_roles_apart() {
    if !is_root() {
        eprintln!("SKIPPED: the policy test creates users and must run as root");
        return;
    }
    ensure_users();
    let pki = Pki::generate().unwrap();
    let (store, config) = service_store(&pki);
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/org.evsec.EvseSecurity1.conf");
    let bus = SystemLikeBus::start(store.dir.path(), Some(&policy));
    let log = store.dir.path().join("evsecd.log");
    let _daemon = ServiceDaemon::start(&config, &bus, &log);

    let install = |user: &str| {
        call_as(
            user,
            &bus,
            "org.evsec.EvseSecurity1.InstallCaCertificate",
            &[
                &format!(
                    "string:{}",
                    evsec::testpki::issue(&evsec::testpki::CertSpec::ca("x", None), None)
                        .unwrap()
                        .pem()
                ),
                "string:MO",
            ],
        )
    };
    let read = |user: &str| {
        call_as(
            user,
            &bus,
            "org.evsec.EvseSecurity1.IsCaCertificateInstalled",
            &["string:V2G"],
        )
    };
    let verify = |user: &str| {
        call_as(
            user,
            &bus,
            "org.evsec.EvseSecurity1.VerifyCertificate",
            &[
                &format!("string:{}", pki.secc_chain_pem()),
                "array:string:V2G",
            ],
        )
    };
    let csr = |user: &str| {
        call_as(
            user,
            &bus,
            "org.evsec.EvseSecurity1.GenerateCertificateSigningRequest",
            &[
                "string:V2G",
                "string:DE",
                "string:O",
                "string:CN",
                "boolean:false",
            ],
        )
    };
    let prop = |user: &str| {
        call_as(
            user,
            &bus,
            "org.freedesktop.DBus.Properties.Get",
            &[
                "string:org.evsec.EvseSecurity1",
                "string:CertificateEntries",
            ],
        )
    };
    let introspect = |user: &str| {
        call_as(
            user,
            &bus,
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[],
        )
    };

    // The writer may do everything.
    let r = install(WRITER);
    assert!(r.0 && r.1.contains("\"Accepted\""), "{}", r.1);
    assert!(csr(WRITER).1.contains("\"Accepted\""));
    // The reader may read, verify and get properties, and nothing else.
    assert!(read(READER).0 && read(READER).1.contains("boolean true"));
    let v = verify(READER);
    assert!(v.0 && v.1.contains("\"Valid\""), "{}", v.1);
    assert!(prop(READER).0);
    assert!(denied(&install(READER)), "{:?}", install(READER));
    assert!(denied(&csr(READER)));
    // Everyone else may only introspect.
    assert!(denied(&read(OTHER)));
    assert!(denied(&prop(OTHER)));
    assert!(denied(&install(OTHER)));
    assert!(introspect(OTHER).0);
    // Root may call; but nobody else may own the name, not even root.
    assert!(read("root").0);
    let second = TempStore::empty();
    let out = Command::new(env!("CARGO_BIN_EXE_evsecd"))
        .arg("--config")
        .arg(second.write_config(""))
        .args(["--bus", &bus.address])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AccessDenied") || err.contains("not allowed to own"),
        "{err}"
    );
}

#[test]
fn without_the_policy_file_the_daemon_still_refuses() {
    if !is_root() {
        eprintln!("SKIPPED: the policy test creates users and must run as root");
        return;
    }
    ensure_users();
    let pki = Pki::generate().unwrap();
    let (store, config) = service_store(&pki);
    let bus = SystemLikeBus::start(store.dir.path(), None);
    let log = store.dir.path().join("evsecd.log");
    let _daemon = ServiceDaemon::start(&config, &bus, &log);
    let before = common::tree_contents(&store.certs);

    let install = call_as(
        READER,
        &bus,
        "org.evsec.EvseSecurity1.InstallCaCertificate",
        &[&format!("string:{}", pki.mo_root.pem()), "string:MO"],
    );
    assert!(denied(&install), "{}", install.1);
    let delete = call_as(OTHER, &bus, "org.evsec.EvseSecurity1.GarbageCollect", &[]);
    assert!(denied(&delete), "{}", delete.1);
    let read = call_as(
        OTHER,
        &bus,
        "org.evsec.EvseSecurity1.GetVerifyFile",
        &["string:V2G"],
    );
    assert!(denied(&read), "{}", read.1);
    let prop = call_as(
        OTHER,
        &bus,
        "org.freedesktop.DBus.Properties.Get",
        &["string:org.evsec.EvseSecurity1", "string:Version"],
    );
    assert!(denied(&prop), "{}", prop.1);
    let ok = call_as(
        READER,
        &bus,
        "org.evsec.EvseSecurity1.GetVerifyFile",
        &["string:V2G"],
    );
    assert!(ok.0 && ok.1.contains("V2G_ROOT_CA.pem"), "{}", ok.1);
    assert_eq!(common::tree_contents(&store.certs), before);

    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&log).unwrap();
    let reader_uid = String::from_utf8_lossy(&run("id", &["-u", READER]).stdout)
        .trim()
        .to_owned();
    assert!(
        log.contains("access denied") && log.contains(&format!("uid={reader_uid}")),
        "{log}"
    );
}
