//! The `chatclient` binary driven through pipes (scripted mode): start it
//! against a port, log in with `--login`, register from its menu.

use crate::bin::{self, code, LineProcess};

/// `chatclient ARGS...` without colours or inherited `RUST_LOG`.
pub fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin::path("chatclient"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    command
}

/// How long a client lingers for replies after stdin closes, in seconds.
const LINGER: &str = "0.5";

/// `chatclient 127.0.0.1 PORT --linger 0.5 ARGS...`, stdin left open.
pub fn start(port: u16, args: &[&str]) -> LineProcess {
    LineProcess::spawn(to_port(port, args))
}

fn to_port(port: u16, args: &[&str]) -> tokio::process::Command {
    let port = port.to_string();
    let mut all = vec!["127.0.0.1", port.as_str(), "--linger", LINGER];
    all.extend_from_slice(args);
    command(&all)
}

/// A client logging in with `--login` (its password in the environment)
/// and `extra` options, stdin left open; not waited for.
pub fn login(port: u16, id: i64, password: &str, extra: &[&str]) -> LineProcess {
    let id = id.to_string();
    let mut args = vec!["--login", &id, "--password-env", "CHAT_PW"];
    args.extend_from_slice(extra);
    let mut command = to_port(port, &args);
    command.env("CHAT_PW", password);
    LineProcess::spawn(command)
}

/// [`login`], returning once it printed `logged in: id ID`.
pub async fn logged_in(port: u16, id: i64, password: &str, extra: &[&str]) -> LineProcess {
    let mut client = login(port, id, password, extra);
    client.expect_out(&format!("logged in: id {id} ")).await;
    client
}

/// Registers through the menu (scripted); returns the new id.
pub async fn register(port: u16, name: &str, password: &str) -> i64 {
    let mut client = start(port, &[]);
    client.send(&format!("2\n{name}\n{password}\n")).await;
    let line = client.expect_out("registered: id ").await;
    let id = line["registered: id ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    id
}
