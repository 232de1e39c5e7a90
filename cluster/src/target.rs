//! What an indexer URL may be: a fixed base URL, or a DNS name that lists the replicas.

use std::fmt;
use std::str::FromStr;

/// One `--indexer` (or `--peer`) value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `http(s)://host:port`: one replica, as given (a host name in it is resolved by the HTTP
    /// client on each connection, not by discovery).
    Fixed(String),
    /// `dns+http://NAME:PORT`: every A/AAAA record of NAME is a replica on PORT (Swarm's
    /// `tasks.SERVICE`, a Kubernetes headless Service, Consul).
    Dns {
        scheme: &'static str,
        name: String,
        port: u16,
    },
    /// `dnssrv+http://_SERVICE._tcp.NAME`: every SRV record gives a replica's host and
    /// port (Mesos-DNS for Marathon apps, Consul, Kubernetes).
    Srv { scheme: &'static str, name: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not an indexer URL: {why} (use http(s)://HOST:PORT, dns+http(s)://NAME:PORT or dnssrv+http(s)://_SERVICE._tcp.NAME)")]
pub struct TargetError {
    pub value: String,
    pub why: String,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        let err = |why: &str| TargetError {
            value: s.to_string(),
            why: why.to_string(),
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| err("no scheme"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(err("a base URL has no path, query or fragment"));
        }
        let web = |s: &str| match s {
            "http" => Ok("http"),
            "https" => Ok("https"),
            _ => Err(err("the scheme must be http or https")),
        };
        let host_ok =
            |h: &str| !h.is_empty() && !h.contains('@') && !h.contains(char::is_whitespace);
        match scheme.to_ascii_lowercase().as_str() {
            s2 @ ("http" | "https") => {
                if !host_ok(rest) {
                    return Err(err("no host"));
                }
                Ok(Target::Fixed(format!("{s2}://{rest}")))
            }
            s2 if s2.starts_with("dns+") => {
                let scheme = web(&s2[4..])?;
                let (name, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| err("dns+ needs a port: dns+http://NAME:PORT"))?;
                let port = port.parse().map_err(|_| err("the port is not a number"))?;
                if !host_ok(name) || name.starts_with('[') {
                    return Err(err("dns+ needs a DNS name"));
                }
                Ok(Target::Dns {
                    scheme,
                    name: name.to_string(),
                    port,
                })
            }
            s2 if s2.starts_with("dnssrv+") => {
                let scheme = web(&s2[7..])?;
                if !host_ok(rest) || rest.contains(':') {
                    return Err(err(
                        "dnssrv+ takes a name only (the SRV records give the ports)",
                    ));
                }
                Ok(Target::Srv {
                    scheme,
                    name: rest.to_string(),
                })
            }
            _ => Err(err(
                "the scheme must be http(s), dns+http(s) or dnssrv+http(s)",
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Fixed(u) => f.write_str(u),
            Target::Dns { scheme, name, port } => write!(f, "dns+{scheme}://{name}:{port}"),
            Target::Srv { scheme, name } => write!(f, "dnssrv+{scheme}://{name}"),
        }
    }
}

/// Parses every value, for a command line: the first bad one is the error.
pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<Target>, TargetError> {
    values.iter().map(|v| v.as_ref().parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for s in [
            "http://127.0.0.1:7280",
            "dns+http://tasks.indexer-g0:7280",
            "dnssrv+http://_indexer._tcp.sawmill.marathon.mesos",
            "https://idx.example:443",
            "dns+https://tasks.x:443",
            "dnssrv+https://_x._tcp.y",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            "http://h:1/".parse::<Target>().unwrap(),
            Target::Fixed("http://h:1".into())
        );
    }

    #[test]
    fn bad_values_say_why() {
        for (s, why) in [
            ("127.0.0.1:7280", "no scheme"),
            ("ftp://h:1", "scheme"),
            ("dns+http://tasks.x", "port"),
            ("dns+http://tasks.x:http", "not a number"),
            ("dnssrv+http://_x._tcp.y:7280", "name only"),
            ("http://h:1/api", "no path"),
            ("dns+gopher://h:1", "must be http"),
            ("dns+ftp://tasks.x:443", "http or https"),
            ("http://", "no host"),
        ] {
            let e = s.parse::<Target>().unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }
}
