//! `[openclaw]`: how the OpenClaw profile presents callers to the gateway.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

pub(super) fn openclaw_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawOpenClaw>>,
) -> OpenClawConfig {
    let raw = raw.map(|r| r.into_inner());
    let (user_header, shared_user, users, local_ip, in_band, connect_timeout) = match raw {
        Some(r) => (
            r.user_header.map(|h| h.0),
            r.shared_user,
            r.users,
            r.local_client_ip,
            r.in_band_auth,
            r.connect_timeout.map(|d| d.0),
        ),
        None => (None, None, Vec::new(), None, None, None),
    };
    let local_client_ip = match local_ip {
        None => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        Some(s) => match s.get_ref().parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() || canonical_ip(ip).is_loopback() => {
                ck.err(s.span(), "local_client_ip must not be a loopback address: the gateway refuses loopback clients behind a proxy");
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            }
            Ok(ip) => ip,
            Err(_) => {
                ck.err(s.span(), format!("invalid IP address {:?}", s.get_ref()));
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            }
        },
    };
    OpenClawConfig {
        user_header: user_header
            .unwrap_or_else(|| http::HeaderName::from_static("x-forwarded-user")),
        shared_user: shared_user.unwrap_or_else(|| "scopegate".into()),
        users,
        local_client_ip,
        in_band_auth: in_band.unwrap_or(true),
        connect_timeout: connect_timeout.unwrap_or(Duration::from_secs(15)),
    }
}
