//! The station in a box: the Debian package, installed with `dpkg -i` into a
//! booted systemd (systemd-nspawn on an overlay of `/`), serving the real
//! system bus with the shipped unit, sandbox and policy, called by the
//! station's roles as real Unix users. `tests/station/scenario.sh` plays
//! the station inside; this file boots the container, collects what the
//! scenario saw and asserts every check.
//!
//! Needs root, systemd-nspawn and the package that `cargo deb` builds
//! (`target/debian/evsec_<version>-1_amd64.deb`), as the README's test
//! command provides. Everything the test makes (the overlay, its mount, the
//! container) is removed again, also after a failure or a timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The scenario normally takes about a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// Every check the scenario makes; each must report `ok`.
const CHECKS: &[&str] = &[
    "install.dpkg",
    "install.active_when_dpkg_returns",
    "install.no_restarts",
    "install.config_mode",
    "install.no_unknown_user",
    "install.no_refused_name",
    "install.no_failed_start",
    "install.dpkg_quiet",
    "config.restarted",
    "roots.install_V2G",
    "roots.install_MO",
    "roots.install_CSMS",
    "roots.install_MF",
    "roots.leaf_refused",
    "roots.v2g_installed",
    "csr.V2G_status",
    "csr.V2G_subject",
    "leaf.V2G_install",
    "csr.CSMS_status",
    "csr.CSMS_subject",
    "leaf.CSMS_install",
    "keys.one_V2G",
    "keys.mode_V2G",
    "keys.encrypted_V2G",
    "keys.one_CSMS",
    "keys.mode_CSMS",
    "keys.encrypted_CSMS",
    "secc.info_status",
    "secc.password",
    "secc.operator_gets_paths",
    "secc.operator_gets_no_password",
    "secc.key_readable_by_secc",
    "secc.key_unreadable_by_operator",
    "secc.tls_exit",
    "secc.tls_verified",
    "secc.tls_peer",
    "ocpp.info_status",
    "ocpp.mtls_exit",
    "ocpp.mtls_verified",
    "ocpp.csms_saw_client",
    "ocsp.one_request",
    "ocsp.request_serial",
    "ocsp.update",
    "ocsp.cached_bytes",
    "ocsp.openssl_good",
    "iso20.install_v2g20root",
    "iso20.install_oemroot",
    "csr.V2G20_status",
    "csr.V2G20_subject",
    "leaf.V2G20_install",
    "iso20.info_status",
    "iso20.key_algorithm",
    "iso20.v2g_still_p256",
    "iso20.tls_exit",
    "iso20.tls13",
    "iso20.tls_cipher",
    "iso20.tls_verified",
    "iso20.tls_peer",
    "ocpp21.status_request_by_reader",
    "ocpp21.status_request_url",
    "ocpp21.update_denied_to_reader",
    "ocpp21.confirm_denied_to_reader",
    "ocpp21.update_status",
    "ocpp21.verify_revoked",
    "ocpp21.record_owner",
    "ocpp21.update_good",
    "ocpp21.verify_good_again",
    "firmware.fd_valid",
    "firmware.path_hidden_by_sandbox",
    "firmware.fd_tampered",
    "firmware.stranger_cannot_open",
    "operator.status_exit",
    "operator.status_version",
    "operator.list_exit",
    "operator.list_v2g_root",
    "operator.list_secc_leaf",
    "operator.install_exit",
    "operator.install_denied",
    "stranger.introspect",
    "stranger.all_methods_denied",
    "stranger.method_count_sane",
    "stranger.properties_Get",
    "stranger.properties_GetAll",
    "restart.acknowledged_delete",
    "restart.back_after_kill",
    "restart.same_listing",
    "restart.same_files",
    "restart.parse_cache_mode",
    "restart.mo_gone",
    "activation.stopped",
    "activation.answer",
    "activation.active",
    "journal.ca_installed_V2G",
    "journal.ca_installed_MO",
    "journal.ca_installed_CSMS",
    "journal.ca_installed_MF",
    "journal.csr_v2g",
    "journal.csr_csms",
    "journal.leaf_v2g",
    "journal.leaf_csms",
    "journal.ocsp",
    "journal.delete",
    "journal.refusal_says_why",
    "journal.file_check_says_why",
    "journal.kill_recorded",
    "journal.no_password",
    "journal.no_key_bytes",
    "upgrade.dpkg",
    "upgrade.active",
    "upgrade.store_kept",
    "upgrade.config_kept",
    "upgrade.config_mode",
    "upgrade.leaf_served",
    "remove.dpkg",
    "remove.stopped",
    "remove.store_kept",
    "remove.config_kept",
    "purge.dpkg",
    "purge.store_gone",
    "purge.config_gone",
    "purge.user_kept",
];

const SCENARIO_UNIT: &str = "\
[Unit]
Description=evsec station-in-a-box scenario
After=multi-user.target dbus.service
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/bin/sh /evsec-test/scenario.sh
TimeoutStartSec=360
StandardOutput=journal+console
";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The package `cargo deb` built, refused when older than the sources it
/// packs, so that a stale package is never what passes.
fn package() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deb = root.join(format!(
        "target/debian/evsec_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    let built = std::fs::metadata(&deb)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with `cargo deb` (the README's test command does)",
                deb.display()
            )
        });
    let newest = ["src", "systemd", "config", "Cargo.toml", "README.md"]
        .iter()
        .map(|p| newest_mtime(&root.join(p)))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    assert!(
        built >= newest,
        "{} is older than the sources; run `cargo deb` again",
        deb.display()
    );
    deb
}

fn newest_mtime(path: &Path) -> SystemTime {
    let own = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let children = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| newest_mtime(&e.path()));
    children.fold(own, SystemTime::max)
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    match Command::new(cmd).args(args).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => (false, format!("{cmd}: {e}")),
    }
}

/// An overlay of `/` mounted on a fresh directory, and the container booted
/// on it; both are taken down on drop, whatever happened.
struct Station {
    dir: tempfile::TempDir,
    merged: PathBuf,
    mounted: bool,
    container: Option<Child>,
}

impl Station {
    fn mount() -> Station {
        let dir = tempfile::Builder::new()
            .prefix("evsec-station.")
            .tempdir()
            .expect("temporary directory");
        for sub in ["upper", "work", "merged", "test", "results"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let merged = dir.path().join("merged");
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        let (mounted, out) = run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &options,
                merged.to_str().unwrap(),
            ],
        );
        assert!(mounted, "overlay mount: {out}");
        Station {
            dir,
            merged,
            mounted,
            container: None,
        }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Boots the container with the scenario as an extra boot unit, and
    /// waits until it has powered off, or the timeout has passed.
    fn boot(&mut self, deb: &Path) -> Option<i32> {
        let test = self.path("test");
        std::fs::copy(deb, test.join("evsec.deb")).expect("copy package");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/station/scenario.sh"),
            test.join("scenario.sh"),
        )
        .expect("copy scenario");
        let unit = test.join("evsec-scenario.service");
        std::fs::write(&unit, SCENARIO_UNIT).expect("unit");
        let console = std::fs::File::create(self.path("console.log")).expect("console log");
        let child = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--private-network",
            ])
            .arg(format!("--directory={}", self.merged.display()))
            .arg(format!("--bind-ro={}:/evsec-test", test.display()))
            .arg(format!(
                "--bind-ro={}:/etc/systemd/system/evsec-scenario.service",
                unit.display()
            ))
            .arg(format!(
                "--bind={}:/evsec-results",
                self.path("results").display()
            ))
            .args([
                "--boot",
                "systemd.firstboot=off",
                "systemd.wants=evsec-scenario.service",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log"))
            .stderr(console)
            .spawn()
            .expect("systemd-nspawn (Debian: systemd-container)");
        let container = self.container.insert(child);
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = container.try_wait() {
                self.container = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Stops a container that is still running: SIGTERM asks its systemd
    /// to power off; SIGKILL and killing what is left inside follow.
    fn stop_container(&mut self) {
        let Some(mut child) = self.container.take() else {
            return;
        };
        // SAFETY: kill has no memory effects; the PID is our own child's.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.kill_processes_inside();
    }

    /// Kills every process whose root directory is the overlay.
    fn kill_processes_inside(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if std::fs::read_link(entry.path().join("root")).is_ok_and(|r| r == self.merged) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        self.stop_container();
        if self.mounted {
            let merged = self.merged.to_string_lossy().into_owned();
            let (unmounted, out) = run("umount", &[&merged]);
            if !unmounted {
                eprintln!("umount {merged}: {out}; detaching it");
                let _ = run("umount", &["--lazy", &merged]);
            }
        }
        // The TempDir removes the rest, upper layer included.
    }
}

#[test]
fn station_in_a_box() {
    if !is_root() {
        eprintln!("SKIPPED: the station test mounts an overlay and boots a container as root");
        return;
    }
    let deb = package();
    let started = Instant::now();
    let mut station = Station::mount();
    let exit = station.boot(&deb);
    let elapsed = started.elapsed();
    let results = station.path("results");
    let read = |name: &str| std::fs::read_to_string(results.join(name)).unwrap_or_default();
    let report = read("results");
    let console = std::fs::read_to_string(station.path("console.log")).unwrap_or_default();
    eprintln!(
        "station scenario: {:.1} s, nspawn exit {exit:?}",
        elapsed.as_secs_f64()
    );
    eprintln!("{report}");
    let failed: Vec<&str> = report.lines().filter(|l| !l.starts_with("ok ")).collect();
    let passed: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    let missing: Vec<&&str> = CHECKS.iter().filter(|c| !passed.contains(c)).collect();
    let unknown: Vec<&&str> = passed.iter().filter(|c| !CHECKS.contains(c)).collect();
    if exit.is_none() || !failed.is_empty() || !missing.is_empty() || read("done").is_empty() {
        let tail: Vec<&str> = console.lines().rev().take(60).collect();
        eprintln!(
            "--- scenario log\n{}\n--- evsecd journal\n{}\n--- console (last lines)\n{}",
            read("log"),
            read("journal.txt"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(
        exit.is_some(),
        "the container did not power off within {BOOT_TIMEOUT:?}"
    );
    assert_eq!(
        read("done"),
        "done\n",
        "the scenario did not run to its end"
    );
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    assert!(
        missing.is_empty(),
        "checks that never reported ok: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "checks this test does not know: {unknown:?}"
    );
}
