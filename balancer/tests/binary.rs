//! The `balancer` binary itself: the `listening on ADDR` line, SIGHUP reload,
//! a config error naming its line, a clean exit on SIGTERM, and plain logs
//! when stderr is not a terminal.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::backend::{Mode, TestBackend};
use testkit::bin::{run_to_exit, Process};
use testkit::lb::config_toml;
use testkit::{run, who_serves, Deadline, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_balancer");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_address_reloads_on_sighup_and_stops_on_sigterm() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let path = run::temp_dir("lb-bin").join("lb.toml");
    let head = "admin = \"127.0.0.1:0\"\n[health]\nkind = \"chat\"";
    std::fs::write(&path, config_toml(head, &[(&a.address(), 1)])).unwrap();

    let (process, addr) = Process::start_listening(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    assert_ne!(addr.port(), 0, "must print the bound port");
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    // Only b in the file; SIGHUP applies it (the watcher may beat it to it).
    std::fs::write(&path, config_toml(head, &[(&b.address(), 1)])).unwrap();
    process.signal("HUP");
    let deadline = Deadline::after(WAIT);
    while who_serves(addr).await.unwrap() != "b" {
        deadline.check("reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    process.signal("TERM");
    let (status, _process) = process.wait_timeout_async(WAIT).await;
    let status = status.expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn binary_refuses_a_bad_config_naming_line_and_key() {
    let path = run::temp_dir("lb-bad").join("lb.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:1\"\nwieght = 2\n",
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&path)
        .env("RUST_BACKTRACE", "0");
    let exit = run_to_exit(command, WAIT);
    assert_ne!(exit.code, 0);
    assert!(exit.stdout.is_empty(), "nothing on stdout before listening");
    assert!(
        exit.stderr.contains("line 4") && exit.stderr.contains("wieght"),
        "{}",
        exit.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_without_colour_codes_when_stderr_is_not_a_terminal() {
    let path = run::temp_dir("lb-colour").join("lb.toml");
    std::fs::write(&path, config_toml("", &[("127.0.0.1:1", 1)])).unwrap();
    let (process, _) = Process::start_listening(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped()),
    );
    process.signal("TERM");
    let (status, mut process) = process.wait_timeout_async(WAIT).await;
    let status = status.expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut process.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("watching the config file"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
}

/// `--check`: a valid file prints the effective config with the admin
/// token masked and exits 0 without binding; a bad one exits 1 naming the
/// line.
#[test]
fn check_prints_the_effective_config_and_exits_0_or_1() {
    let dir = run::temp_dir("lb-check");
    let good = dir.join("good.toml");
    // A port that is taken: --check must not try to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &good,
        format!(
            "listen = \"{}\"\nadmin_token = \"a-very-secret-token-1234\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command.arg("--check").arg("--config").arg(&good);
    let exit = run_to_exit(command, WAIT);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(exit.stdout.contains("127.0.0.1:1"), "{}", exit.stdout);
    assert!(exit.stdout.contains("connect_timeout"), "{}", exit.stdout);
    assert!(
        !exit.stdout.contains("a-very-secret-token-1234"),
        "{}",
        exit.stdout
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\n[[backend]]\naddres = \"x\"\n",
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("--check")
        .arg("--config")
        .arg(&bad)
        .env("RUST_BACKTRACE", "0");
    let exit = run_to_exit(command, WAIT);
    assert_eq!(exit.code, 1);
    assert!(exit.stderr.contains("line 3"), "{}", exit.stderr);

    // The shipped sample checks.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/lb.toml");
    let mut command = Command::new(BIN);
    command.arg("--check").arg("--config").arg(sample);
    let exit = run_to_exit(command, WAIT);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
}
