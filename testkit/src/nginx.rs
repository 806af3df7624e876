//! A real Nginx, started from the shipped `config/nginx.conf` on its own
//! prefix (in the run's temp dir) and a free port, in front of given
//! backends. Missing Nginx or its stream module fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run, wait, WAIT};

/// Where Debian's package puts the dynamic stream module, which
/// `config/nginx.conf` loads.
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The shipped configuration.
pub fn template() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/nginx.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `nginx` binary: on PATH or in an sbin folder. Panics (never skips)
/// when it is missing.
pub fn binary() -> PathBuf {
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

/// A rendered conf with its TLS server block (between `# --- tls begin`
/// and `# --- tls end`) uncommented, on `tls_port`, with the given
/// certificate files.
pub fn with_tls(rendered: &str, tls_port: u16, cert: &str, key: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut uncommented = 0;
    for line in rendered.lines() {
        let t = line.trim_start();
        if t.starts_with("# --- tls begin") {
            inside = true;
            continue;
        }
        if t.starts_with("# --- tls end") {
            inside = false;
            continue;
        }
        if !inside {
            out += line;
            out += "\n";
            continue;
        }
        let indent = &line[..line.len() - t.len()];
        let body = t.strip_prefix("# ").unwrap_or(t.trim_start_matches('#'));
        let body = if body.trim_start().starts_with("listen ") {
            format!("    listen 127.0.0.1:{tls_port} ssl;")
        } else if body.trim_start().starts_with("ssl_certificate ") {
            format!("    ssl_certificate {cert};")
        } else if body.trim_start().starts_with("ssl_certificate_key ") {
            format!("    ssl_certificate_key {key};")
        } else {
            body.to_string()
        };
        out += indent;
        out += &body;
        out += "\n";
        uncommented += 1;
    }
    assert!(
        uncommented > 5,
        "config/nginx.conf has no `# --- tls begin` block"
    );
    out
}

/// `template` with its upstream servers replaced by `backends` (weight 1
/// each, the file's own health and retry settings kept) and its `listen` by
/// `127.0.0.1:listen_port`. Everything else is as shipped. The web block
/// (upstream `chat_web`, `listen 8080`) gets a free port and the same
/// backends: [`render_conf_with_web`] for tests that use it.
pub fn render_conf(template: &str, listen_port: u16, backends: &[SocketAddr]) -> String {
    render_conf_with_web(template, listen_port, backends, wait::free_port(), backends)
}

/// [`render_conf`], with the web block on `127.0.0.1:web_port` in front of
/// `web_backends` (the chat servers' web listeners).
pub fn render_conf_with_web(
    template: &str,
    listen_port: u16,
    backends: &[SocketAddr],
    web_port: u16,
    web_backends: &[SocketAddr],
) -> String {
    let mut out = String::new();
    let (mut replaced_listen, mut replaced_web, mut servers) = (false, false, 0);
    let mut upstream: Option<&[SocketAddr]> = None;
    for line in template.lines() {
        let trimmed = line.trim_start();
        let opened = if trimmed.starts_with("upstream chat {") {
            Some(backends)
        } else if trimmed.starts_with("upstream chat_web {") {
            Some(web_backends)
        } else {
            None
        };
        if let Some(list) = opened {
            upstream = Some(list);
            out += line;
            out += "\n";
            for b in list {
                out += &format!("        server {b} weight=1 max_fails=3 fail_timeout=10s;\n");
            }
            continue;
        }
        if upstream.is_some() && trimmed.starts_with('}') {
            upstream = None;
        }
        if upstream.is_some() && trimmed.starts_with("server ") {
            servers += 1;
            continue;
        }
        if trimmed.starts_with("listen 8080;") {
            out += &format!("        listen 127.0.0.1:{web_port};\n");
            replaced_web = true;
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
        replaced_listen && replaced_web && servers > 0,
        "config/nginx.conf changed shape: no `listen`, no `listen 8080` or no upstream \
         `server` lines to replace"
    );
    out
}

/// A running Nginx (own process group), stopped on drop.
pub struct Nginx {
    pub addr: SocketAddr,
    /// The web block's address (WebSockets and the web client), when
    /// started by [`Nginx::start_web`].
    pub web: Option<SocketAddr>,
    pub prefix: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts Nginx in front of `backends`; waits at most [`WAIT`] for it
    /// to listen.
    pub async fn start(backends: &[SocketAddr]) -> Nginx {
        let port = wait::free_port();
        Self::start_conf(&render_conf(&template(), port, backends), port).await
    }

    /// Starts Nginx in front of `backends` (chat) and `web_backends` (the
    /// chat servers' web listeners).
    pub async fn start_web(backends: &[SocketAddr], web_backends: &[SocketAddr]) -> Nginx {
        let (port, web_port) = (wait::free_port(), wait::free_port());
        let conf = render_conf_with_web(&template(), port, backends, web_port, web_backends);
        let mut nginx = Self::start_conf(&conf, port).await;
        nginx.web = Some(SocketAddr::from(([127, 0, 0, 1], web_port)));
        nginx
    }

    /// Starts Nginx with the whole `conf` text (tests that change more than
    /// [`render_conf`] does), waiting for `127.0.0.1:port` to listen.
    pub async fn start_conf(conf_text: &str, port: u16) -> Nginx {
        let binary = binary();
        assert!(
            Path::new(STREAM_MODULE).is_file(),
            "the Nginx stream module is missing ({STREAM_MODULE}): install it with \
             `apt-get install libnginx-mod-stream` (scripts/test.sh does)"
        );
        let prefix = run::temp_dir("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("creating the logs folder");
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, conf_text).expect("writing the conf");

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
            web: None,
            prefix,
            child,
        };
        let deadline = wait::Deadline::after(WAIT);
        loop {
            if let Some(status) = nginx.child.try_wait().expect("waiting for nginx") {
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
            if tokio::net::TcpStream::connect(nginx.addr).await.is_ok() {
                return nginx;
            }
            assert!(
                !deadline.passed(),
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
