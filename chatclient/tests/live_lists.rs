//! The real binary keeps its friend and group lists live from the server's
//! NOTICEs: befriended, it lists the new friend at once (it printed
//! `friends: none` until the next login); after `addgroup` it lists the
//! group with its name and members (it printed `#1 ?:`); presence changes
//! show without a new login.

use std::time::Duration;

use testkit::cli::{logged_in, register};
use testkit::server::{ChatServer, Storage};
use testkit::WAIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_and_groups_update_live() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let port = server.port();
    let alice_id = register(port, "alice", "pw").await;
    let mut alice = logged_in(port, alice_id, "pw", &[]).await;
    let (mut bob, bob_id) = server.user("bob").await;

    bob.add_friend(alice_id).await;
    alice
        .expect_out(&format!("bob (id {bob_id}) is now your friend"))
        .await;
    alice.send("friends\n").await;
    assert_eq!(
        alice.expect_out("friend: ").await,
        format!("friend: {bob_id} online bob")
    );

    let group = bob.create_group("g1", "the first").await;
    alice.send(&format!("addgroup:{group}\n")).await;
    alice.expect_out("joined group").await;
    alice.send("groups\n").await;
    assert_eq!(
        alice.expect_out("group: ").await,
        format!("group: #{group} g1: the first")
    );
    let mut members = vec![
        alice.expect_out("member: ").await,
        alice.expect_out("member: ").await,
    ];
    members.sort();
    let mut expected = vec![
        format!("member: #{group} {bob_id} creator online bob"),
        format!("member: #{group} {alice_id} normal online alice"),
    ];
    expected.sort();
    assert_eq!(members, expected);

    // bob leaves: alice's lists say so without a new login.
    bob.logout().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        alice.send("friends\n").await;
        let line = alice.expect_out("friend: ").await;
        if line == format!("friend: {bob_id} offline bob") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {line:?} after bob logged out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.send("groups\n").await;
    alice
        .expect_out(&format!("member: #{group} {bob_id} creator offline bob"))
        .await;
    server.stop().await;
}
