//! Leaf values of the configuration that validate themselves while being deserialised, so that a bad
//! value is reported by the TOML parser with its exact position (`file:line: message`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub use crate::values::{AssertionAlgorithm, JwtAlgorithm};

/// A duration written as `"30s"`, `"5m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?}: {e} (write e.g. \"30s\", \"5m\")"
            ))
        })
    }
}

/// A byte size written as an integer or `"64KiB"`, `"100MiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?} (write e.g. 65536, \"64KiB\", \"100MiB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" | "kB" => 1024,
            "MiB" | "M" | "MB" => 1024 * 1024,
            "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?} (use B, KiB, MiB or GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count or a size such as \"64KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the main listener binds: a TCP address or a unix socket path (`unix:/run/x.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix socket path is empty".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
            format!(
                "invalid listen address {s:?} (write \"127.0.0.1:8080\" or \"unix:/path/to.sock\")"
            )
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A TCP socket address (admin listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for TcpAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(TcpAddr).map_err(|_| {
            de::Error::custom(format!(
                "invalid socket address {s:?} (write \"127.0.0.1:9090\")"
            ))
        })
    }
}

/// A peer a header source may be trusted from: a CIDR, a single IP, or `"unix"` (the unix-socket listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMatch {
    Net(IpNet),
    Unix,
}

impl FromStr for PeerMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "unix" {
            return Ok(PeerMatch::Unix);
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(PeerMatch::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerMatch::Net(IpNet::from(ip)));
        }
        Err(format!(
            "invalid peer {s:?} (write a CIDR such as \"10.0.0.0/8\", an IP, or \"unix\")"
        ))
    }
}

impl fmt::Display for PeerMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMatch::Net(n) => write!(f, "{n}"),
            PeerMatch::Unix => f.write_str("unix"),
        }
    }
}

impl<'de> Deserialize<'de> for PeerMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A header name, checked to be a valid HTTP token and stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNameValue(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderNameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        http::HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes())
            .map(HeaderNameValue)
            .map_err(|_| de::Error::custom(format!("invalid header name {s:?}")))
    }
}

/// One string or a list of strings (`audience = "a"` or `audience = ["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) => Ok(OneOrMany(vec![s])),
            Raw::Many(v) => Ok(OneOrMany(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("65536".parse::<ByteSize>().unwrap().0, 65536);
        assert_eq!("64KiB".parse::<ByteSize>().unwrap().0, 65536);
        assert_eq!("100MiB".parse::<ByteSize>().unwrap().0, 100 << 20);
        assert!("12parsecs".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "unix:/run/s.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/s.sock".into())
        );
        assert!(matches!(
            "127.0.0.1:8080".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp(_)
        ));
        assert!("localhost:80".parse::<ListenAddr>().is_err());
        assert!("unix:".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn peers() {
        assert_eq!("unix".parse::<PeerMatch>().unwrap(), PeerMatch::Unix);
        assert_eq!(
            "10.1.2.3/8".parse::<PeerMatch>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<PeerMatch>().unwrap().to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<PeerMatch>().is_err());
    }
}

/// A rate written as `"100/s"`, `"20/m"`, `"500/h"`, or `"off"` (no limit). Kept as events per
/// period so the limiter can derive its emission interval without rounding a per-second float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateValue(pub Option<(u64, Duration)>);

impl FromStr for RateValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateValue(None));
        }
        let bad =
            || format!("invalid rate {s:?} (write e.g. \"100/s\", \"20/m\", \"500/h\" or \"off\")");
        let (count, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!(
                "rate {s:?} allows nothing; write \"off\" for no limit"
            ));
        }
        if count > 1_000_000_000 {
            return Err(format!("rate {s:?} is too large"));
        }
        Ok(RateValue(Some((count, period))))
    }
}

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}
