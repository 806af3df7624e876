//! What changed between two validated configs: a pure comparison, so a
//! reload can log it, apply only what moved, and be tested as a table.

use std::collections::HashMap;

use crate::config::Config;

/// What changed between two configs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// `(address, old weight, new weight)`.
    pub reweighted: Vec<(String, u32, u32)>,
    /// Backends whose connection limit or PROXY protocol setting changed.
    pub relimited: Vec<String>,
    /// Needs a restart: a reload keeps the old address.
    pub listen_changed: bool,
    /// Needs a restart: a reload keeps the old address.
    pub admin_changed: bool,
    /// `[tls]` switched on or off: needs a restart, a reload keeps the old
    /// setting. (New file paths apply at once.)
    pub tls_toggled: bool,
    /// `[tls]` names other files.
    pub tls_files_changed: bool,
    pub health_changed: bool,
    /// Timeouts, retries, slow start, drain, grace period or the admin token.
    pub settings_changed: bool,
    /// Backend order changed (it decides the order of the all-down fallback).
    pub reordered: bool,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

/// One log line's worth: `added [a:1] removed [b:1] weights [c:1 3→1] …`.
impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added [{}]", self.added.join(" ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed [{}]", self.removed.join(" ")));
        }
        if !self.reweighted.is_empty() {
            let w: Vec<String> = self
                .reweighted
                .iter()
                .map(|(a, from, to)| format!("{a} {from}→{to}"))
                .collect();
            parts.push(format!("weights [{}]", w.join(", ")));
        }
        if !self.relimited.is_empty() {
            parts.push(format!("limits [{}]", self.relimited.join(" ")));
        }
        for (changed, what) in [
            (self.reordered, "order"),
            (self.health_changed, "health"),
            (self.settings_changed, "settings"),
            (self.listen_changed, "listen (ignored until restart)"),
            (self.admin_changed, "admin (ignored until restart)"),
            (self.tls_toggled, "tls on/off (ignored until restart)"),
            (self.tls_files_changed, "tls files"),
        ] {
            if changed {
                parts.push(what.to_string());
            }
        }
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Compares two validated configs; pure.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let old_by_addr: HashMap<&str, _> = old
        .backends
        .iter()
        .map(|b| (b.address.as_str(), b))
        .collect();
    let new_by_addr: HashMap<&str, _> = new
        .backends
        .iter()
        .map(|b| (b.address.as_str(), b))
        .collect();
    let mut d = Diff::default();
    for b in &new.backends {
        match old_by_addr.get(b.address.as_str()) {
            None => d.added.push(b.address.clone()),
            Some(o) => {
                if o.weight != b.weight {
                    d.reweighted.push((b.address.clone(), o.weight, b.weight));
                }
                if o.max_connections != b.max_connections || o.proxy_protocol != b.proxy_protocol {
                    d.relimited.push(b.address.clone());
                }
            }
        }
    }
    for b in &old.backends {
        if !new_by_addr.contains_key(b.address.as_str()) {
            d.removed.push(b.address.clone());
        }
    }
    let kept = |c: &Config| -> Vec<String> {
        c.backends
            .iter()
            .filter(|b| {
                old_by_addr.contains_key(b.address.as_str())
                    && new_by_addr.contains_key(b.address.as_str())
            })
            .map(|b| b.address.clone())
            .collect()
    };
    d.reordered = kept(old) != kept(new);
    d.listen_changed = old.listen != new.listen;
    d.admin_changed = old.admin != new.admin;
    d.tls_toggled = old.tls.is_some() != new.tls.is_some();
    d.tls_files_changed = old.tls.is_some() && new.tls.is_some() && old.tls != new.tls;
    d.health_changed = old.health != new.health;
    d.settings_changed = old.connect_timeout != new.connect_timeout
        || old.retries != new.retries
        || old.slow_start != new.slow_start
        || old.drain_timeout != new.drain_timeout
        || old.shutdown_grace != new.shutdown_grace
        || old.idle_timeout != new.idle_timeout
        || old.response_timeout != new.response_timeout
        || old.half_close != new.half_close
        || old.admin_token != new.admin_token;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str, backends: &[(&str, u32)]) -> Config {
        let mut text = format!("listen = \"127.0.0.1:8000\"\n{extra}\n");
        for (a, w) in backends {
            text += &format!("[[backend]]\naddress = \"{a}\"\nweight = {w}\n");
        }
        Config::parse(&text, "t").unwrap()
    }

    #[test]
    fn diff_table() {
        let base = cfg("", &[("a:1", 3), ("b:1", 1)]);
        struct Case {
            name: &'static str,
            new: Config,
            want: Diff,
        }
        let cases = [
            Case {
                name: "same",
                new: base.clone(),
                want: Diff::default(),
            },
            Case {
                name: "add",
                new: cfg("", &[("a:1", 3), ("b:1", 1), ("c:1", 2)]),
                want: Diff {
                    added: vec!["c:1".into()],
                    ..Diff::default()
                },
            },
            Case {
                name: "remove",
                new: cfg("", &[("a:1", 3)]),
                want: Diff {
                    removed: vec!["b:1".into()],
                    ..Diff::default()
                },
            },
            Case {
                name: "reweight",
                new: cfg("", &[("a:1", 1), ("b:1", 1)]),
                want: Diff {
                    reweighted: vec![("a:1".into(), 3, 1)],
                    ..Diff::default()
                },
            },
            Case {
                name: "replace and reorder",
                new: cfg("", &[("c:1", 1), ("b:1", 1), ("a:1", 3)]),
                want: Diff {
                    added: vec!["c:1".into()],
                    reordered: true,
                    ..Diff::default()
                },
            },
            Case {
                name: "listen and admin",
                new: {
                    let mut c = cfg("admin = \"127.0.0.1:9\"", &[("a:1", 3), ("b:1", 1)]);
                    c.listen = "127.0.0.1:8001".into();
                    c
                },
                want: Diff {
                    listen_changed: true,
                    admin_changed: true,
                    ..Diff::default()
                },
            },
            Case {
                name: "health and settings",
                new: cfg(
                    "retries = 5\n[health]\nkind = \"tcp\"",
                    &[("a:1", 3), ("b:1", 1)],
                ),
                want: Diff {
                    health_changed: true,
                    settings_changed: true,
                    ..Diff::default()
                },
            },
            Case {
                name: "limit",
                new: cfg("max_connections = 10", &[("a:1", 3), ("b:1", 1)]),
                want: Diff {
                    relimited: vec!["a:1".into(), "b:1".into()],
                    ..Diff::default()
                },
            },
        ];
        for case in cases {
            assert_eq!(diff(&base, &case.new), case.want, "case {}", case.name);
        }
    }

    #[test]
    fn diff_reads_as_one_line() {
        let d = Diff {
            added: vec!["c:1".into()],
            reweighted: vec![("a:1".into(), 3, 1)],
            listen_changed: true,
            ..Diff::default()
        };
        assert_eq!(
            d.to_string(),
            "added [c:1]; weights [a:1 3→1]; listen (ignored until restart)"
        );
        assert_eq!(Diff::default().to_string(), "no change");
    }
}
