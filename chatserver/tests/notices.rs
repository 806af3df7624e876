//! NOTICE (msgid 17): friend and group lists stay live without a new
//! login. Presence to friends and fellow members at login and logout, the
//! new friend to both sides, the new member to the group, the group in
//! ADD_GROUP's ACK; on one server and across a cluster; none for v1.

use std::time::Duration;

use testkit::prelude::*;
use testkit::server::{stop_all, ChatServer, Cluster, Storage};

const QUIET: Duration = Duration::from_millis(300);

fn presence(id: i64, state: Presence) -> Notice {
    Notice::Presence { id, state }
}

fn friend(id: i64, name: &str, state: Presence) -> Notice {
    Notice::Friend(Friend {
        id,
        name: name.into(),
        state,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_and_members_hear_of_each_other_on_one_server() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    // A new friendship: both sides, each told of the other.
    alice.add_friend(bob_id).await;
    assert_eq!(
        alice.recv_notice().await,
        friend(bob_id, "bob", Presence::Online)
    );
    assert_eq!(
        bob.recv_notice().await,
        friend(alice_id, "alice", Presence::Online)
    );

    // Logout and login: the friend hears both.
    bob.logout().await;
    assert_eq!(
        alice.recv_notice().await,
        presence(bob_id, Presence::Offline)
    );
    bob.login(bob_id, "pw").await;
    assert_eq!(
        alice.recv_notice().await,
        presence(bob_id, Presence::Online)
    );

    // Joining a group: the ACK carries the group, the members hear of the
    // new one (the joiner gets no notice of its own join).
    let group = alice.create_group("live", "lists").await;
    let (mut carol, carol_id) = server.user("carol").await;
    let joined = match carol.call(&req::join_group(group)).await {
        Reply::Joined(group) => *group,
        other => panic!("expected the group in the ACK, got {other:?}"),
    };
    assert_eq!((joined.id, joined.name.as_str()), (group, "live"));
    let members: Vec<_> = joined
        .users
        .iter()
        .map(|m| (m.id, m.name.as_str(), m.role, m.state))
        .collect();
    assert_eq!(
        members,
        [
            (alice_id, "alice", Role::Creator, Presence::Online),
            (carol_id, "carol", Role::Normal, Presence::Online),
        ]
    );
    match alice.recv_notice().await {
        Notice::Member { groupid, member } => {
            assert_eq!(
                (groupid, member.id, member.name.as_str()),
                (group, carol_id, "carol")
            );
            assert_eq!(member.role, Role::Normal);
        }
        other => panic!("expected a member notice, got {other:?}"),
    }
    carol.expect_no_notice(QUIET).await;

    // Fellow members hear of logouts, both ways (the joiner learnt of the
    // members from the ACK, the members of the joiner from the notice);
    // bob, a stranger to carol, hears nothing.
    carol.logout().await;
    assert_eq!(
        alice.recv_notice().await,
        presence(carol_id, Presence::Offline)
    );
    bob.expect_no_notice(QUIET).await;
    carol.login(carol_id, "pw").await;
    assert_eq!(
        alice.recv_notice().await,
        presence(carol_id, Presence::Online)
    );
    drop(alice);
    assert_eq!(
        carol.recv_notice().await,
        presence(alice_id, Presence::Offline)
    );
    assert_eq!(
        bob.recv_notice().await,
        presence(alice_id, Presence::Offline)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_sessions_get_no_notices() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (mut alice, _) = server.user("alice").await;
    let old_id = server.client().await.register("old", "pw").await;
    // A connection that never said "v":2.
    let mut old = server.client().await;
    old.send_v1(&req::login(old_id, "pw")).await;
    assert_eq!(old.recv_reply().await.errno(), Errno::Ok);
    alice.add_friend(old_id).await;
    let group = alice.create_group("mixed", "").await;
    old.send_v1(&req::join_group(group)).await;
    alice.recv_notice().await; // the friend
    alice.recv_notice().await; // the member
    old.expect_silence(QUIET).await;
    assert!(old.recv_notice_within(QUIET).await.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_cross_the_cluster() {
    let servers = Cluster::new().start(2).await;
    let (mut alice, alice_id) = servers[0].user("alice").await;
    let (mut bob, bob_id) = servers[1].user("bob").await;

    alice.add_friend(bob_id).await;
    assert_eq!(
        alice.recv_notice().await,
        friend(bob_id, "bob", Presence::Online)
    );
    assert_eq!(
        bob.recv_notice().await,
        friend(alice_id, "alice", Presence::Online)
    );

    let group = alice.create_group("spread", "").await;
    let (mut carol, carol_id) = servers[1].user("carol").await;
    carol.join_group(group).await;
    match alice.recv_notice().await {
        Notice::Member { groupid, member } => assert_eq!((groupid, member.id), (group, carol_id)),
        other => panic!("expected a member notice, got {other:?}"),
    }

    bob.logout().await;
    assert_eq!(
        alice.recv_notice().await,
        presence(bob_id, Presence::Offline)
    );
    // bob logs in on the other server: still heard.
    let mut bob = servers[0].client().await;
    bob.login(bob_id, "pw").await;
    assert_eq!(
        alice.recv_notice().await,
        presence(bob_id, Presence::Online)
    );
    alice.logout().await;
    assert_eq!(
        carol.recv_notice().await,
        presence(alice_id, Presence::Offline)
    );
    assert_eq!(
        bob.recv_notice().await,
        presence(alice_id, Presence::Offline)
    );
    stop_all(servers).await;
}
