//! Which pages may open a WebSocket here: the `Origin` a browser sends
//! with the upgrade, checked against `--ws-allowed-origins`, or by default
//! against the `Host` the browser asked for (the page came from here).

/// The origin rule, from `--ws-allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// An origin whose host and port are the request's `Host`.
    #[default]
    SameHost,
    /// Exactly these origins (`scheme://host[:port]`, lower case).
    List(Vec<String>),
    /// `*`: any page (a deliberate choice, e.g. for a development server).
    Any,
}

impl AllowedOrigins {
    /// Parses the comma list of `--ws-allowed-origins`; an empty list is
    /// the default rule.
    pub fn parse(list: &str) -> Result<Self, String> {
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(Self::SameHost);
        }
        if items == ["*"] {
            return Ok(Self::Any);
        }
        items
            .into_iter()
            .map(|item| {
                let origin = item.trim_end_matches('/').to_ascii_lowercase();
                match origin.split_once("://") {
                    Some(("http" | "https", host)) if !host.is_empty() && !host.contains('/') => {
                        Ok(origin)
                    }
                    _ => Err(format!(
                        "{item:?} is not an origin (scheme://host[:port], or * alone)"
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(Self::List)
    }

    /// Whether a browser page at `origin` may connect, when it asked for
    /// `host`. Requests without `Origin` do not come from a page (browsers
    /// always send it on WebSocket upgrades) and are not checked here.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::List(list) => list.contains(&origin),
            Self::SameHost => {
                let Some((scheme, authority)) = origin.split_once("://") else {
                    return false;
                };
                let Some(host) = host else {
                    return false;
                };
                let host = host.trim().to_ascii_lowercase();
                without_default_port(scheme, authority) == without_default_port(scheme, &host)
            }
        }
    }
}

fn without_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_compares_host_and_port() {
        let rule = AllowedOrigins::SameHost;
        assert!(rule.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(rule.allows("https://Chat.Example", Some("chat.example")));
        assert!(rule.allows("https://chat.example", Some("chat.example:443")));
        assert!(!rule.allows("http://127.0.0.1:8081", Some("127.0.0.1:8080")));
        assert!(!rule.allows("http://evil.example", Some("chat.example")));
        assert!(!rule.allows("null", Some("chat.example")));
        assert!(!rule.allows("http://chat.example", None));
    }

    #[test]
    fn a_list_allows_only_its_origins() {
        let rule = AllowedOrigins::parse("https://a.example, http://b.example:8080/").unwrap();
        assert!(rule.allows("https://a.example", Some("elsewhere")));
        assert!(rule.allows("http://b.example:8080", None));
        assert!(!rule.allows("http://a.example", Some("a.example")));
        assert_eq!(AllowedOrigins::parse("*").unwrap(), AllowedOrigins::Any);
        assert_eq!(
            AllowedOrigins::parse(" ").unwrap(),
            AllowedOrigins::SameHost
        );
        assert!(AllowedOrigins::parse("a.example").is_err());
        assert!(AllowedOrigins::parse("ftp://a.example").is_err());
    }
}
