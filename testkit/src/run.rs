//! Names scoped to one test run, so that two runs on one machine never touch
//! each other's databases, Redis keys or files.
//!
//! The run id comes from `CHAT_TEST_RUN` (set by `scripts/test.sh`) or is
//! made once per test process. It is always `<unix seconds>_<hex>`: the
//! timestamp lets `scripts/test.sh` remove leftovers of runs older than a
//! day without touching a live run. What carries it:
//!
//! - MariaDB databases `chat_test_<run>_<n>_<random>`;
//! - Redis prefixes `test:<run>:<n>_<random>:`;
//! - temp dirs under `$TMPDIR/chatchat-tests/<run>/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable `scripts/test.sh` exports the run id in.
pub const RUN_VAR: &str = "CHAT_TEST_RUN";

/// This run's id: `CHAT_TEST_RUN`, or one made for this process. Panics on
/// a malformed `CHAT_TEST_RUN` (it ends up in SQL identifiers).
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| match std::env::var(RUN_VAR) {
        Ok(run) => {
            assert!(
                is_run_id(&run),
                "{RUN_VAR}={run:?} is not `<unix seconds>_<hex>` (scripts/test.sh makes one)"
            );
            run
        }
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs();
            format!("{now}_{:04x}", rand::random::<u16>())
        }
    })
}

/// `<10 digits>_<4 to 8 lowercase hex digits>`.
pub fn is_run_id(text: &str) -> bool {
    let Some((secs, tag)) = text.split_once('_') else {
        return false;
    };
    secs.len() == 10
        && secs.bytes().all(|b| b.is_ascii_digit())
        && (4..=8).contains(&tag.len())
        && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A name no other test of any run uses: `<n>_<random>`, n counting up in
/// this process (the random part keeps processes of one run apart).
pub fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}_{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// The MariaDB server the suite runs against (`CHAT_TEST_MYSQL_URL`,
/// default `mysql://root@127.0.0.1:3306`), without a database.
pub fn mysql_base_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A MariaDB database of this run that nobody uses yet (the chat server
/// creates it). Panics when MariaDB does not answer: never a skip.
pub fn fresh_mariadb_url() -> String {
    require_tcp("MariaDB", &mysql_base_url());
    format!("{}/chat_test_{}_{}", mysql_base_url(), run_id(), unique())
}

/// The shared Redis server (`CHAT_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`). Panics when it does not answer.
pub fn redis_url() -> String {
    let url =
        std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    require_tcp("Redis", &url);
    url
}

/// A Redis key prefix of this run that nobody uses yet.
pub fn redis_prefix() -> String {
    format!("test:{}:{}:", run_id(), unique())
}

/// This run's folder for files: `$TMPDIR/chatchat-tests/<run>`.
pub fn run_dir() -> PathBuf {
    std::env::temp_dir().join("chatchat-tests").join(run_id())
}

/// A new empty directory in this run's folder, named after `tag`. It is
/// kept until `scripts/test.sh` removes the run's folder (a server may be
/// restarted on the same files).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = run_dir().join(format!("{tag}-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A new SQLite database file of this run.
pub fn fresh_sqlite_url() -> String {
    let dir = temp_dir("sqlite");
    format!("sqlite://{}/chat.db?mode=rwc", dir.display())
}

/// Panics, naming `what`, unless something accepts TCP at the host and port
/// of `url` (`scheme://[user@]host:port[/...]`).
fn require_tcp(what: &str, url: &str) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .into_iter()
        .flatten()
        .any(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "{what} is not running at {host_port}: this test needs it (scripts/test.sh starts it)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_carry_a_timestamp() {
        assert!(is_run_id("1764642236_3fa9"));
        assert!(is_run_id(run_id()));
        for bad in [
            "",
            "1764642236",
            "176464223_3fa9",
            "1764642236_XYZW",
            "a'b_0000",
        ] {
            assert!(!is_run_id(bad), "{bad}");
        }
    }

    #[test]
    fn names_carry_the_run() {
        let prefix = redis_prefix();
        assert!(prefix.starts_with(&format!("test:{}:", run_id())));
        assert_ne!(unique(), unique());
        let dir = temp_dir("x");
        assert!(dir.starts_with(run_dir()) && dir.is_dir());
        std::fs::remove_dir(dir).unwrap();
    }
}
