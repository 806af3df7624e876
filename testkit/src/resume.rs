//! A v2 client that survives its server: it reconnects, logs in with its
//! token and `since`, re-sends an unacknowledged chat with the same `cid`,
//! and reads pushes in `seq` order. What the crash tests drive, so that the
//! server's promises (nothing acknowledged is lost, nothing shown twice)
//! are checked as a real client would see them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protocol::{Chat, ChatTarget, Credential, Errno, Login, Reply, Request, SendChat, ServerFrame};

use crate::client::{Client, ReplyExt};
use crate::wait::Deadline;

/// How long a reconnecting client keeps trying (a restarted server, a
/// killed server's presence lease running out).
const RECONNECT_FOR: Duration = Duration::from_secs(40);

pub struct ResumingClient {
    addr: SocketAddr,
    id: i64,
    password: String,
    token: Option<String>,
    /// Highest inbox seq received: `since` at the next login.
    pub last_seq: i64,
    /// Pushes at or below `last_seq` received again (must stay 0).
    pub repeated: u64,
    /// Logins made, the first one included.
    pub logins: u32,
    /// Logins that sent the password (and so cost the server a hash).
    pub password_logins: u32,
    /// Longest time from noticing the connection was gone to being logged
    /// in again.
    pub longest_outage: Duration,
    /// Each time the connection was found gone, and when the client was
    /// logged in again.
    pub outages: Vec<(Instant, Instant)>,
    /// When the connection was found gone, until the next login.
    lost_at: Option<Instant>,
    /// A GOAWAY's `retry_ms`: the next reconnection waits a random part of it.
    retry_within: Option<Duration>,
    client: Option<Client>,
    cids: u64,
}

impl ResumingClient {
    /// A client for user `id`, not connected yet.
    pub fn new(addr: SocketAddr, id: i64, password: &str) -> Self {
        ResumingClient {
            addr,
            id,
            password: password.to_owned(),
            token: None,
            last_seq: 0,
            repeated: 0,
            logins: 0,
            password_logins: 0,
            longest_outage: Duration::ZERO,
            outages: Vec::new(),
            lost_at: None,
            retry_within: None,
            client: None,
            cids: 0,
        }
    }

    /// The connection, (re)connecting and logging in as needed.
    async fn connected(&mut self) -> &mut Client {
        if self.client.is_none() {
            // As PROTOCOL.md asks: after GOAWAY, a random delay in [0, retry_ms].
            if let Some(within) = self.retry_within.take() {
                tokio::time::sleep(within.mul_f64(rand::random::<f64>())).await;
            }
            let deadline = Deadline::after(RECONNECT_FOR);
            loop {
                if let Some(client) = self.try_login().await {
                    self.client = Some(client);
                    break;
                }
                deadline.check("could not log in again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.client.as_mut().expect("connected above")
    }

    async fn try_login(&mut self) -> Option<Client> {
        let mut client = Client::try_connect(self.addr).await.ok()?;
        let credential = match &self.token {
            Some(token) => Credential::Token(token.clone()),
            None => Credential::Password(self.password.clone()),
        };
        let login = Request::Login(Login {
            id: self.id,
            credential,
            since: Some(self.last_seq),
        });
        match client.try_call(&login).await.ok()? {
            Reply::LoginOk(ack) => {
                assert!(ack.offline.is_empty(), "v2 offlinemsg stays empty");
                if self.token.is_none() {
                    self.password_logins += 1;
                }
                self.token = ack.token.clone();
                self.logins += 1;
                if let Some(lost_at) = self.lost_at.take() {
                    self.longest_outage = self.longest_outage.max(lost_at.elapsed());
                    self.outages.push((lost_at, Instant::now()));
                }
                Some(client)
            }
            // The old login's lease, or a server not ready: try again.
            Reply::Error(failure)
                if matches!(failure.errno, Errno::AlreadyLoggedIn | Errno::ServerError) =>
            {
                None
            }
            other => panic!("login of {} refused: {other:?}", self.id),
        }
    }

    /// Connects and logs in now (a first login sends the password).
    pub async fn log_in(&mut self) {
        self.connected().await;
    }

    /// Sends a chat until it is acknowledged (re-sending it with the same
    /// `cid` after a reconnect); returns its `mid`.
    pub async fn send(&mut self, target: ChatTarget, msg: &str) -> i64 {
        self.cids += 1;
        let request = Request::Chat(SendChat {
            id: None,
            target,
            msg: msg.to_owned(),
            time: None,
            cid: Some(format!("{}-{}", self.id, self.cids)),
        });
        let deadline = Deadline::after(RECONNECT_FOR);
        loop {
            let client = self.connected().await;
            match client.try_call(&request).await {
                Ok(reply) => {
                    if reply.errno() == Errno::ServerError {
                        deadline.check("storage never came back");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    assert_eq!(reply.errno(), Errno::Ok, "{reply:?}");
                    return reply.mid().expect("an ACK carries the mid");
                }
                Err(_) => {
                    self.lose();
                    deadline.check("never acknowledged");
                }
            }
        }
    }

    /// The next pushed chat with a new seq, reconnecting when the server
    /// goes away; `None` when nothing new came for `quiet`.
    pub async fn next_chat(&mut self, quiet: Duration) -> Option<Chat> {
        loop {
            let client = self.connected().await;
            match client.recv_within(quiet).await {
                Ok(incoming) => match incoming.frame {
                    ServerFrame::Chat(chat) => {
                        let seq = chat.seq.expect("v2 pushes carry seq");
                        if seq <= self.last_seq {
                            self.repeated += 1;
                            continue;
                        }
                        assert_eq!(seq, self.last_seq + 1, "seq has no gap");
                        self.last_seq = seq;
                        return Some(chat);
                    }
                    // GOAWAY, or a late reply: the next read tells more.
                    ServerFrame::GoAway(goaway) => {
                        self.retry_within = Some(Duration::from_millis(goaway.retry_ms));
                        self.lose();
                    }
                    _ => {}
                },
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
                Err(_) => self.lose(),
            }
        }
    }

    /// Confirms everything received (DELIVERED), if connected.
    pub async fn confirm(&mut self) {
        let seq = self.last_seq;
        if let Some(client) = self.client.as_mut() {
            if seq > 0 {
                let _ = client
                    .try_send_raw(
                        &Request::Delivered(protocol::Delivered { seq })
                            .encode(protocol::Version::V2, None),
                    )
                    .await;
            }
        }
    }

    /// Drops the connection (as a crashed client would).
    pub fn disconnect(&mut self) {
        self.lose();
    }

    /// The connection is gone: the outage runs until the next login.
    fn lose(&mut self) {
        self.client = None;
        self.lost_at.get_or_insert_with(Instant::now);
    }
}
