//! `chatclient --tls`: the real client over TLS to a chat server that
//! terminates TLS itself (`--tls-cert`, in-process here), trusting the
//! server's certificate with `--ca` and checking it against
//! `--server-name`; a certificate it does not trust, or a name the
//! certificate does not carry, is a failed connection (exit 2).

use testkit::bin::code;
use testkit::certs::TestCert;
use testkit::cli::{logged_in, start};
use testkit::run::temp_dir;
use testkit::server::{tls_config, ChatServer, Storage};

/// A TLS chat server on SQLite, and the path of a file with its certificate.
async fn tls_server(tag: &str) -> (ChatServer, String) {
    let dir = temp_dir(tag);
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.install(&dir);
    let config = tls_config(Storage::Sqlite, cert_path.clone(), key_path);
    let server = ChatServer::start_with(config).await;
    (server, cert_path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_chat_over_tls() {
    let (server, ca) = tls_server("client-tls").await;
    let port = server.port();
    let tls = ["--tls", "--ca", &ca, "--server-name", "localhost"];

    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let mut client = start(port, &tls);
        client.send(&format!("2\n{name}\npw\n")).await;
        let line = client.expect_out("registered: id ").await;
        ids.push(
            line["registered: id ".len()..]
                .trim()
                .parse::<i64>()
                .unwrap(),
        );
        let (status, _, err) = client.finish().await;
        assert_eq!(code(status), 0, "{err:#?}");
    }
    let mut alice = logged_in(port, ids[0], "pw", &tls).await;
    // Without --server-name the host (127.0.0.1) is checked: the test
    // certificate names it too.
    let mut bob = logged_in(port, ids[1], "pw", &["--tls", "--ca", &ca]).await;
    alice
        .send(&format!("chat:{}:hello over TLS 🔒\n", ids[1]))
        .await;
    bob.expect_out("hello over TLS 🔒").await;
    bob.send(&format!("chat:{}:and back\n", ids[0])).await;
    alice.expect_out("and back").await;
    for client in [alice, bob] {
        let (status, _, err) = client.finish().await;
        assert_eq!(code(status), 0, "{err:#?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_or_a_wrong_name_fails_the_connection() {
    let (server, right_ca) = tls_server("client-tls-untrusted").await;
    let port = server.port();
    let dir = temp_dir("client-tls-other-ca");
    let other = dir.join("other.pem");
    TestCert::new().write_cert(&other);
    let other = other.display().to_string();
    for (args, why) in [
        // Same issuer name as the server's (rcgen's default), another key.
        (
            vec!["--tls", "--ca", other.as_str()],
            "invalid peer certificate",
        ),
        (
            // The server's own certificate, under a name it does not carry.
            vec![
                "--tls",
                "--ca",
                right_ca.as_str(),
                "--server-name",
                "chat.example",
            ],
            "not valid for name \"chat.example\"",
        ),
    ] {
        let client = start(port, &args);
        let (status, _, err) = client.finish().await;
        assert_eq!(code(status), 2, "{args:?}: {err:#?}");
        let err = err.join("\n");
        assert!(
            err.contains("TLS handshake failed") && err.contains(why),
            "{args:?}: {err}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn tls_options_need_tls() {
    let client = start(1, &["--ca", "/nonexistent.pem"]);
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 1, "{err:#?}");
    let client = start(1, &["--tls", "--ca", "/nonexistent/ca.pem"]);
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 1, "{err:#?}");
    assert!(err.join("\n").contains("/nonexistent/ca.pem"), "{err:#?}");
}
