//! The systemd units in config/systemd parse cleanly with
//! `systemd-analyze verify` (Debian's systemd package; scripts/test.sh
//! installs it), pointed at the built binaries, and the config checks their
//! `ExecStartPre` lines run pass on the shipped sample files.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::bin::{path, run_to_exit};
use testkit::run::temp_dir;

const UNITS: [&str; 2] = ["chatserver@.service", "balancer.service"];

#[test]
fn units_pass_systemd_analyze_verify() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/systemd");
    let dir = temp_dir("units");
    let bin_dir = path("chatserver")
        .parent()
        .expect("binary directory")
        .display()
        .to_string();
    assert_eq!(
        path("balancer").parent().unwrap().display().to_string(),
        bin_dir
    );
    for unit in UNITS {
        let text = std::fs::read_to_string(source.join(unit))
            .unwrap_or_else(|e| panic!("reading {unit}: {e}"));
        assert!(
            text.contains("/usr/local/bin/"),
            "{unit} runs the installed binary"
        );
        // verify checks that ExecStart's program exists: use the built one.
        let text = text.replace("/usr/local/bin/", &format!("{bin_dir}/"));
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let mut command = Command::new("systemd-analyze");
    command
        .args(["verify", "--man=no"])
        .arg(dir.join("chatserver@6000.service"))
        .arg(dir.join("balancer.service"))
        // No pager, no colour; and not the host's manager.
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0");
    let output = command.output().unwrap_or_else(|e| {
        panic!("systemd-analyze is missing ({e}): install Debian's systemd package")
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: none allowed.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_units_config_checks_pass_on_the_sample_files() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut chat = Command::new(path("chatserver"));
    chat.arg("--check")
        .arg("--config")
        .arg(config.join("chatserver.toml"))
        .args(["0.0.0.0", "6000"])
        .env("CHAT_ADMIN", "127.0.0.1:16000");
    let exit = run_to_exit(chat, Duration::from_secs(20));
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(exit.stdout.contains("16000"), "{}", exit.stdout);

    let mut lb = Command::new(path("balancer"));
    lb.arg("--check")
        .arg("--config")
        .arg(config.join("lb.toml"));
    let exit = run_to_exit(lb, Duration::from_secs(20));
    assert_eq!(exit.code, 0, "{}", exit.stderr);
}
