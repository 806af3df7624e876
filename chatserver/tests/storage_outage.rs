//! The database going away and coming back, through a TCP relay the test
//! can cut: requests that need storage (chat included: stored before it is
//! acknowledged) get errno 10 with nothing half-written, requests that do
//! not keep working, and the server recovers by itself.

use std::time::Duration;

use testkit::prelude::*;
use testkit::relay::mariadb_relay;
use testkit::server::{config_on, ChatServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_errno_10_and_the_server_recovers() {
    let (relay, relayed_url) = mariadb_relay().await;
    let server = ChatServer::start_with(config_on(relayed_url)).await;

    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let mut carol = server.client().await;
    let carol_id = carol.register("carol", "pw").await;
    let before = server.count("SELECT COUNT(*) FROM group_members").await;

    relay.cut();
    // Storage is needed: errno 10, whatever the request.
    for request in [
        req::create_group("during outage", ""),
        req::chat(carol_id, "stored?"),
        // Chat to an online user too: a message is stored before anyone
        // gets it, so without storage nobody does.
        req::chat(bob_id, "not stored, not pushed"),
    ] {
        let reply = alice.call(&request).await;
        assert_eq!(reply.errno(), Errno::ServerError, "{request:?}: {reply:?}");
    }
    for request in [req::login(carol_id, "pw"), req::register("dave", "pw")] {
        let reply = carol.call(&request).await;
        assert_eq!(reply.errno(), Errno::ServerError, "{request:?}: {reply:?}");
    }
    // Not needed: PING goes on.
    carol.ping().await;
    bob.expect_silence(Duration::from_millis(100)).await;

    relay.restore();
    // The pool reconnects by itself; nothing was half-written meanwhile.
    let deadline = Deadline::after(Duration::from_secs(20));
    loop {
        let create = alice.call(&req::create_group("after outage", "")).await;
        if create.errno() == Errno::Ok {
            break;
        }
        assert_eq!(create.errno(), Errno::ServerError);
        deadline.check("storage never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server
            .count("SELECT COUNT(*) FROM chat_groups WHERE name = 'during outage'")
            .await,
        0
    );
    assert_eq!(
        server.count("SELECT COUNT(*) FROM group_members").await,
        before + 1
    );
    let ack = carol.login(carol_id, "pw").await;
    assert!(
        ack.offline.is_empty(),
        "the refused message was not stored: {:?}",
        ack.offline
    );
    alice.chat(bob_id, "after outage").await;
    assert_eq!(bob.recv_chat().await.msg, "after outage");
    server.stop().await;
}
