//! A peer's network address as given: `IP:PORT`, or `HOST:PORT` resolved
//! each time a connection is made.
//!
//! Names are kept as written and resolved at connect time (and again at
//! every reconnect), never once at startup: a container or VM that
//! restarts under the same name with a new IP is found again, and a name
//! that does not resolve yet (a peer whose DNS record appears when it
//! starts) is retried with the usual back-off instead of failing startup.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest host name (RFC 1035: 253 characters in text form).
pub const HOST_BYTES_MAX: usize = 253;
/// Longest label between dots (RFC 1035).
const LABEL_BYTES_MAX: usize = 63;

/// Where a peer listens.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerAddr {
    /// A literal address: no lookup.
    Ip(SocketAddr),
    /// A host name (`localhost`, `raftkv-2`, `node1.example.internal`)
    /// and a port, resolved when connecting.
    Host(String, u16),
}

/// Why a text is not a peer address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a HOST:PORT or IP:PORT address ({why}; for example 127.0.0.1:7800, [::1]:7800 or node1:7800)")]
pub struct AddrParseError {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for PeerAddr {
    type Err = AddrParseError;

    fn from_str(text: &str) -> Result<PeerAddr, AddrParseError> {
        let err = |why| AddrParseError {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        if let Ok(ip) = t.parse::<SocketAddr>() {
            return Ok(PeerAddr::Ip(ip));
        }
        let (host, port) = t.rsplit_once(':').ok_or_else(|| err("no :PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("the port is not a number from 0 to 65535"))?;
        if host.is_empty() {
            return Err(err("no host"));
        }
        if host.contains(':') || host.starts_with('[') {
            return Err(err("an IPv6 address goes in brackets: [::1]:7800"));
        }
        if host.len() > HOST_BYTES_MAX {
            return Err(err("the host name is longer than 253 characters"));
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(err("not a valid IPv4 address"));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= LABEL_BYTES_MAX
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // A trailing dot (a fully qualified name) is allowed.
        if !host
            .strip_suffix('.')
            .unwrap_or(host)
            .split('.')
            .all(label_ok)
        {
            return Err(err(
                "a host name is letters, digits, '-' and '_' in dot-separated labels",
            ));
        }
        Ok(PeerAddr::Host(host.to_ascii_lowercase(), port))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(a) => write!(f, "{a}"),
            PeerAddr::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        PeerAddr::Ip(a)
    }
}

impl PeerAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            PeerAddr::Ip(a) => a.port(),
            PeerAddr::Host(_, p) => *p,
        }
    }

    /// The literal address, if this is one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Ip(a) => Some(*a),
            PeerAddr::Host(..) => None,
        }
    }

    /// The addresses to try, in the resolver's order: the literal one, or
    /// what the system resolver answers now (no caching here).
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match self {
            PeerAddr::Ip(a) => Ok(vec![*a]),
            PeerAddr::Host(h, p) => {
                let found: Vec<SocketAddr> =
                    tokio::net::lookup_host((h.as_str(), *p)).await?.collect();
                if found.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{h} resolves to no address"),
                    ));
                }
                Ok(found)
            }
        }
    }
}

/// Serialized as its text (`"127.0.0.1:7800"`, `"node1:7800"`).
impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PeerAddr, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_ip_or_host() {
        let ip: PeerAddr = "127.0.0.1:7800".parse().unwrap();
        assert_eq!(ip, PeerAddr::Ip("127.0.0.1:7800".parse().unwrap()));
        let v6: PeerAddr = "[::1]:7800".parse().unwrap();
        assert_eq!(v6.port(), 7800);
        assert!(v6.ip().is_some());
        let host: PeerAddr = " Node-1.example_x.internal.:7801 ".parse().unwrap();
        assert_eq!(
            host,
            PeerAddr::Host("node-1.example_x.internal.".into(), 7801)
        );
        assert_eq!(host.to_string(), "node-1.example_x.internal.:7801");
        assert_eq!(
            "localhost:0".parse::<PeerAddr>().unwrap(),
            PeerAddr::Host("localhost".into(), 0)
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        for (text, why) in [
            ("localhost", "no :PORT"),
            ("localhost:x", "port"),
            ("localhost:70000", "port"),
            (":7800", "no host"),
            ("::1:7800", "brackets"),
            ("127.0.0.300:7800", "IPv4"),
            ("bad host:7800", "labels"),
            ("a..b:7800", "labels"),
            ("-a:7800", "labels"),
            ("", "no :PORT"),
        ] {
            let e = text.parse::<PeerAddr>().unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
        let long = format!("{}:1", "a".repeat(254));
        assert!(long.parse::<PeerAddr>().is_err());
    }

    #[test]
    fn serde_uses_the_text() {
        let a = PeerAddr::Host("node1".into(), 7800);
        let bytes = postcard::to_allocvec(&a).unwrap();
        // The text, length-prefixed: the same bytes as the string's.
        assert_eq!(bytes, postcard::to_allocvec("node1:7800").unwrap());
        assert_eq!(postcard::from_bytes::<PeerAddr>(&bytes).unwrap(), a);
        let bad = postcard::to_allocvec("no port").unwrap();
        assert!(postcard::from_bytes::<PeerAddr>(&bad).is_err());
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let a: PeerAddr = "localhost:7800".parse().unwrap();
        let found = a.resolve().await.unwrap();
        assert!(found
            .iter()
            .all(|s| s.ip().is_loopback() && s.port() == 7800));
        let ip: PeerAddr = "10.0.0.1:1".parse().unwrap();
        assert_eq!(ip.resolve().await.unwrap(), vec![ip.ip().unwrap()]);
    }
}
