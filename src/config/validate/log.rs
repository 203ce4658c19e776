//! `[log]`: level, format and the audit line.

use super::*;

pub(super) fn log_config(ck: &mut Checker, raw: RawLog) -> LogConfig {
    let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("auto") => LogFormat::Auto,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            let span = raw.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
            ck.err(
                span,
                format!("log format must be \"auto\", \"text\" or \"json\", not {other:?}"),
            );
            LogFormat::Auto
        }
    };
    LogConfig {
        level: raw.level.unwrap_or_else(|| "info".into()),
        format,
        audit: raw.audit.unwrap_or(true),
    }
}
