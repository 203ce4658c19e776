//! The audit record: one structured line per decision, rendered from the decision itself.
//!
//! It names who (subject and identity source), from where (client address), what (method, path, route),
//! the scopes required and effective, the outcome with its reason codes, the status and the timings. It
//! never contains a token, a secret or an assertion: only values scopegate derived.
//!
//! # Why it does not go through the tracing formatter
//!
//! An audit line used to be a `tracing::info!` event formatted by tracing-subscriber's JSON formatter
//! and handed, one line at a time, to the non-blocking appender thread, which made one `write(2)` per
//! line: about 8 µs of CPU per request, where nginx's buffered access log costs under 1 µs. With JSON
//! logs (the default off a terminal), the line is now rendered straight into a per-thread buffer by
//! [`render_json`] (hand-written escaping, `itoa`/`zmij` numbers, no allocation) and written in 64 KiB
//! blocks by one writer thread (`src/audit/writer.rs`): the cost of a line is the rendering and a memcpy.
//!
//! The line is the one the tracing formatter printed, byte for byte apart from the time it was taken
//! (`timestamp`, `level`, `message`, the fields flattened in the same order, `target` last; strings
//! escaped as serde_json escapes them), so everything that reads audit lines reads them unchanged.
//! A test renders the same records both ways and compares them.
//!
//! # What is kept, and what is not
//!
//! - No line is dropped: a full buffer is queued to the writer thread; when the queue is full (the
//!   destination is slower than the traffic) the worker waits for it, as the non-lossy appender made it
//!   wait before. The drain on SIGTERM flushes every thread's buffer before the process exits.
//! - Lines reach stderr within a second of being recorded (nginx's `flush=1s`), sooner when 64 KiB
//!   have gathered. A process killed with SIGKILL loses at most that.
//! - The log filter still decides: the writer is installed only when the filter enables
//!   `scopegate::audit` at info (evaluated once at start; the filter does not change while running).
//! - With `--log-format text` the line stays a human-readable tracing event; that path is not the one
//!   a busy deployment uses, and it keeps text logs in one format.

pub(crate) mod writer;

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use writer::AuditGuard;

/// The fields of one audit line.
pub struct AuditRecord<'a> {
    pub request_id: &'a str,
    pub subject: Option<&'a str>,
    pub source: Option<&'static str>,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    /// Scope names, space-separated in the line.
    pub required: Words<'a>,
    /// Scope names, space-separated in the line.
    pub effective: Words<'a>,
    pub decision: &'static str,
    /// Reason codes, comma-separated in the line.
    pub reasons: Words<'a>,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub websocket: bool,
}

/// A field made of words (a decision's scope names, a refusal's reason codes). A list is written
/// into the line word by word, so the hot path joins nothing into a string of its own.
#[derive(Clone, Copy)]
pub enum Words<'a> {
    /// The field's text as it is.
    Text(&'a str),
    /// Words yielded by a list; the line puts the field's separator between them.
    List(&'a dyn WordList),
}

/// Something that yields a field's words in order.
pub trait WordList {
    fn each_word(&self, f: &mut dyn FnMut(&str));
}

/// A closure that calls its argument with each word.
impl<F: Fn(&mut dyn FnMut(&str))> WordList for F {
    fn each_word(&self, f: &mut dyn FnMut(&str)) {
        self(f)
    }
}

impl<'a> From<&'a str> for Words<'a> {
    fn from(text: &'a str) -> Words<'a> {
        Words::Text(text)
    }
}

impl Words<'_> {
    /// The field's text with `sep` between the words (for the text-log path, not the hot one).
    pub fn joined(&self, sep: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Words::Text(text) => std::borrow::Cow::Borrowed(text),
            Words::List(list) => {
                let (mut out, mut first) = (String::new(), true);
                list.each_word(&mut |w| {
                    if !first {
                        out.push_str(sep);
                    }
                    first = false;
                    out.push_str(w);
                });
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// The field as a JSON string: quoted, escaped, `sep` between the words.
    fn render(&self, out: &mut Vec<u8>, sep: &[u8]) {
        out.push(b'"');
        match self {
            Words::Text(text) => escaped(out, text),
            Words::List(list) => {
                let mut first = true;
                list.each_word(&mut |w| {
                    if !first {
                        out.extend_from_slice(sep);
                    }
                    first = false;
                    escaped(out, w);
                });
            }
        }
        out.push(b'"');
    }
}

/// The target audit lines carry (and the log filter is asked about).
pub const TARGET: &str = "scopegate::audit";

/// Emits the record, if auditing is on: into the JSON writer when one is installed (JSON logs),
/// otherwise as a tracing event at target `scopegate::audit` (info level).
pub fn record(enabled: bool, r: &AuditRecord<'_>) {
    if !enabled {
        return;
    }
    match writer::global() {
        Some(w) => w.record(r),
        None => record_with_tracing(r),
    }
}

/// The record as a tracing event (text logs, or no writer installed); the JSON formatter renders it
/// exactly as [`render_json`] does.
pub fn record_with_tracing(r: &AuditRecord<'_>) {
    tracing::info!(
        target: "scopegate::audit",
        request_id = r.request_id,
        subject = r.subject.unwrap_or("-"),
        source = r.source.unwrap_or("-"),
        client_ip = %r.client_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        method = r.method,
        path = r.path,
        route = r.route,
        required = &*r.required.joined(" "),
        effective = &*r.effective.joined(" "),
        decision = r.decision,
        reasons = &*r.reasons.joined(","),
        status = r.status,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        upstream_ms = r.upstream.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(-1.0),
        websocket = r.websocket,
        "decision"
    );
}

/// Installs the JSON audit writer over `out` (the CLI passes stderr, where the logs go), if the log
/// filter enables `scopegate::audit` at info and no writer is installed yet. Dropping the guard
/// flushes every buffer and stops the writer thread.
pub fn install(out: Box<dyn Write + Send>) -> Option<AuditGuard> {
    if !tracing::enabled!(target: "scopegate::audit", tracing::Level::INFO) {
        return None;
    }
    writer::install(out)
}

/// What a drain flush found: lines recorded since start, written to the destination, and lost (a
/// destination that failed or did not take them in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlushReport {
    pub recorded: u64,
    pub written: u64,
    pub lost: u64,
}

/// The drain: every thread's buffered lines are written before this returns (bounded by
/// [`writer::DRAIN_WAIT`]). `None` when no writer is installed (text logs, tests in process).
pub(crate) fn flush() -> Option<FlushReport> {
    writer::global().map(|w| w.flush())
}

/// Appends the record's JSON line (with its newline) to `out`, stamped `at`: the line tracing's JSON
/// formatter printed for it, byte for byte.
pub fn render_json(out: &mut Vec<u8>, r: &AuditRecord<'_>, at: SystemTime) {
    let subject = r.subject.unwrap_or("-");
    let source = r.source.unwrap_or("-");
    out.reserve(
        320 + r.request_id.len() + subject.len() + r.method.len() + r.path.len() + r.route.len(),
    );
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, at);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"decision\",\"request_id\":");
    string(out, r.request_id);
    out.extend_from_slice(b",\"subject\":");
    string(out, subject);
    out.extend_from_slice(b",\"source\":");
    string(out, source);
    out.extend_from_slice(b",\"client_ip\":\"");
    match r.client_ip {
        Some(IpAddr::V4(v4)) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        // Digits, letters, ':' and '.' only: nothing to escape.
        Some(ip @ IpAddr::V6(_)) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\",\"method\":");
    string(out, r.method);
    out.extend_from_slice(b",\"path\":");
    string(out, r.path);
    out.extend_from_slice(b",\"route\":");
    string(out, r.route);
    out.extend_from_slice(b",\"required\":");
    r.required.render(out, b" ");
    out.extend_from_slice(b",\"effective\":");
    r.effective.render(out, b" ");
    out.extend_from_slice(b",\"decision\":");
    string(out, r.decision);
    out.extend_from_slice(b",\"reasons\":");
    r.reasons.render(out, b",");
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    float(out, r.duration.as_secs_f64() * 1000.0);
    out.extend_from_slice(b",\"upstream_ms\":");
    float(
        out,
        r.upstream.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(-1.0),
    );
    out.extend_from_slice(if r.websocket {
        b",\"websocket\":true"
    } else {
        b",\"websocket\":false"
    });
    out.extend_from_slice(b",\"target\":\"scopegate::audit\"}\n");
}

/// serde_json's number rendering: shortest round-trip digits (zmij, as serde_json uses), `null` for
/// what JSON cannot represent.
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// How serde_json escapes a byte: 0 (as is), `u` (`\u00XX`) or the letter after the backslash.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string, quoted and escaped exactly as serde_json does (control characters, `"` and `\`
/// escaped; everything else, non-ASCII included, as UTF-8).
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// The inside of [`string`]: runs that need no escaping are copied whole (most values are one run).
fn escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        let b = bytes[at];
        match ESCAPE[b as usize] {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
            e => out.extend_from_slice(&[b'\\', e]),
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The first byte at or after `from` that needs escaping: eight bytes at a time, then one by one.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut at = from;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        if needs_escape(word) {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| ESCAPE[b as usize] != 0)
        .map(|i| at + i)
}

/// Whether any of the eight bytes is below 0x20, `"` or `\` (exact for "any": a borrow only ever
/// starts at a byte that matches).
fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    (below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1)) != 0
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber's default timer prints it
/// (`2026-12-01T09:15:40.341070Z`).
fn timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let (secs, nanos) = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    if (0..=9999).contains(&year) {
        let y = year as u32;
        two(out, y / 100);
        two(out, y % 100);
    } else if year > 9999 {
        let _ = write!(out, "+{year}");
    } else {
        let _ = write!(out, "{year:05}");
    }
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    out.push(b'.');
    let micros = nanos / 1000;
    two(out, micros / 10_000);
    two(out, micros / 100 % 100);
    two(out, micros % 100);
    out.push(b'Z');
}

fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn sample<'a>(subject: Option<&'a str>, path: &'a str, ip: Option<IpAddr>) -> AuditRecord<'a> {
        AuditRecord {
            request_id: "40d12c8facd2-1",
            subject,
            source: subject.map(|_| "jwt"),
            client_ip: ip,
            method: "GET",
            path,
            route: "GET,HEAD /v1/models",
            required: "operator.read".into(),
            effective: "operator.read operator.sessions.read".into(),
            decision: "allow",
            reasons: "route_requires,jwt_verified".into(),
            status: 200,
            duration: Duration::from_nanos(2_999_558),
            upstream: Some(Duration::from_nanos(2_086_012)),
            websocket: false,
        }
    }

    /// Strings that need every kind of escape, and some that need none.
    fn awkward() -> Vec<String> {
        let mut v: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote\" backslash\\ slash/".into(),
            "é ü 日本 🦀 \u{2028}\u{2029} \u{7f} \u{fffd}".into(),
            "\"\\\"\\".into(),
        ];
        v.push((0u8..0x80).map(char::from).collect());
        v.extend((0u8..0x20).map(|b| format!("a{}b", char::from(b))));
        v
    }

    fn escapes_like_serde_json(s: &str) {
        let mut out = Vec::new();
        string(&mut out, s);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(s).unwrap(),
            "{s:?}"
        );
    }

    #[test]
    fn strings_escape_exactly_as_serde_json() {
        for s in awkward() {
            escapes_like_serde_json(&s);
        }
    }

    /// Every byte that needs escaping, at every offset of strings up to three chunks long, among
    /// ASCII and non-ASCII neighbours.
    #[test]
    fn escapes_are_found_at_every_offset() {
        let specials: Vec<char> = (0u8..0x20).map(char::from).chain(['"', '\\']).collect();
        for filler in ['a', 'é', '\u{7f}', ' '] {
            for len in 0..24 {
                for at in 0..len {
                    for &c in &specials {
                        let s: String =
                            (0..len).map(|i| if i == at { c } else { filler }).collect();
                        escapes_like_serde_json(&s);
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_render_as_serde_json() {
        for v in [
            0.0,
            -1.0,
            1.0,
            0.062001999999999995,
            2.999558,
            1e21,
            1e-7,
            123456.789,
        ] {
            let mut out = Vec::new();
            float(&mut out, v);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
        let mut out = Vec::new();
        float(&mut out, f64::NAN);
        assert_eq!(out, b"null");
    }

    #[test]
    fn timestamps_match_known_instants() {
        let at = |s: u64, n: u32| {
            let mut out = Vec::new();
            timestamp(&mut out, UNIX_EPOCH + Duration::new(s, n));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 999), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(951_868_799, 999_999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(
            at(1_796_116_540, 341_070_000),
            "2026-12-01T09:15:40.341070Z"
        );
        assert_eq!(at(4_107_542_399, 5_000), "2100-02-28T23:59:59.000005Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        let mut out = Vec::new();
        timestamp(&mut out, UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(out, b"1969-12-31T23:59:59.000000Z");
    }

    #[test]
    fn timestamps_agree_with_tracing_subscribers_clock() {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::FormatTime;
        let theirs = || {
            let mut s = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut s))
                .unwrap();
            s
        };
        for _ in 0..100 {
            let before = theirs();
            let mut out = Vec::new();
            timestamp(&mut out, SystemTime::now());
            let ours = String::from_utf8(out).unwrap();
            let after = theirs();
            // Same format, so the text order is the time order.
            assert_eq!(ours.len(), before.len());
            assert!(before <= ours && ours <= after, "{before} {ours} {after}");
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The old path (tracing's JSON formatter, configured as the CLI configures it) and the new one
    /// print the same bytes for the same record, apart from the timestamp's value.
    #[test]
    fn the_line_is_the_one_tracings_json_formatter_printed() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = crate::cli::json_subscriber(
            tracing_subscriber::EnvFilter::new("warn,scopegate::audit=info"),
            move || sink.clone(),
        );
        let mut records = Vec::new();
        let strings = awkward();
        for s in &strings {
            records.push(sample(Some(s), s, Some("127.0.0.1".parse().unwrap())));
        }
        records.push(sample(None, "/", None));
        // Fields given as word lists (as `finish` gives scopes and reason codes): the formatter got
        // them joined.
        let words = |f: &mut dyn FnMut(&str)| awkward().iter().for_each(|w| f(w));
        let none = |_: &mut dyn FnMut(&str)| {};
        records.push(AuditRecord {
            required: Words::List(&words),
            effective: Words::List(&none),
            reasons: Words::List(&words),
            ..sample(Some("lists"), "/lists", None)
        });
        records.push(sample(
            Some("x"),
            "/v6",
            Some("2001:db8::1".parse().unwrap()),
        ));
        records.push(AuditRecord {
            upstream: None,
            websocket: true,
            duration: Duration::ZERO,
            status: 101,
            source: None,
            ..sample(None, "/ws", Some("255.0.10.1".parse().unwrap()))
        });
        let mut ours = Vec::new();
        tracing::subscriber::with_default(subscriber, || {
            for r in &records {
                record_with_tracing(r);
                render_json(&mut ours, r, SystemTime::now());
            }
        });
        let theirs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let ours = String::from_utf8(ours).unwrap();
        let strip = |l: &str| l[l.find("\",\"level\"").unwrap()..].to_string();
        let theirs: Vec<String> = theirs.lines().map(strip).collect();
        let ours: Vec<String> = ours.lines().map(strip).collect();
        assert_eq!(theirs.len(), records.len());
        assert_eq!(ours, theirs);
        for line in &ours {
            assert!(
                line.ends_with(",\"target\":\"scopegate::audit\"}"),
                "{line}"
            );
        }
    }

    /// A word list is the text it joins to, with the field's separator, including empty words.
    #[test]
    fn a_word_list_renders_as_its_joined_text() {
        let list: Vec<String> = awkward();
        let words = |f: &mut dyn FnMut(&str)| list.iter().for_each(|w| f(w));
        let one = |f: &mut dyn FnMut(&str)| f("operator.read");
        for (field, sep) in [(Words::List(&words), " "), (Words::List(&one), ",")] {
            let mut out = Vec::new();
            field.render(&mut out, sep.as_bytes());
            let joined = list_join(&field, sep);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&joined).unwrap()
            );
        }
        let mut out = Vec::new();
        Words::Text("a b").render(&mut out, b",");
        assert_eq!(out, b"\"a b\"");
    }

    /// The join a reader expects: every word, `sep` between each pair (empty words included).
    fn list_join(field: &Words<'_>, sep: &str) -> String {
        let mut all = Vec::new();
        if let Words::List(list) = field {
            list.each_word(&mut |w| all.push(w.to_string()));
        }
        all.join(sep)
    }

    #[test]
    fn every_line_parses_back_to_its_values() {
        for s in awkward() {
            let mut out = Vec::new();
            render_json(&mut out, &sample(Some(&s), &s, None), SystemTime::now());
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["subject"], s.as_str());
            assert_eq!(v["path"], s.as_str());
            assert_eq!(v["client_ip"], "-");
            assert_eq!(v["status"], 200);
            assert_eq!(v["target"], TARGET);
        }
    }
}
