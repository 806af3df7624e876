//! The web listener: the web client's files over HTTP, and WebSocket
//! sessions (one frame per text message, v2 from the first frame) that
//! share everything with TCP sessions, on one server and across a cluster.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use testkit::prelude::*;
use testkit::server::{test_config, ChatServer, Cluster, Storage};
use testkit::ws::tungstenite::protocol::frame::coding::CloseCode;
use testkit::ws::tungstenite::{Error as WsError, Message};
use testkit::ws::{self, Socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request, answered and closed: status, headers (names in
/// lower case), body.
async fn http(addr: SocketAddr, head: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(response[..split].to_vec()).expect("ASCII head");
    let body = response[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line")[9..12]
        .parse()
        .expect("status");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The next data message (pings skipped), as JSON.
async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("a message");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; its code and reason.
async fn close_frame(socket: &mut Socket) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code, frame.reason.as_str().to_owned())
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a reason"),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_tcp_users_chat_one_to_one_and_in_a_group() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (mut web, web_id) = ws::user(server.web, "browser").await;
    let (mut tcp, tcp_id) = server.user("terminal").await;

    let mid = web.chat(tcp_id, "from the browser").await;
    let push = tcp.recv_chat().await;
    assert_eq!(
        (push.msg.as_str(), push.from, push.mid),
        ("from the browser", web_id, mid)
    );
    tcp.chat(web_id, "from the terminal 你好 🎉").await;
    let push = web.recv_chat().await;
    assert_eq!(push.msg, "from the terminal 你好 🎉");
    assert_eq!(
        push.seq,
        Some(1),
        "WebSocket sessions are v2: pushes carry seq"
    );

    let group = web.create_group("mixed", "both transports").await;
    tcp.join_group(group).await;
    web.group_chat(group, "group hello from ws").await;
    assert_eq!(tcp.recv_chat().await.msg, "group hello from ws");
    tcp.group_chat(group, "group hello from tcp").await;
    let push = web.recv_chat().await;
    assert_eq!(push.msg, "group hello from tcp");
    assert_eq!(push.target, ChatTarget::Group(group));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_users_chat_with_tcp_users_across_a_cluster() {
    let servers = Cluster::new().start(2).await;
    let (mut web, web_id) = ws::user(servers[0].web, "browser").await;
    let (mut tcp, tcp_id) = servers[1].user("terminal").await;
    let (mut web2, _) = ws::user(servers[1].web, "browser2").await;

    web.chat(tcp_id, "across servers").await;
    assert_eq!(tcp.recv_chat().await.msg, "across servers");
    tcp.chat(web_id, "and back").await;
    assert_eq!(web.recv_chat().await.msg, "and back");

    let group = tcp.create_group("cluster-mixed", "").await;
    web.join_group(group).await;
    web2.join_group(group).await;
    web.group_chat(group, "ws on server 0").await;
    assert_eq!(tcp.recv_chat().await.msg, "ws on server 0");
    assert_eq!(web2.recv_chat().await.msg, "ws on server 0");
    tcp.group_chat(group, "tcp on server 1").await;
    assert_eq!(web.recv_chat().await.msg, "tcp on server 1");
    assert_eq!(web2.recv_chat().await.msg, "tcp on server 1");
    testkit::server::stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_is_served_with_types_caching_and_a_strict_csp() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (status, headers, body) = http(server.web, "GET / HTTP/1.1").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        String::from_utf8_lossy(&body).contains("<html"),
        "an HTML page"
    );
    let csp = header(&headers, "content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "no inline script: {csp}");
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let etag = header(&headers, "etag").expect("an ETag").to_owned();

    // Revalidation costs a 304 and no body.
    let (status, _, body) = http(
        server.web,
        &format!("GET /index.html HTTP/1.1\r\nIf-None-Match: {etag}"),
    )
    .await;
    assert_eq!((status, body.len()), (304, 0));

    let (status, headers, _) = http(server.web, "GET /app.js HTTP/1.1").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let (status, headers, _) = http(server.web, "GET /style.css HTTP/1.1").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/css; charset=utf-8")
    );
    let (status, headers, _) = http(server.web, "GET /../Cargo.toml HTTP/1.1").await;
    assert_eq!(status, 404);
    assert!(header(&headers, "content-security-policy").is_some());
    let (status, headers, _) = http(server.web, "POST / HTTP/1.1\r\nContent-Length: 0").await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_are_refused() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let refused = ws::try_connect_raw(server.web, Some("http://evil.example")).await;
    match refused {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    // Same host: allowed; no Origin (not a browser): allowed.
    ws::try_connect_raw(server.web, Some(&format!("http://{}", server.web)))
        .await
        .expect("a page from this server connects");
    ws::try_connect_raw(server.web, None)
        .await
        .expect("a client that is not a browser connects");
    server.stop().await;

    let mut config = test_config(Storage::Sqlite);
    config.ws_allowed_origins =
        chatserver::web::AllowedOrigins::parse("https://chat.example").expect("valid");
    let server = ChatServer::start_with(config).await;
    ws::try_connect_raw(server.web, Some("https://chat.example"))
        .await
        .expect("a listed origin connects");
    match ws::try_connect_raw(server.web, Some(&format!("http://{}", server.web))).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("expected 403 for an unlisted origin, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_gets_errno_8_then_a_close() {
    let mut config = test_config(Storage::Sqlite);
    config.max_frame = 1024;
    let server = ChatServer::start_with(config).await;
    let mut socket = ws::connect_raw(server.web).await;
    let big = format!(r#"{{"msgid":12,"v":2,"pad":"{}"}}"#, "x".repeat(2000));
    socket.send(Message::text(big)).await.expect("send");
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["errno"], 8, "{reply}");
    let (code, _) = close_frame(&mut socket).await;
    assert_eq!(code, CloseCode::Size);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_text_gets_errno_6_and_the_session_goes_on_binary_closes() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let mut socket = ws::connect_raw(server.web).await;
    socket.send(Message::text("not json")).await.expect("send");
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["msgid"], 11);
    assert_eq!(reply["errno"], 6, "{reply}");
    // No "v":2 needed: WebSocket sessions are v2 from the first frame.
    socket
        .send(Message::text(r#"{"msgid":12,"rid":"p"}"#))
        .await
        .expect("send");
    let pong = next_json(&mut socket).await;
    assert_eq!(
        (pong["msgid"].as_i64(), pong["rid"].as_str()),
        (Some(13), Some("p"))
    );

    socket
        .send(Message::binary(b"{\"msgid\":12}".to_vec()))
        .await
        .expect("send");
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["errno"], 6, "{reply}");
    assert!(
        reply["errmsg"]
            .as_str()
            .unwrap_or("")
            .contains("text message"),
        "{reply}"
    );
    let (code, reason) = close_frame(&mut socket).await;
    assert_eq!(code, CloseCode::Unsupported);
    assert!(reason.contains("binary"), "{reason}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_resume_over_websocket_gets_each_message_once() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (mut web, _) = ws::connect(server.web).await;
    let web_id = web.register("browser", "pw").await;
    let token = web
        .login(web_id, "pw")
        .await
        .token
        .expect("a v2 LOGIN_ACK carries a token");
    let (mut tcp, _) = server.user("terminal").await;
    tcp.chat(web_id, "one").await;
    tcp.chat(web_id, "two").await;
    assert_eq!(web.recv_chat().await.msg, "one");
    assert_eq!(web.recv_chat().await.seq, Some(2));
    // The page goes away without DELIVERED (a reload); a message comes meanwhile.
    drop(web);
    tcp.chat(web_id, "three").await;

    let (mut again, _) = ws::connect(server.web).await;
    let resume = Request::Login(protocol::Login {
        id: web_id,
        credential: protocol::Credential::Token(token),
        since: Some(2),
    });
    let deadline = Deadline::after(WAIT);
    let ack = loop {
        match again.call(&resume).await {
            Reply::LoginOk(ack) => break ack,
            // The old socket's session may still be closing.
            Reply::Error(failure)
                if failure.errno == Errno::AlreadyLoggedIn && !deadline.passed() =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("token login: {other:?}"),
        }
    };
    assert_eq!(ack.seq, Some(3));
    let push = again.recv_chat().await;
    assert_eq!((push.msg.as_str(), push.seq), ("three", Some(3)));
    again.expect_silence(Duration::from_millis(300)).await;
    tcp.chat(web_id, "four").await;
    assert_eq!(again.recv_chat().await.seq, Some(4));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_closes_a_peer_that_does_not_answer() {
    let mut config = test_config(Storage::Sqlite);
    config.ws_ping_interval = Duration::from_millis(300);
    let server = ChatServer::start_with(config).await;
    // A peer that reads answers pings (tungstenite pongs as it reads) and
    // stays, past several intervals, without sending a frame.
    let mut alive = ws::connect_raw(server.web).await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(message) = tokio::time::timeout_at(until, alive.next()).await {
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected pings only, got {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings in 1.5 s at a 300 ms interval");
    alive
        .send(Message::text(r#"{"msgid":12}"#))
        .await
        .expect("still open");
    assert_eq!(next_json(&mut alive).await["msgid"], 13);

    // A peer that reads nothing answers nothing: closed after a ping
    // went unanswered for an interval.
    let mut dead = ws::connect_raw(server.web).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (code, reason) = close_frame(&mut dead).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("ping"), "{reason}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_not_logged_in_is_closed_at_the_login_idle_timeout() {
    let mut config = test_config(Storage::Sqlite);
    config.login_idle_timeout = Duration::from_millis(500);
    let server = ChatServer::start_with(config).await;
    let mut socket = ws::connect_raw(server.web).await;
    socket
        .send(Message::text(r#"{"msgid":12}"#))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["msgid"], 13);
    let (code, reason) = close_frame(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("login"), "{reason}");
    // An HTTP connection that never upgrades is bounded the same way.
    let mut idle = tokio::net::TcpStream::connect(server.web)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_apply_per_client_address_from_the_proxy_header() {
    let mut config = test_config(Storage::Sqlite);
    config.abuse.max_connections_per_ip = 1;
    config.proxy_protocol_from = chatserver::config::parse_cidrs("127.0.0.1").expect("cidr");
    let server = ChatServer::start_with(config).await;
    let behind_proxy = |source: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(server.web)
            .await
            .expect("connect");
        let header = format!("PROXY TCP4 {source} 10.9.9.9 40000 80\r\n");
        stream.write_all(header.as_bytes()).await.expect("write");
        ws::handshake(stream, server.web, None).await
    };
    let mut first = behind_proxy("10.0.0.1").await.expect("first client");
    let _other = behind_proxy("10.0.0.2")
        .await
        .expect("another client address has its own slot");
    match behind_proxy("10.0.0.1").await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected 503 for a second connection from 10.0.0.1, got {other:?}"),
    }
    // A PROXY header is refused from anybody the server does not trust,
    // and a trusted proxy must send one.
    let mut stream = tokio::net::TcpStream::connect(server.web)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    first
        .send(Message::text(r#"{"msgid":12}"#))
        .await
        .expect("send");
    assert_eq!(next_json(&mut first).await["msgid"], 13);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_sends_goaway_then_closes_websockets() {
    let mut config = test_config(Storage::Sqlite);
    config.drain_period = Duration::from_millis(500);
    let server = ChatServer::start_with(config).await;
    let (mut web, _) = ws::connect(server.web).await;
    let id = web.register("leaving", "pw").await;
    let mut socket = ws::connect_raw(server.web).await;
    socket
        .send(Message::text(format!(
            r#"{{"msgid":1,"id":{id},"password":"pw"}}"#
        )))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["errno"], 0);
    let stopping = tokio::spawn(server.stop());
    let goaway = next_json(&mut socket).await;
    assert_eq!(goaway["msgid"], 16, "{goaway}");
    assert!(goaway["retry_ms"].as_u64().is_some(), "{goaway}");
    let (code, _) = close_frame(&mut socket).await;
    assert_eq!(code, CloseCode::Away);
    stopping.await.expect("stopped");
}
