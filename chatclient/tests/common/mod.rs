//! Test helpers: a fake ChatChat server speaking v2 (docs/protocol.md) on
//! 127.0.0.1:0, and a handle on a `chatclient` child process driven
//! through pipes. Every wait is bounded.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::FrameCodec;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// How long any single expectation may wait.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub friends: Vec<i64>,
    pub offline: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub desc: String,
    pub members: Vec<(i64, &'static str)>,
}

enum Out {
    Frame(Value),
    Raw(Vec<u8>),
    Close,
}

#[derive(Default)]
struct State {
    users: BTreeMap<i64, User>,
    groups: BTreeMap<i64, Group>,
    /// user id -> connection id
    online: HashMap<i64, u64>,
    conns: HashMap<u64, mpsc::UnboundedSender<Out>>,
    requests: Vec<Value>,
    /// Answer errno 2 to this many next LOGINs (an old session "still closing").
    busy_logins: u32,
    next_conn: u64,
    next_group: i64,
    next_mid: i64,
    accepted: usize,
}

/// A fake server: real semantics for the requests the client sends,
/// plus knobs to misbehave.
pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl FakeServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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
        s.users.get_mut(&a).unwrap().friends.push(b);
        s.users.get_mut(&b).unwrap().friends.push(a);
    }

    pub fn add_group(&self, id: i64, name: &str, desc: &str, members: &[(i64, &'static str)]) {
        self.state.lock().unwrap().groups.insert(
            id,
            Group {
                name: name.into(),
                desc: desc.into(),
                members: members.to_vec(),
            },
        );
    }

    pub fn store_offline(&self, to: i64, message: Value) {
        let mut s = self.state.lock().unwrap();
        s.users.get_mut(&to).unwrap().offline.push(message);
    }

    /// The next `n` LOGINs get errno 2.
    pub fn busy_logins(&self, n: u32) {
        self.state.lock().unwrap().busy_logins = n;
    }

    pub fn is_online(&self, id: i64) -> bool {
        self.state.lock().unwrap().online.contains_key(&id)
    }

    pub fn accepted(&self) -> usize {
        self.state.lock().unwrap().accepted
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }

    fn conn_of(&self, id: i64) -> mpsc::UnboundedSender<Out> {
        let s = self.state.lock().unwrap();
        let conn = s.online[&id];
        s.conns[&conn].clone()
    }

    /// Writes raw bytes to the connection of a logged-in user.
    pub fn send_raw(&self, id: i64, bytes: &[u8]) {
        let _ = self.conn_of(id).send(Out::Raw(bytes.to_vec()));
    }

    /// Closes the connection of a logged-in user.
    pub fn kick(&self, id: i64) {
        let _ = self.conn_of(id).send(Out::Close);
    }

    /// Stops accepting: new connections are refused.
    pub fn stop_accepting(&self) {
        self.accept.abort();
    }

    pub async fn wait_online(&self, id: i64, online: bool) {
        wait_until(|| self.is_online(id) == online, "user online state").await;
    }

    pub async fn wait_requests(&self, pred: impl Fn(&[Value]) -> bool, what: &str) {
        wait_until(|| pred(&self.requests()), what).await;
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Polls a condition every 20 ms for at most [`WAIT`].
pub async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve(
    stream: TcpStream,
    conn: u64,
    mut outbox: mpsc::UnboundedReceiver<Out>,
    state: Arc<Mutex<State>>,
) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    loop {
        tokio::select! {
            frame = framed.next() => {
                let Some(Ok(frame)) = frame else { break };
                let Ok(request) = serde_json::from_slice::<Value>(&frame) else {
                    let reply = json!({"msgid": 11, "errno": 6, "errmsg": "bad request"});
                    let _ = framed.send(reply.to_string().as_bytes()).await;
                    continue;
                };
                handle(conn, request, &state);
            }
            out = outbox.recv() => match out {
                Some(Out::Frame(value)) => {
                    if framed.send(value.to_string().as_bytes()).await.is_err() {
                        break;
                    }
                }
                Some(Out::Raw(bytes)) => {
                    if framed.get_mut().write_all(&bytes).await.is_err() {
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
fn handle(conn: u64, request: Value, state: &Mutex<State>) {
    let mut s = state.lock().unwrap();
    s.requests.push(request.clone());
    let rid = request.get("rid").cloned().unwrap_or(Value::Null);
    let me = s.online.iter().find(|(_, c)| **c == conn).map(|(u, _)| *u);
    let reply = |s: &State, mut value: Value| {
        value["rid"] = rid.clone();
        let _ = s.conns[&conn].send(Out::Frame(value));
    };
    let push = |s: &mut State, to: i64, value: Value| match s.online.get(&to) {
        Some(c) => {
            let _ = s.conns[c].send(Out::Frame(value));
        }
        None => {
            if let Some(user) = s.users.get_mut(&to) {
                user.offline.push(value);
            }
        }
    };
    let int = |key: &str| request.get(key).and_then(Value::as_i64);
    let text = |key: &str| {
        request
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let msgid = int("msgid").unwrap_or(0);
    if msgid != 1 && msgid != 4 && msgid != 12 && me.is_none() {
        reply(
            &s,
            json!({"msgid": 11, "errno": 7, "errmsg": "not logged in"}),
        );
        return;
    }
    match msgid {
        1 => {
            let id = int("id").unwrap_or(0);
            let ok = s
                .users
                .get(&id)
                .is_some_and(|u| u.password == text("password"));
            if !ok {
                reply(
                    &s,
                    json!({"msgid": 2, "errno": 1, "errmsg": "incorrect id or password!"}),
                );
            } else if s.busy_logins > 0 || s.online.contains_key(&id) {
                s.busy_logins = s.busy_logins.saturating_sub(1);
                reply(
                    &s,
                    json!({"msgid": 2, "errno": 2, "errmsg": "this account is using, input another!"}),
                );
            } else {
                s.online.insert(id, conn);
                let user = s.users.get(&id).unwrap().clone();
                let state_of = |s: &State, u: i64| {
                    if s.online.contains_key(&u) {
                        "online"
                    } else {
                        "offline"
                    }
                };
                let friends: Vec<Value> = user
                    .friends
                    .iter()
                    .map(|f| json!({"id": f, "name": s.users[f].name, "state": state_of(&s, *f)}))
                    .collect();
                let groups: Vec<Value> = s
                    .groups
                    .iter()
                    .filter(|(_, g)| g.members.iter().any(|(m, _)| *m == id))
                    .map(|(gid, g)| {
                        let users: Vec<Value> = g
                            .members
                            .iter()
                            .map(|(m, role)| {
                                json!({"id": m, "name": s.users[m].name,
                                       "state": state_of(&s, *m), "role": role})
                            })
                            .collect();
                        json!({"id": gid, "groupname": g.name, "groupdesc": g.desc, "users": users})
                    })
                    .collect();
                let offline = std::mem::take(&mut s.users.get_mut(&id).unwrap().offline);
                reply(
                    &s,
                    json!({"msgid": 2, "errno": 0, "id": id, "name": user.name,
                           "friends": friends, "groups": groups, "offlinemsg": offline}),
                );
            }
        }
        4 => {
            let name = text("name");
            if s.users.values().any(|u| u.name == name) {
                reply(
                    &s,
                    json!({"msgid": 5, "errno": 1, "errmsg": "name is taken"}),
                );
            } else {
                let id = s.users.keys().max().copied().unwrap_or(0) + 1;
                s.users.insert(
                    id,
                    User {
                        name,
                        password: text("password"),
                        friends: Vec::new(),
                        offline: Vec::new(),
                    },
                );
                reply(&s, json!({"msgid": 5, "errno": 0, "id": id}));
            }
        }
        3 => {
            s.online.retain(|_, c| *c != conn);
            reply(&s, json!({"msgid": 11, "errno": 0}));
        }
        6 | 10 => {
            let me = me.unwrap();
            let name = s.users[&me].name.clone();
            s.next_mid += 1;
            let mid = s.next_mid;
            let mut message = json!({"msgid": msgid, "id": me, "name": name, "msg": text("msg"),
                                     "time": "2024-05-01 12:00:00", "mid": mid, "ts": 1_714_564_800_000_i64});
            let receivers: Vec<i64> = if msgid == 6 {
                let to = int("toid").unwrap_or(0);
                if !s.users.contains_key(&to) {
                    reply(
                        &s,
                        json!({"msgid": 11, "errno": 4, "errmsg": "no such user or group"}),
                    );
                    return;
                }
                message["toid"] = to.into();
                vec![to]
            } else {
                let gid = int("groupid").unwrap_or(0);
                let Some(group) = s.groups.get(&gid) else {
                    reply(
                        &s,
                        json!({"msgid": 11, "errno": 4, "errmsg": "no such user or group"}),
                    );
                    return;
                };
                if !group.members.iter().any(|(m, _)| *m == me) {
                    reply(
                        &s,
                        json!({"msgid": 11, "errno": 5, "errmsg": "not a member of that group"}),
                    );
                    return;
                }
                message["groupid"] = gid.into();
                group
                    .members
                    .iter()
                    .map(|(m, _)| *m)
                    .filter(|m| *m != me)
                    .collect()
            };
            for to in receivers {
                push(&mut s, to, message.clone());
            }
            reply(&s, json!({"msgid": 11, "errno": 0, "mid": mid}));
        }
        7 => {
            let me = me.unwrap();
            let friend = int("friendid").unwrap_or(0);
            if friend == me || !s.users.contains_key(&friend) {
                reply(
                    &s,
                    json!({"msgid": 11, "errno": 4, "errmsg": "no such user or group"}),
                );
            } else {
                s.users.get_mut(&me).unwrap().friends.push(friend);
                s.users.get_mut(&friend).unwrap().friends.push(me);
                reply(&s, json!({"msgid": 11, "errno": 0}));
            }
        }
        8 => {
            let me = me.unwrap();
            let name = text("groupname");
            if s.groups.values().any(|g| g.name == name) {
                reply(
                    &s,
                    json!({"msgid": 11, "errno": 3, "errmsg": "group name is taken"}),
                );
            } else {
                s.next_group += 1;
                let gid = s.next_group;
                s.groups.insert(
                    gid,
                    Group {
                        name,
                        desc: text("groupdesc"),
                        members: vec![(me, "creator")],
                    },
                );
                reply(&s, json!({"msgid": 11, "errno": 0, "groupid": gid}));
            }
        }
        9 => {
            let me = me.unwrap();
            let gid = int("groupid").unwrap_or(0);
            match s.groups.get_mut(&gid) {
                None => reply(
                    &s,
                    json!({"msgid": 11, "errno": 4, "errmsg": "no such user or group"}),
                ),
                Some(group) => {
                    if !group.members.iter().any(|(m, _)| *m == me) {
                        group.members.push((me, "normal"));
                    }
                    reply(&s, json!({"msgid": 11, "errno": 0}));
                }
            }
        }
        12 => reply(
            &s,
            json!({"msgid": 13, "server": "fake", "load": s.online.len()}),
        ),
        _ => reply(
            &s,
            json!({"msgid": 11, "errno": 6, "errmsg": "unknown msgid"}),
        ),
    }
}

/// A running `chatclient` with piped stdio.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every line seen so far, for failure messages and later checks.
    pub out_seen: Vec<String>,
    pub err_seen: Vec<String>,
}

pub fn client_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatclient"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    command
}

fn lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Client {
    /// Starts `chatclient 127.0.0.1 PORT ARGS...` with a short linger.
    pub fn start(port: u16, args: &[&str]) -> Self {
        let port = port.to_string();
        let mut all = vec!["127.0.0.1", port.as_str(), "--linger", "0.3"];
        all.extend_from_slice(args);
        Self::spawn(client_command(&all))
    }

    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chatclient");
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
            stderr,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(text.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line containing `needle`; returns it.
    pub async fn expect_out(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.stdout.recv().await {
                self.out_seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => {
                let err = self.drain_err();
                panic!(
                    "no stdout line with {needle:?}; stdout: {:#?}; stderr so far: {err:#?}",
                    self.out_seen
                )
            }
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub async fn expect_err(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.stderr.recv().await {
                self.err_seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no stderr line with {needle:?}; stderr: {:#?}; stdout: {:#?}",
                self.err_seen, self.out_seen
            ),
        }
    }

    fn drain_err(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.err_seen.push(line);
        }
        self.err_seen.clone()
    }

    /// Closes stdin and waits for the exit; returns the status with every
    /// remaining line of stdout and stderr.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.close_stdin();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("chatclient did not exit in time")
            .unwrap();
        let mut out = std::mem::take(&mut self.out_seen);
        let mut err = std::mem::take(&mut self.err_seen);
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.stdout.recv()).await
        {
            out.push(line);
        }
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.stderr.recv()).await
        {
            err.push(line);
        }
        for line in &err {
            assert!(!line.contains("panicked"), "chatclient panicked: {err:#?}");
        }
        (status, out, err)
    }
}

/// A port on which nothing listens.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A client logged in with `--login`, its password in the environment.
pub async fn logged_in(server: &FakeServer, id: i64, password: &str, extra: &[&str]) -> Client {
    let port = server.port().to_string();
    let id_text = id.to_string();
    let mut args = vec![
        "127.0.0.1",
        &port,
        "--linger",
        "0.3",
        "--login",
        &id_text,
        "--password-env",
        "CHAT_PW",
    ];
    args.extend_from_slice(extra);
    let mut command = client_command(&args);
    command.env("CHAT_PW", password);
    let mut client = Client::spawn(command);
    client.expect_out(&format!("logged in: id {id} ")).await;
    client
}

/// The fake server with two friends, alice (13) and bob li (15), both in
/// group 1.
pub async fn server_with_alice_and_bob() -> FakeServer {
    let server = FakeServer::start().await;
    server.add_user(13, "alice", "pw-a");
    server.add_user(15, "bob li", "pw-b");
    server.befriend(13, 15);
    server.add_group(
        1,
        "rustaceans",
        "we like: rust",
        &[(13, "creator"), (15, "normal")],
    );
    server
}
