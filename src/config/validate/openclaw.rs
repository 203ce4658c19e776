//! `[openclaw]`: how the OpenClaw profile presents callers to the gateway.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

pub(super) fn openclaw_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawOpenClaw>>,
) -> OpenClawConfig {
    let raw = raw.map(|r| r.into_inner()).unwrap_or_default();
    let RawOpenClaw {
        user_header,
        shared_user,
        users,
        local_client_ip: local_ip,
        in_band_auth: in_band,
        connect_timeout,
        people,
        provision_user,
        provision_limit,
    } = raw;
    let people = match people {
        None => People::Listed,
        Some(p) => match p.get_ref().as_str() {
            "listed" => People::Listed,
            "provision" => People::Provision,
            "shared" => People::Shared,
            other => {
                ck.err(
                    p.span(),
                    format!(
                        "people must be \"listed\", \"provision\" or \"shared\", not {other:?}"
                    ),
                );
                People::Listed
            }
        },
    };
    let provision_limit = match provision_limit {
        None => 1000,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(v) if v > 0 => v,
            _ => {
                ck.err(
                    n.span(),
                    "provision_limit must be a positive number of people",
                );
                1000
            }
        },
    };
    let provision_user = provision_user.unwrap_or_else(|| "scopegate-provisioner".into());
    if provision_user.trim().is_empty() {
        ck.err_nowhere("[openclaw] provision_user must not be empty");
    }
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
            .map(|h| h.0)
            .unwrap_or_else(|| http::HeaderName::from_static("x-forwarded-user")),
        shared_user: shared_user.unwrap_or_else(|| "scopegate".into()),
        users,
        local_client_ip,
        in_band_auth: in_band.unwrap_or(true),
        connect_timeout: connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(15)),
        people,
        provision_user,
        provision_limit,
    }
}
