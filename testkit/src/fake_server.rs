//! A fake chat server speaking v2 on 127.0.0.1:0, built on the protocol
//! crate's types: real semantics for what a client sends (users, friends,
//! groups, offline messages), every request recorded, and knobs to
//! misbehave (refuse logins, write raw bytes, close a connection, stop
//! accepting). For client tests that need control the real server does not
//! give.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use protocol::{
    parse_frame, Ack, AddFriend, AddGroup, Chat, ChatTarget, CreateGroup, Credential, Errno,
    FrameCodec, Friend, Group, Login, LoginAck, Member, MsgId, Parsed, Pong, Presence, Register,
    Reply, Request, Role, SendChat, Version,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::wait::eventually;

/// The `time` the fake server stamps on every chat it relays.
pub const CHAT_TIME: &str = "2024-05-01 12:00:00";
/// The `ts` it stamps on them.
pub const CHAT_TS: i64 = 1_714_564_800_000;

#[derive(Debug, Clone)]
struct User {
    name: String,
    password: String,
    friends: Vec<i64>,
    offline: Vec<Chat>,
}

#[derive(Debug, Clone)]
struct FakeGroup {
    name: String,
    desc: String,
    members: Vec<(i64, Role)>,
}

enum Out {
    /// Bytes to write as they are (a rendered frame or anything else).
    Bytes(Vec<u8>),
    Close,
}

#[derive(Default)]
struct State {
    users: BTreeMap<i64, User>,
    groups: BTreeMap<i64, FakeGroup>,
    /// user id -> connection id
    online: HashMap<i64, u64>,
    conns: HashMap<u64, mpsc::UnboundedSender<Out>>,
    requests: Vec<Parsed>,
    /// Answer errno 2 to this many next LOGINs (an old session "still closing").
    busy_logins: u32,
    next_conn: u64,
    next_group: i64,
    next_mid: i64,
    accepted: usize,
}

impl State {
    fn presence(&self, user: i64) -> Presence {
        if self.online.contains_key(&user) {
            Presence::Online
        } else {
            Presence::Offline
        }
    }

    fn send(&self, conn: u64, bytes: Vec<u8>) {
        if let Some(out) = self.conns.get(&conn) {
            let _ = out.send(Out::Bytes(bytes));
        }
    }
}

pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl FakeServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            next_group: 100,
            next_mid: 1000,
            ..State::default()
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let conn = {
                    let mut s = shared.lock().unwrap();
                    s.next_conn += 1;
                    s.accepted += 1;
                    let conn = s.next_conn;
                    s.conns.insert(conn, tx);
                    conn
                };
                tokio::spawn(serve(stream, conn, rx, shared.clone()));
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn add_user(&self, id: i64, name: &str, password: &str) {
        self.state.lock().unwrap().users.insert(
            id,
            User {
                name: name.into(),
                password: password.into(),
                friends: Vec::new(),
                offline: Vec::new(),
            },
        );
    }

    pub fn befriend(&self, a: i64, b: i64) {
        let mut s = self.state.lock().unwrap();
        s.users.get_mut(&a).expect("user a").friends.push(b);
        s.users.get_mut(&b).expect("user b").friends.push(a);
    }

    pub fn add_group(&self, id: i64, name: &str, desc: &str, members: &[(i64, Role)]) {
        self.state.lock().unwrap().groups.insert(
            id,
            FakeGroup {
                name: name.into(),
                desc: desc.into(),
                members: members.to_vec(),
            },
        );
    }

    /// Stores `message` for `to`'s next login.
    pub fn store_offline(&self, to: i64, message: Chat) {
        let mut s = self.state.lock().unwrap();
        s.users.get_mut(&to).expect("user").offline.push(message);
    }

    /// The next `n` LOGINs get errno 2.
    pub fn busy_logins(&self, n: u32) {
        self.state.lock().unwrap().busy_logins = n;
    }

    pub fn accepted(&self) -> usize {
        self.state.lock().unwrap().accepted
    }

    /// Every request received so far, as parsed.
    pub fn requests(&self) -> Vec<Parsed> {
        self.state.lock().unwrap().requests.clone()
    }

    fn conn_of(&self, id: i64) -> mpsc::UnboundedSender<Out> {
        let s = self.state.lock().unwrap();
        let conn = s.online[&id];
        s.conns[&conn].clone()
    }

    /// Writes raw bytes to the connection of a logged-in user.
    pub fn send_raw(&self, id: i64, bytes: &[u8]) {
        let _ = self.conn_of(id).send(Out::Bytes(bytes.to_vec()));
    }

    /// Closes the connection of a logged-in user.
    pub fn kick(&self, id: i64) {
        let _ = self.conn_of(id).send(Out::Close);
    }

    /// Stops accepting: new connections are refused.
    pub fn stop_accepting(&self) {
        self.accept.abort();
    }

    pub async fn wait_requests(&self, pred: impl Fn(&[Parsed]) -> bool, what: &str) {
        eventually(what, || pred(&self.requests())).await;
    }

    /// Two friends, alice (13, `pw-a`) and bob li (15, `pw-b`), alice
    /// creator and bob member of group 1 "rustaceans".
    pub async fn with_alice_and_bob() -> FakeServer {
        let server = FakeServer::start().await;
        server.add_user(13, "alice", "pw-a");
        server.add_user(15, "bob li", "pw-b");
        server.befriend(13, 15);
        server.add_group(
            1,
            "rustaceans",
            "we like: rust",
            &[(13, Role::Creator), (15, Role::Normal)],
        );
        server
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(
    stream: TcpStream,
    conn: u64,
    mut outbox: mpsc::UnboundedReceiver<Out>,
    state: Arc<Mutex<State>>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut frames = FramedRead::new(reader, FrameCodec::default());
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(Ok(frame)) = frame else { break };
                handle(conn, parse_frame(&frame), &state);
            }
            out = outbox.recv() => match out {
                Some(Out::Bytes(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close) | None => break,
            },
        }
    }
    let mut s = state.lock().unwrap();
    s.conns.remove(&conn);
    s.online.retain(|_, c| *c != conn);
}

/// Applies one request; replies and pushes go to the outboxes.
fn handle(conn: u64, parsed: Parsed, state: &Mutex<State>) {
    let mut s = state.lock().unwrap();
    s.requests.push(parsed.clone());
    let rid: Option<Value> = parsed.rid;
    let reply = |s: &State, reply: Reply| {
        if let Some(bytes) = reply.render(Version::V2, rid.as_ref()) {
            s.send(conn, bytes);
        }
    };
    let request = match parsed.request {
        Ok(request) => request,
        Err(bad) => return reply(&s, Reply::error(bad.msgid, bad.errno())),
    };
    let me = s.online.iter().find(|(_, c)| **c == conn).map(|(u, _)| *u);
    let msgid = request.msgid();
    let open = matches!(
        request,
        Request::Login(_) | Request::Register(_) | Request::Ping
    );
    if me.is_none() && !open {
        return reply(
            &s,
            Reply::refuse(Some(msgid), Errno::NotAuthorized, "not logged in"),
        );
    }
    // Only LOGIN, REGISTER and PING get here without a user; they ignore it.
    let me = me.unwrap_or_default();
    let outcome = match request {
        Request::Login(login) => log_in(&mut s, conn, login),
        Request::Register(Register { name, password }) => {
            if s.users.values().any(|u| u.name == name) {
                Reply::refuse(Some(msgid), Errno::BadCredentials, "name is taken")
            } else {
                let id = s.users.keys().max().copied().unwrap_or(0) + 1;
                s.users.insert(
                    id,
                    User {
                        name,
                        password,
                        friends: Vec::new(),
                        offline: Vec::new(),
                    },
                );
                Reply::RegisterOk { id }
            }
        }
        Request::Logout(_) => {
            s.online.retain(|_, c| *c != conn);
            Reply::DONE
        }
        Request::Chat(send) => relay(&mut s, me, send),
        Request::AddFriend(AddFriend { friend, .. }) => {
            if friend == me || !s.users.contains_key(&friend) {
                Reply::error(Some(msgid), Errno::NotFound)
            } else {
                s.users.get_mut(&me).expect("me").friends.push(friend);
                s.users.get_mut(&friend).expect("friend").friends.push(me);
                Reply::DONE
            }
        }
        Request::CreateGroup(CreateGroup { name, desc, .. }) => {
            if s.groups.values().any(|g| g.name == name) {
                Reply::error(Some(msgid), Errno::GroupNameTaken)
            } else {
                s.next_group += 1;
                let groupid = s.next_group;
                s.groups.insert(
                    groupid,
                    FakeGroup {
                        name,
                        desc,
                        members: vec![(me, Role::Creator)],
                    },
                );
                Reply::Done(Ack {
                    mid: None,
                    groupid: Some(groupid),
                    ..Ack::default()
                })
            }
        }
        Request::AddGroup(AddGroup { group, .. }) => match s.groups.get_mut(&group) {
            None => Reply::error(Some(msgid), Errno::NotFound),
            Some(group) => {
                if !group.members.iter().any(|(m, _)| *m == me) {
                    group.members.push((me, Role::Normal));
                }
                Reply::DONE
            }
        },
        Request::Ping => Reply::Pong(Pong {
            server: "fake".into(),
            load: s.online.len() as u64,
            ready: true,
        }),
        Request::Delivered(_) => Reply::Silent,
        Request::History(_) => Reply::error(Some(msgid), Errno::BadRequest),
    };
    reply(&s, outcome);
}

fn log_in(s: &mut State, conn: u64, login: Login) -> Reply {
    let request = Some(MsgId::Login);
    let id = login.id;
    let known = match login.credential {
        Credential::Password(password) => s.users.get(&id).is_some_and(|u| u.password == password),
        Credential::Token(_) => false,
    };
    if !known {
        return Reply::error(request, Errno::BadCredentials);
    }
    if s.busy_logins > 0 || s.online.contains_key(&id) {
        s.busy_logins = s.busy_logins.saturating_sub(1);
        return Reply::error(request, Errno::AlreadyLoggedIn);
    }
    s.online.insert(id, conn);
    let user = s.users[&id].clone();
    let friends = user
        .friends
        .iter()
        .map(|f| Friend {
            id: *f,
            name: s.users[f].name.clone(),
            state: s.presence(*f),
        })
        .collect();
    let groups = s
        .groups
        .iter()
        .filter(|(_, g)| g.members.iter().any(|(m, _)| *m == id))
        .map(|(gid, g)| Group {
            id: *gid,
            name: g.name.clone(),
            desc: g.desc.clone(),
            users: g
                .members
                .iter()
                .map(|(m, role)| Member {
                    id: *m,
                    name: s.users[m].name.clone(),
                    state: s.presence(*m),
                    role: *role,
                })
                .collect(),
        })
        .collect();
    let offline = std::mem::take(&mut s.users.get_mut(&id).expect("user").offline);
    Reply::LoginOk(Box::new(LoginAck {
        id,
        name: user.name,
        friends,
        groups,
        offline,
        skipped: 0,
        seq: None,
        token: None,
    }))
}

/// ONE_CHAT or GROUP_CHAT from `me`: pushed to receivers online, stored
/// for the others.
fn relay(s: &mut State, me: i64, send: SendChat) -> Reply {
    let msgid = Some(send.target.msgid());
    s.next_mid += 1;
    let mid = s.next_mid;
    let receivers: Vec<i64> = match send.target {
        ChatTarget::User(to) => {
            if !s.users.contains_key(&to) {
                return Reply::error(msgid, Errno::NotFound);
            }
            vec![to]
        }
        ChatTarget::Group(gid) => {
            let Some(group) = s.groups.get(&gid) else {
                return Reply::error(msgid, Errno::NotFound);
            };
            if !group.members.iter().any(|(m, _)| *m == me) {
                return Reply::error(msgid, Errno::NotMember);
            }
            group
                .members
                .iter()
                .map(|(m, _)| *m)
                .filter(|m| *m != me)
                .collect()
        }
    };
    let chat = Chat {
        target: send.target,
        from: me,
        name: s.users[&me].name.clone(),
        msg: send.msg,
        time: CHAT_TIME.into(),
        mid: Some(mid),
        ts: Some(CHAT_TS),
        seq: None,
    };
    for to in receivers {
        match s.online.get(&to) {
            Some(conn) => {
                let mut bytes = chat.to_json(Version::V2).into_bytes();
                bytes.push(b'\n');
                s.send(*conn, bytes);
            }
            None => s
                .users
                .get_mut(&to)
                .expect("user")
                .offline
                .push(chat.clone()),
        }
    }
    Reply::Done(Ack {
        mid: Some(mid),
        ..Ack::default()
    })
}
