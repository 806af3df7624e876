//! Helpers for the end-to-end tests: a cluster of in-process chat servers
//! on MariaDB and Redis, our balancer in-process, a real Nginx as a child
//! process, and a client that speaks raw protocol frames. Every wait is
//! bounded; every server and process stops when its handle is dropped.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chatserver::config::HashCost;
use protocol::FrameCodec;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// Bound on any single expected event (a reply, a connect, a start-up).
pub const WAIT: Duration = Duration::from_secs(10);

pub fn mysql_base_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique() -> String {
    format!("{}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// A port nothing listens on right now (bound to 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- servers

/// One chat server of a cluster, running in this process. Its name (the
/// `server` of its PONGs) is its address.
pub struct ChatNode {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ChatNode {
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Clean shutdown: stops listening (new connects are refused), closes
    /// its sessions, records their users offline.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(8), task)
                .await
                .expect("chat server stops within 8 s")
                .unwrap();
        }
    }
}

impl Drop for ChatNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Chat servers sharing one fresh MariaDB database and one Redis prefix.
pub struct Cluster {
    pub database_url: String,
    pub prefix: String,
}

impl Cluster {
    pub fn new() -> Self {
        Cluster {
            database_url: format!("{}/chat_test_e2e_{}", mysql_base_url(), unique()),
            prefix: format!("e2e:{:08x}:", rand::random::<u32>()),
        }
    }

    pub fn config(&self) -> chatserver::Config {
        chatserver::Config {
            listen: "127.0.0.1:0".into(),
            database_url: self.database_url.clone(),
            hash_cost: HashCost {
                memory_kib: 64,
                iterations: 1,
            },
            db_connect_timeout: Duration::from_secs(5),
            redis_url: Some(redis_url()),
            redis_prefix: self.prefix.clone(),
            presence_lease: Duration::from_secs(2),
            name: None,
            ..chatserver::Config::default()
        }
    }

    /// Starts one more server on a free port (one after the other: the
    /// first one creates the database and runs the migrations).
    pub async fn start_node(&self) -> ChatNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::time::timeout(
            Duration::from_secs(30),
            chatserver::Server::start(&self.config(), addr),
        )
        .await
        .expect("chat server start-up within 30 s")
        .unwrap_or_else(|e| panic!("chat server does not start (MariaDB and Redis up?): {e}"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(listener, stop.clone().cancelled_owned()));
        ChatNode {
            addr,
            stop,
            task: Some(task),
        }
    }
}

/// Our balancer, in-process, in front of `backends`.
pub struct Lb {
    pub addr: SocketAddr,
    pub handle: balancer::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), balancer::Error>>>,
}

impl Lb {
    /// Chat-level health checks as in `config/lb.toml` (every 1 s, down
    /// after 3 failures), 2 retries on a failed connect.
    pub async fn start(backends: &[SocketAddr]) -> Lb {
        let mut toml = String::from(
            "listen = \"127.0.0.1:0\"\n\
             connect_timeout = \"1s\"\n\
             retries = 2\n\
             shutdown_grace = \"1s\"\n\
             [health]\n\
             kind = \"chat\"\n\
             interval = \"1s\"\n\
             timeout = \"500ms\"\n\
             rise = 2\n\
             fall = 3\n",
        );
        for b in backends {
            toml += &format!("[[backend]]\naddress = \"{b}\"\nweight = 1\n");
        }
        let config = balancer::config::Config::parse(&toml, "e2e-lb.toml").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lb = balancer::Balancer::new(config, None);
        let handle = lb.handle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(lb.run(listener, None, async {
            let _ = rx.await;
        }));
        Lb {
            addr,
            handle,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn backend_up(&self, address: &str) -> Option<bool> {
        self.handle
            .status()
            .backends
            .iter()
            .find(|b| b.address == address && b.in_config)
            .map(|b| b.up)
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("balancer stops in time")
                .unwrap()
                .expect("balancer run failed");
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------- nginx

/// Where Debian's package puts the dynamic stream module, which
/// `config/nginx.conf` loads.
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The `nginx` binary: on PATH or in /usr/sbin. Panics (never skips) when
/// it is missing.
pub fn nginx_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: these tests need it (Debian: `apt-get install nginx \
                 libnginx-mod-stream`; scripts/test.sh installs both)"
            )
        })
}

/// `config/nginx.conf` with its upstream servers replaced by `backends`
/// (weight 1 each, the file's own health and retry settings kept) and its
/// `listen` by `127.0.0.1:listen_port`. Everything else is as shipped.
pub fn render_nginx_conf(template: &str, listen_port: u16, backends: &[SocketAddr]) -> String {
    let mut out = String::new();
    let (mut replaced_listen, mut in_upstream, mut servers) = (false, false, 0);
    for line in template.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("upstream chat {") {
            in_upstream = true;
            out += line;
            out += "\n";
            for b in backends {
                out += &format!("        server {b} weight=1 max_fails=3 fail_timeout=10s;\n");
            }
            continue;
        }
        if in_upstream && trimmed.starts_with('}') {
            in_upstream = false;
        }
        if in_upstream && trimmed.starts_with("server ") {
            servers += 1;
            continue;
        }
        if trimmed.starts_with("listen ") {
            out += &format!("        listen 127.0.0.1:{listen_port};\n");
            replaced_listen = true;
            continue;
        }
        out += line;
        out += "\n";
    }
    assert!(
        replaced_listen && servers > 0,
        "config/nginx.conf changed shape: no `listen` or no upstream `server` lines to replace"
    );
    out
}

/// A real Nginx started from `config/nginx.conf` on its own prefix and
/// port, as a child process (own process group); stopped on drop.
pub struct Nginx {
    pub addr: SocketAddr,
    pub prefix: PathBuf,
    child: Child,
}

impl Nginx {
    pub async fn start(backends: &[SocketAddr]) -> Nginx {
        let binary = nginx_binary();
        assert!(
            Path::new(STREAM_MODULE).is_file(),
            "the Nginx stream module is missing ({STREAM_MODULE}): install it with \
             `apt-get install libnginx-mod-stream` (scripts/test.sh does)"
        );
        let template_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/nginx.conf");
        let template = std::fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", template_path.display()));
        let prefix = std::env::temp_dir().join(format!("chatchat-e2e-nginx-{}", unique()));
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let port = free_port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, render_nginx_conf(&template, port, backends)).unwrap();

        use std::os::unix::process::CommandExt;
        let child = Command::new(&binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut nginx = Nginx {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            prefix,
            child,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = nginx.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!(
                    "nginx exited at start-up ({status}): {stderr}\nerror.log: {}",
                    nginx.error_log()
                );
            }
            if TcpStream::connect(nginx.addr).await.is_ok() {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening on {} within {WAIT:?}; error.log: {}",
                nginx.addr,
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        // TERM: fast shutdown of the master and its workers.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (workers included) goes now.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

// ---------------------------------------------------------------- client

/// A raw protocol client speaking v2: `\n`-terminated JSON frames.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// Pushes read while waiting for a reply.
    pending: VecDeque<Value>,
    next_rid: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(16 * 1024 * 1024),
            pending: VecDeque::new(),
            next_rid: 0,
        }
    }

    pub async fn send(&mut self, request: &Value) {
        let mut bytes = serde_json::to_vec(request).unwrap();
        bytes.push(b'\n');
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next frame, or `None` when the connection closed.
    async fn next_frame(&mut self) -> Option<Value> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(serde_json::from_slice(&frame).unwrap_or_else(|e| {
                    panic!("invalid JSON {:?}: {e}", String::from_utf8_lossy(&frame))
                }));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next pushed frame; panics after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        match tokio::time::timeout(WAIT, self.next_frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("connection closed while a frame was expected"),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }

    /// Waits for the peer to close; panics if it stays open past `wait`.
    pub async fn expect_closed(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => panic!("connection still open after {wait:?}"),
            }
        }
    }

    /// A v2 request with a rid; returns its reply (pushes met on the way
    /// are kept for [`recv`](Client::recv)).
    pub async fn call(&mut self, mut request: Value) -> Value {
        self.next_rid += 1;
        let rid = format!("e2e-{}", self.next_rid);
        request["v"] = json!(2);
        request["rid"] = json!(rid);
        self.send(&request).await;
        loop {
            let frame = match tokio::time::timeout(WAIT, self.next_frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => panic!(
                    "connection closed while waiting for the reply to {}",
                    brief(&request)
                ),
                Err(_) => panic!("no reply within {WAIT:?} to {}", brief(&request)),
            };
            if frame["rid"] == json!(rid) {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// PING; returns the `server` of the PONG: which chat server we reached.
    pub async fn server(&mut self) -> String {
        let pong = self.call(json!({"msgid": 12})).await;
        assert_eq!(pong["msgid"], 13, "not a PONG: {pong}");
        pong["server"]
            .as_str()
            .expect("PONG names its server")
            .to_owned()
    }

    pub async fn register(&mut self, name: &str, password: &str) -> i64 {
        let ack = self
            .call(json!({"msgid": 4, "name": name, "password": password}))
            .await;
        assert_eq!(ack["errno"], 0, "register {name:?}: {ack}");
        ack["id"].as_i64().unwrap()
    }

    pub async fn login(&mut self, id: i64, password: &str) -> Value {
        let ack = self
            .call(json!({"msgid": 1, "id": id, "password": password}))
            .await;
        assert_eq!(ack["errno"], 0, "login {id}: {ack}");
        ack
    }

    /// ONE_CHAT; asserts the ACK is a success.
    pub async fn chat(&mut self, to: i64, msg: &str) {
        let ack = self.call(json!({"msgid": 6, "toid": to, "msg": msg})).await;
        assert_eq!(ack["errno"], 0, "chat to {to}: {}", brief(&ack));
    }

    /// GROUP_CHAT; asserts the ACK is a success.
    pub async fn group_chat(&mut self, group: i64, msg: &str) {
        let ack = self
            .call(json!({"msgid": 10, "groupid": group, "msg": msg}))
            .await;
        assert_eq!(ack["errno"], 0, "group chat to {group}: {ack}");
    }
}

/// A user connected through `front`, registered and logged in, with the
/// name of the chat server that serves them.
pub struct User {
    pub client: Client,
    pub id: i64,
    pub name: String,
    pub server: String,
}

impl User {
    pub async fn new(front: SocketAddr, name: &str) -> User {
        let mut client = Client::connect(front).await;
        let server = client.server().await;
        let id = client.register(name, "pw").await;
        client.login(id, "pw").await;
        User {
            client,
            id,
            name: name.to_owned(),
            server,
        }
    }

    /// Like [`User::new`], but reconnects (at most 8 times) until the
    /// connection lands on a server other than `not_on`.
    pub async fn new_elsewhere(front: SocketAddr, name: &str, not_on: &str) -> User {
        for _ in 0..8 {
            let mut client = Client::connect(front).await;
            let server = client.server().await;
            if server != not_on {
                let id = client.register(name, "pw").await;
                client.login(id, "pw").await;
                return User {
                    client,
                    id,
                    name: name.to_owned(),
                    server,
                };
            }
        }
        panic!("8 connections through {front} all landed on {not_on}");
    }

    /// Logs in again as `self` on a new connection through `front`.
    pub async fn reconnect(&mut self, front: SocketAddr) {
        let mut client = Client::connect(front).await;
        self.server = client.server().await;
        client.login(self.id, "pw").await;
        self.client = client;
    }
}

/// Asserts `to` receives a 1:1 chat `msg` from `from`.
pub async fn expect_chat(to: &mut User, from: &User, msg: &str) {
    let push = to.client.recv().await;
    assert_eq!(push["msgid"], 6, "expected a chat, got {}", brief(&push));
    assert_eq!(push["id"], from.id, "{}", brief(&push));
    assert_eq!(push["name"], from.name.as_str(), "{}", brief(&push));
    assert!(push["msg"] == msg, "chat text changed on the way");
}

/// Asserts `to` receives group chat `msg` in `group` from `from`.
pub async fn expect_group_chat(to: &mut User, from: &User, group: i64, msg: &str) {
    let push = to.client.recv().await;
    assert_eq!(push["msgid"], 10, "expected a group chat, got {push}");
    assert_eq!(push["groupid"], group, "{push}");
    assert_eq!(push["id"], from.id, "{push}");
    assert_eq!(push["msg"], msg, "{push}");
}

/// A 60 KB message of mixed text (ASCII, Chinese, emoji, quotes,
/// backslashes), whose request still fits the 64 KiB frame limit once
/// JSON-escaped.
pub fn big_message() -> String {
    let piece = "the quick brown fox 中文 😀 \"q\" back\\slash 0123456789 ";
    let mut text = String::new();
    while text.len() < 60 * 1000 {
        text += piece;
    }
    let request = json!({"msgid": 6, "toid": 1, "msg": text, "v": 2, "rid": "e2e-100"});
    assert!(serde_json::to_vec(&request).unwrap().len() < 65_000);
    text
}

/// A request or reply shortened for failure messages.
pub fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
        None => text,
    }
}

/// The scenario both fronts must pass: two users on different servers chat
/// 1:1 and in a group, a 60 KB message arrives byte for byte.
/// Returns the users (alice, bob, carol) for the next steps.
pub async fn chat_scenario(front: SocketAddr, tag: &str) -> (User, User, User) {
    let mut alice = User::new(front, &format!("alice-{tag}")).await;
    let mut bob = User::new_elsewhere(front, &format!("bob-{tag}"), &alice.server).await;
    assert_ne!(alice.server, bob.server);
    let mut carol = User::new(front, &format!("carol-{tag}")).await;

    // 1:1 both ways across servers.
    alice.client.chat(bob.id, "hi bob, 你好 👋").await;
    expect_chat(&mut bob, &alice, "hi bob, 你好 👋").await;
    bob.client.chat(alice.id, "hi alice: all good").await;
    expect_chat(&mut alice, &bob, "hi alice: all good").await;

    // A group over both servers.
    let ack = alice
        .client
        .call(json!({"msgid": 8, "groupname": format!("team-{tag}"), "groupdesc": "e2e"}))
        .await;
    assert_eq!(ack["errno"], 0, "{ack}");
    let group = ack["groupid"].as_i64().unwrap();
    for user in [&mut bob, &mut carol] {
        let ack = user
            .client
            .call(json!({"msgid": 9, "groupid": group}))
            .await;
        assert_eq!(ack["errno"], 0, "{ack}");
    }
    alice.client.group_chat(group, "hello team").await;
    expect_group_chat(&mut bob, &alice, group, "hello team").await;
    expect_group_chat(&mut carol, &alice, group, "hello team").await;
    bob.client
        .group_chat(group, "hi from the other server")
        .await;
    expect_group_chat(&mut alice, &bob, group, "hi from the other server").await;
    expect_group_chat(&mut carol, &bob, group, "hi from the other server").await;

    // Bytes pass untouched: 60 KB there and back.
    let big = big_message();
    alice.client.chat(bob.id, &big).await;
    expect_chat(&mut bob, &alice, &big).await;
    bob.client.chat(alice.id, &big).await;
    expect_chat(&mut alice, &bob, &big).await;

    (alice, bob, carol)
}

/// After the server `killed` stopped: new clients through `front` all reach
/// `survivor` (the front retries on the dead one), the users who were on
/// the dead server log in again, and everyone chats 1:1 and in the group.
pub async fn after_kill_scenario(
    front: SocketAddr,
    killed: &str,
    survivor: &str,
    users: (User, User, User),
    tag: &str,
) {
    let (mut alice, mut bob, mut carol) = users;
    for user in [&mut alice, &mut bob, &mut carol] {
        if user.server == killed {
            user.client.expect_closed(WAIT).await;
        }
    }
    // New connections right away, before any health check could notice.
    for i in 0..6 {
        let mut client = Client::connect(front).await;
        let server = client.server().await;
        assert_eq!(server, survivor, "client {i} after the kill");
    }
    for user in [&mut alice, &mut bob, &mut carol] {
        if user.server == killed {
            user.reconnect(front).await;
            assert_eq!(user.server, survivor);
        }
    }
    let mut dave = User::new(front, &format!("dave-{tag}")).await;
    assert_eq!(dave.server, survivor);

    alice.client.chat(bob.id, "still here?").await;
    expect_chat(&mut bob, &alice, "still here?").await;
    dave.client.chat(alice.id, "new here").await;
    expect_chat(&mut alice, &dave, "new here").await;
    alice.client.chat(dave.id, "welcome").await;
    expect_chat(&mut dave, &alice, "welcome").await;

    let group = {
        let ack = alice
            .client
            .call(json!({"msgid": 8, "groupname": format!("after-{tag}")}))
            .await;
        assert_eq!(ack["errno"], 0, "{ack}");
        ack["groupid"].as_i64().unwrap()
    };
    for user in [&mut bob, &mut carol, &mut dave] {
        let ack = user
            .client
            .call(json!({"msgid": 9, "groupid": group}))
            .await;
        assert_eq!(ack["errno"], 0, "{ack}");
    }
    dave.client.group_chat(group, "one server left").await;
    for user in [&mut alice, &mut bob, &mut carol] {
        expect_group_chat(user, &dave, group, "one server left").await;
    }
}

/// Polls `cond` every 20 ms; false if it still fails after `within`.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
