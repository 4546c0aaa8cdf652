//! Which `Origin`s the reverse proxy serves (see the [module docs](super#origins)).

use url::Url;

/// An origin split into its parts, the port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" | "wss" => 443,
        _ => 80,
    }
}

/// `scheme://host[:port]` → its parts (`None` for `null` and anything else that is not one).
fn parse_origin(origin: &str) -> Option<Parsed> {
    let url = Url::parse(origin.trim().trim_end_matches('/')).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    Some(Parsed {
        port: url
            .port_or_known_default()
            .unwrap_or_else(|| default_port(url.scheme())),
        scheme: url.scheme().to_owned(),
        host,
    })
}

/// `host[:port]` → host and port (`None` when no port is given).
fn parse_authority(authority: &str) -> Option<(String, Option<u16>)> {
    // Parsed as the authority of a URL of a scheme without a default port, so that an explicit
    // `:80` is kept.
    let url = Url::parse(&format!("kite://{}", authority.trim())).ok()?;
    if url.path() != "" && url.path() != "/" {
        return None;
    }
    Some((url.host_str()?.to_ascii_lowercase(), url.port()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// A full origin: scheme, host and port must match.
    Origin(Parsed),
    /// A host, with or without a port: any scheme.
    Host(String, Option<u16>),
}

/// The origins a reverse proxy serves besides its own: parsed from
/// [`super::ReverseProxyOptions::allowed_origins`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<Allowed>,
}

impl OriginPolicy {
    /// A policy allowing `allowed`: full origins (`https://app.example.com`), bare hosts
    /// (`app.example.com`), `host:port`, or `*` for all. Entries that are none of these are
    /// ignored (with a warning).
    pub fn new<S: AsRef<str>>(allowed: impl IntoIterator<Item = S>) -> OriginPolicy {
        let mut policy = OriginPolicy::default();
        for entry in allowed {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                policy.any = true;
            } else if entry.contains("://") {
                match parse_origin(entry) {
                    Some(p) => policy.allowed.push(Allowed::Origin(p)),
                    None => tracing::warn!(%entry, "not an origin, ignored"),
                }
            } else {
                match parse_authority(entry) {
                    Some((host, port)) => policy.allowed.push(Allowed::Host(host, port)),
                    None => tracing::warn!(%entry, "not a host, ignored"),
                }
            }
        }
        policy
    }

    /// Whether every origin is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether a request with `Origin: origin` is served. `own` are the proxy's own addresses
    /// (the request's `Host` header, the public `host:port`), `secure` whether the proxy serves
    /// TLS (the default port of a `Host` without one).
    pub fn allows(&self, origin: &str, own: &[&str], secure: bool) -> bool {
        if self.any {
            return true;
        }
        let Some(o) = parse_origin(origin) else {
            return false;
        };
        let own_port = if secure { 443 } else { 80 };
        let same_host = own
            .iter()
            .filter_map(|a| parse_authority(a))
            .any(|(h, p)| h == o.host && p.unwrap_or(own_port) == o.port);
        same_host
            || self.allowed.iter().any(|a| match a {
                Allowed::Origin(p) => *p == o,
                Allowed::Host(h, p) => *h == o.host && p.is_none_or(|p| p == o.port),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_host_only_by_default() {
        let p = OriginPolicy::default();
        let own = ["127.0.0.1:3999", "proxy.example.com:443"];
        assert!(p.allows("http://127.0.0.1:3999", &own, false));
        assert!(p.allows("https://PROXY.example.com", &own, false));
        assert!(!p.allows("http://127.0.0.1:4000", &own, false));
        assert!(!p.allows("http://evil.example", &own, false));
        assert!(!p.allows("null", &own, false));
        // A Host without a port: the scheme's default.
        assert!(p.allows("https://example.com", &["example.com"], true));
        assert!(!p.allows("http://example.com", &["example.com"], true));
        assert!(p.allows("http://[::1]:3999", &["[::1]:3999"], false));
    }

    #[test]
    fn allow_list() {
        let p = OriginPolicy::new([
            "https://app.example.com",
            "other.example.com",
            "dev.example.com:8080",
            "::nonsense::",
        ]);
        let own = ["127.0.0.1:3999"];
        assert!(p.allows("https://app.example.com:443", &own, false));
        assert!(!p.allows("http://app.example.com", &own, false));
        assert!(p.allows("http://other.example.com:1234", &own, false));
        assert!(p.allows("https://other.example.com", &own, false));
        assert!(p.allows("http://dev.example.com:8080", &own, false));
        assert!(!p.allows("http://dev.example.com", &own, false));
        assert!(!p.allows("http://evil.example", &own, false));
        let any = OriginPolicy::new(["*"]);
        assert!(any.allows_any());
        assert!(any.allows("http://evil.example", &own, false));
        assert!(any.allows("null", &own, false));
    }
}
