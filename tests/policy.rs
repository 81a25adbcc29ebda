//! Access control for real: a system-bus-like dbus-daemon with the shipped
//! policy file, evsecd as a service user, and callers as other Unix users.
//! Each test makes its own users and groups under names unique to it, and
//! removes them again. Needs root (to create users and switch to them);
//! skipped otherwise. The package's own names, on a real system bus, are
//! tested by `tests/station.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::TempStore;
use evsec::testpki::Pki;

const DEST: &str = "org.evsec.EvseSecurity1";
const PATH: &str = "/org/evsec/EvseSecurity1";
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

/// useradd and groupadd lock /etc/passwd and /etc/group, and give up when
/// another one holds the lock: one at a time within this binary.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// The service user and the station's roles of one test, under names unique
/// to it (the shipped policy is rewritten to them), removed again on drop:
/// tests run in parallel and leave no accounts behind.
struct TestUsers {
    service: String,
    writer: String,
    reader: String,
    other: String,
    key_user: String,
    write_group: String,
    key_group: String,
    read_group: String,
    service_group: String,
}

impl TestUsers {
    fn create() -> TestUsers {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!(
            "evt{:x}{:x}{}",
            std::process::id(),
            nanos & 0xfff,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let users = TestUsers {
            service: format!("{tag}-svc"),
            writer: format!("{tag}-wr"),
            reader: format!("{tag}-rd"),
            other: format!("{tag}-ot"),
            key_user: format!("{tag}-ky"),
            write_group: format!("{tag}-write"),
            key_group: format!("{tag}-keys"),
            read_group: format!("{tag}-read"),
            service_group: format!("{tag}-sg"),
        };
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        for group in users.groups() {
            let out = run("groupadd", &["--system", group]);
            assert!(
                out.status.success(),
                "groupadd {group}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (user, group) in users.accounts() {
            let out = run(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--no-user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--gid",
                    group,
                    user,
                ],
            );
            assert!(
                out.status.success(),
                "useradd {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        users
    }

    /// Each user with its primary group, which is its role.
    fn accounts(&self) -> [(&str, &str); 5] {
        [
            (&self.service, &self.service_group),
            (&self.writer, &self.write_group),
            (&self.reader, &self.read_group),
            (&self.other, "nogroup"),
            (&self.key_user, &self.key_group),
        ]
    }

    fn groups(&self) -> [&String; 4] {
        [
            &self.service_group,
            &self.write_group,
            &self.read_group,
            &self.key_group,
        ]
    }

    fn group_of<'a>(&'a self, user: &'a str) -> &'a str {
        self.accounts()
            .into_iter()
            .find(|(u, _)| *u == user)
            .map_or("root", |(_, g)| g)
    }

    /// The shipped policy file, with the package's names replaced by this
    /// test's.
    fn policy(&self, dir: &Path) -> PathBuf {
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/org.evsec.EvseSecurity1.conf");
        let mut text = std::fs::read_to_string(shipped).unwrap();
        for (from, to) in [
            ("user=\"evsec\"", format!("user=\"{}\"", self.service)),
            (
                "group=\"evsec-write\"",
                format!("group=\"{}\"", self.write_group),
            ),
            (
                "group=\"evsec-read\"",
                format!("group=\"{}\"", self.read_group),
            ),
            (
                "group=\"evsec-keys\"",
                format!("group=\"{}\"", self.key_group),
            ),
        ] {
            assert!(text.contains(from), "the shipped policy names {from}");
            text = text.replace(from, &to);
        }
        let path = dir.join("org.evsec.EvseSecurity1.conf");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        for (user, _) in self.accounts() {
            let out = run("userdel", &[user]);
            if !out.status.success() {
                eprintln!("userdel {user}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        for group in self.groups() {
            let out = run("groupdel", &[group]);
            if !out.status.success() {
                eprintln!("groupdel {group}: {}", String::from_utf8_lossy(&out.stderr));
            }
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
    fn start(users: &TestUsers, config: &Path, bus: &SystemLikeBus, log: &Path) -> ServiceDaemon {
        let (uid, gid) = ids(&users.service, &users.service_group);
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

/// dbus-send as `user`; returns (success, stdout + stderr).
fn call_as(
    users: &TestUsers,
    user: &str,
    bus: &SystemLikeBus,
    member: &str,
    args: &[&str],
) -> (bool, String) {
    let (uid, gid) = ids(user, users.group_of(user));
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

/// A world-readable store owned by the service user.
fn service_store(pki: &Pki, users: &TestUsers) -> (TempStore, PathBuf) {
    let store = TempStore::with_pki(pki);
    std::fs::set_permissions(store.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = store.write_config(&format!(
        "[access]\nwrite_groups = [\"{}\"]\nread_groups = [\"{}\"]\nv2g_key_groups = [\"{}\"]\n",
        users.write_group, users.read_group, users.key_group
    ));
    let owner = format!("{}:{}", users.service, users.service_group);
    assert!(run("chown", &["-R", &owner, store.certs.to_str().unwrap()])
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
    let users = TestUsers::create();
    let pki = Pki::generate().unwrap();
    let (store, config) = service_store(&pki, &users);
    let policy = users.policy(store.dir.path());
    let bus = SystemLikeBus::start(store.dir.path(), Some(&policy));
    let log = store.dir.path().join("evsecd.log");
    let _daemon = ServiceDaemon::start(&users, &config, &bus, &log);
    let (writer, reader, other) = (&users.writer[..], &users.reader[..], &users.other[..]);

    let install = |user: &str| {
        call_as(
            &users,
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
            &users,
            user,
            &bus,
            "org.evsec.EvseSecurity1.IsCaCertificateInstalled",
            &["string:V2G"],
        )
    };
    let verify_by = |user: &str, method: &str| {
        call_as(
            &users,
            user,
            &bus,
            &format!("org.evsec.EvseSecurity1.{method}"),
            &[
                &format!("string:{}", pki.secc_chain_pem()),
                "array:string:V2G",
            ],
        )
    };
    let csr = |user: &str| {
        call_as(
            &users,
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
            &users,
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
            &users,
            user,
            &bus,
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[],
        )
    };

    // The writer may do everything.
    let r = install(writer);
    assert!(r.0 && r.1.contains("\"Accepted\""), "{}", r.1);
    assert!(csr(writer).1.contains("\"Accepted\""));
    // The reader may read, verify and get properties, and nothing else.
    assert!(read(reader).0 && read(reader).1.contains("boolean true"));
    for method in ["VerifyCertificate", "VerifyCertificateDetailed"] {
        let v = verify_by(reader, method);
        assert!(v.0 && v.1.contains("\"Valid\""), "{method}: {}", v.1);
        assert!(denied(&verify_by(other, method)), "{method}");
    }
    assert!(prop(reader).0);
    assert!(denied(&install(reader)), "{:?}", install(reader));
    assert!(denied(&csr(reader)));
    // The key group, and only it, is handed the SECC's credentials; it
    // gets nothing else.
    let credentials = |user: &str| {
        call_as(
            &users,
            user,
            &bus,
            "org.evsec.EvseSecurity1.OpenLeafCredentials",
            &["string:V2G", "string:"],
        )
    };
    let keys = &users.key_user[..];
    let r = credentials(keys);
    assert!(r.0 && r.1.contains("\"Accepted\""), "{}", r.1);
    assert!(denied(&credentials(reader)), "{:?}", credentials(reader));
    assert!(denied(&credentials(writer)), "{:?}", credentials(writer));
    assert!(denied(&read(keys)));
    // Everyone else may only introspect.
    assert!(denied(&read(other)));
    assert!(denied(&prop(other)));
    assert!(denied(&install(other)));
    assert!(introspect(other).0);
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
    let users = TestUsers::create();
    let pki = Pki::generate().unwrap();
    let (store, config) = service_store(&pki, &users);
    let bus = SystemLikeBus::start(store.dir.path(), None);
    let log = store.dir.path().join("evsecd.log");
    let _daemon = ServiceDaemon::start(&users, &config, &bus, &log);
    let (reader, other) = (&users.reader[..], &users.other[..]);
    let before = common::tree_contents(&store.certs);

    let install = call_as(
        &users,
        reader,
        &bus,
        "org.evsec.EvseSecurity1.InstallCaCertificate",
        &[&format!("string:{}", pki.mo_root.pem()), "string:MO"],
    );
    assert!(denied(&install), "{}", install.1);
    let credentials = call_as(
        &users,
        reader,
        &bus,
        "org.evsec.EvseSecurity1.OpenLeafCredentials",
        &["string:V2G", "string:"],
    );
    assert!(denied(&credentials), "{}", credentials.1);
    let delete = call_as(
        &users,
        other,
        &bus,
        "org.evsec.EvseSecurity1.GarbageCollect",
        &[],
    );
    assert!(denied(&delete), "{}", delete.1);
    let read = call_as(
        &users,
        other,
        &bus,
        "org.evsec.EvseSecurity1.GetVerifyFile",
        &["string:V2G"],
    );
    assert!(denied(&read), "{}", read.1);
    let prop = call_as(
        &users,
        other,
        &bus,
        "org.freedesktop.DBus.Properties.Get",
        &["string:org.evsec.EvseSecurity1", "string:Version"],
    );
    assert!(denied(&prop), "{}", prop.1);
    // GetAll too: denied, not an empty dictionary.
    let all = call_as(
        &users,
        other,
        &bus,
        "org.freedesktop.DBus.Properties.GetAll",
        &["string:org.evsec.EvseSecurity1"],
    );
    assert!(denied(&all), "{}", all.1);
    let all = call_as(
        &users,
        reader,
        &bus,
        "org.freedesktop.DBus.Properties.GetAll",
        &["string:org.evsec.EvseSecurity1"],
    );
    assert!(
        all.0 && all.1.contains("\"Version\"") && all.1.contains("\"CertificateEntries\""),
        "{}",
        all.1
    );
    let ok = call_as(
        &users,
        reader,
        &bus,
        "org.evsec.EvseSecurity1.GetVerifyFile",
        &["string:V2G"],
    );
    assert!(ok.0 && ok.1.contains("V2G_ROOT_CA.pem"), "{}", ok.1);
    assert_eq!(common::tree_contents(&store.certs), before);

    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&log).unwrap();
    let reader_uid = String::from_utf8_lossy(&run("id", &["-u", reader]).stdout)
        .trim()
        .to_owned();
    assert!(
        log.contains("access denied") && log.contains(&format!("uid={reader_uid}")),
        "{log}"
    );
}

/// A role group with many members (an entry over the first 16 KiB buffer
/// of getgrnam_r) still resolves, so the daemon starts.
#[test]
fn a_large_role_group_resolves() {
    if !is_root() {
        eprintln!("SKIPPED: the group test edits /etc/group and must run as root");
        return;
    }
    let name = format!("evt{:x}-big", std::process::id());
    let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(run("groupadd", &["--system", &name]).status.success());
    // Members need not exist for the group file: 3,000 names of 12 bytes.
    let members: Vec<String> = (0..3000).map(|i| format!("member{i:05}")).collect();
    let script = format!("s/^{name}:\\(.*\\):$/{name}:\\1:{}/", members.join(","));
    let edited = run("sed", &["-i", &script, "/etc/group"]).status.success();
    let line = String::from_utf8_lossy(&run("getent", &["group", &name]).stdout).into_owned();
    let resolved = evsec::access::Roles::resolve(&evsec::config::Access {
        write_groups: vec![name.clone()],
        ..Default::default()
    });
    assert!(run("groupdel", &[&name]).status.success());
    assert!(edited && line.len() > 32 * 1024, "{}", line.len());
    let gid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(resolved.unwrap().write_gids, vec![gid]);
}
