//! `[limits]`: abuse limits per client address and per identity.

use std::time::Duration;

use super::*;

/// Defaults fit one gateway's sidecar: generous request rates (a person or a script never meets them;
/// a flood does), 20 failed authentications a minute per address, 16 unauthenticated WebSockets per
/// address and 1 024 in all, 65 536 entries per table.
pub(super) fn limits_config(ck: &mut Checker, raw: RawLimits) -> LimitsConfig {
    if raw.enabled == Some(false) {
        return LimitsConfig::off();
    }
    let one_second = Duration::from_secs(1);
    let rate = |ck: &mut Checker,
                value: Option<RateValue>,
                burst: Option<Spanned<u64>>,
                default: Option<(u64, Duration)>,
                name: &str| {
        let (count, period) = value.map(|v| v.0).unwrap_or(default)?;
        let burst = match burst {
            Some(b) if *b.get_ref() == 0 || *b.get_ref() > 1_000_000_000 => {
                ck.err(b.span(), format!("{name} must be between 1 and 1000000000"));
                count
            }
            Some(b) => b.into_inner(),
            None => count,
        };
        Some(RateLimit {
            count,
            period,
            burst,
        })
    };
    let address_requests = rate(
        ck,
        raw.requests_per_address,
        raw.requests_per_address_burst,
        Some((1000, one_second)),
        "requests_per_address_burst",
    );
    let identity_requests = rate(
        ck,
        raw.requests_per_identity,
        raw.requests_per_identity_burst,
        Some((1000, one_second)),
        "requests_per_identity_burst",
    );
    let failed_auth = rate(
        ck,
        raw.failed_auth_per_address,
        raw.failed_auth_burst,
        Some((20, Duration::from_secs(60))),
        "failed_auth_burst",
    );
    let table_size = match raw.table_size {
        Some(n) if !(64..=1 << 24).contains(n.get_ref()) => {
            ck.err(n.span(), "table_size must be between 64 and 16777216");
            65_536
        }
        Some(n) => n.into_inner(),
        None => 65_536,
    };
    LimitsConfig {
        address_requests,
        identity_requests,
        failed_auth,
        unauthenticated_websockets_per_address: raw
            .unauthenticated_websockets_per_address
            .unwrap_or(16),
        unauthenticated_websockets_total: raw.unauthenticated_websockets_total.unwrap_or(1024),
        table_size,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_test_toml as parse;
    use super::*;

    #[test]
    fn limits_are_on_by_default_and_validated_with_lines() {
        let base = "[upstream]\nurl = \"http://127.0.0.1:1\"\n";
        let c = parse(base).unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            c.limits.failed_auth,
            Some(RateLimit {
                count: 20,
                period: minute,
                burst: 20
            })
        );
        assert_eq!(c.limits.address_requests.map(|r| r.count), Some(1000));
        assert_eq!(c.limits.identity_requests.map(|r| r.count), Some(1000));
        assert_eq!(c.limits.unauthenticated_websockets_per_address, 16);
        assert_eq!(c.limits.table_size, 65_536);

        let off = parse(&format!("{base}[limits]\nenabled = false\n")).unwrap();
        assert_eq!(off.limits, LimitsConfig::off());
        let custom = parse(&format!(
            "{base}[limits]\nfailed_auth_per_address = \"5/h\"\nfailed_auth_burst = 3\nrequests_per_identity = \"off\"\n"
        ))
        .unwrap();
        assert_eq!(
            custom.limits.failed_auth,
            Some(RateLimit {
                count: 5,
                period: Duration::from_secs(3600),
                burst: 3
            })
        );
        assert_eq!(custom.limits.identity_requests, None);

        for (bad, line, says) in [
            ("requests_per_address = \"fast\"", 4, "invalid rate"),
            ("requests_per_address = \"0/s\"", 4, "allows nothing"),
            ("failed_auth_burst = 0", 4, "failed_auth_burst"),
            ("table_size = 10", 4, "table_size"),
            ("per_address = 1", 4, "unknown field"),
        ] {
            let e = parse(&format!("{base}[limits]\n{bad}\n")).unwrap_err();
            let p = &e.problems[0];
            assert_eq!(p.line, line, "{bad}: {e}");
            assert!(p.message.contains(says), "{bad}: {e}");
        }
    }
}
