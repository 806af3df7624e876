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
/// `127.0.0.1:listen_port`. Everything else is as shipped.
pub fn render_conf(template: &str, listen_port: u16, backends: &[SocketAddr]) -> String {
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

/// A running Nginx (own process group), stopped on drop.
pub struct Nginx {
    pub addr: SocketAddr,
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
