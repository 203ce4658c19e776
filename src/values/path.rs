//! The one reading of a request path: [`canonical_path`] accepts a path only when every upstream must
//! read it the same way, and returns it unchanged.
//!
//! scopegate never rewrites a path. It refuses (400) any path an upstream could read two ways — the
//! differential behind Envoy's `//admin`/`%2F` CVEs, Pomerium's and oauth2-proxy's — so the path that
//! was authorised is, byte for byte, the path the upstream receives. It sits in the floor because the
//! route patterns of the config ([`super::PathPattern`]) must be canonical by the same rule as the
//! requests they are matched against.

/// Why a path was refused before any route was consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    NotOriginForm,
    EmptySegment,
    DotSegment,
    Semicolon,
    Backslash,
    EncodedSeparator,
    EncodedDot,
    EncodedUnreserved,
    EncodedPercent,
    EncodedControl,
    BadPercentEncoding,
    InvalidUtf8,
    RawNonAscii,
    ControlByte,
}

impl PathRejection {
    pub fn code(self) -> &'static str {
        match self {
            PathRejection::NotOriginForm => "path_not_origin_form",
            PathRejection::EmptySegment => "path_empty_segment",
            PathRejection::DotSegment => "path_dot_segment",
            PathRejection::Semicolon => "path_semicolon",
            PathRejection::Backslash => "path_backslash",
            PathRejection::EncodedSeparator => "path_encoded_separator",
            PathRejection::EncodedDot => "path_encoded_dot",
            PathRejection::EncodedUnreserved => "path_encoded_unreserved",
            PathRejection::EncodedPercent => "path_encoded_percent",
            PathRejection::EncodedControl => "path_encoded_control",
            PathRejection::BadPercentEncoding => "path_bad_percent_encoding",
            PathRejection::InvalidUtf8 => "path_invalid_utf8",
            PathRejection::RawNonAscii => "path_raw_non_ascii",
            PathRejection::ControlByte => "path_control_byte",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            PathRejection::NotOriginForm => "the request target must be an absolute path",
            PathRejection::EmptySegment => {
                "the path contains an empty segment (`//`), which upstreams may merge"
            }
            PathRejection::DotSegment => "the path contains a `.` or `..` segment",
            PathRejection::Semicolon => {
                "the path contains `;` (matrix parameters are read differently by upstreams)"
            }
            PathRejection::Backslash => "the path contains a backslash",
            PathRejection::EncodedSeparator => {
                "the path contains an encoded `/` or `\\` (%2F, %5C)"
            }
            PathRejection::EncodedDot => "the path contains an encoded `.` (%2E)",
            PathRejection::EncodedUnreserved => {
                "the path percent-encodes a character that needs no encoding"
            }
            PathRejection::EncodedPercent => {
                "the path contains an encoded `%` (%25), a double-encoding"
            }
            PathRejection::EncodedControl => "the path encodes a control character or `;`",
            PathRejection::BadPercentEncoding => "the path has a malformed percent-escape",
            PathRejection::InvalidUtf8 => {
                "the decoded path is not valid UTF-8 (e.g. an overlong sequence)"
            }
            PathRejection::RawNonAscii => "the path contains raw non-ASCII bytes",
            PathRejection::ControlByte => "the path contains a control byte",
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes a path may carry as they are: unreserved, sub-delimiters but `;`, `:` and `@`
/// (RFC 3986 `pchar` without `%`). `/` is handled apart.
const fn plain_bytes() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    t
}
static PLAIN: [bool; 256] = plain_bytes();

/// Checks that `path` (without query) has exactly one reading. Returns it unchanged when it does.
///
/// Runs on every request: a path of plain bytes with no empty and no dot segment — nearly every
/// path — is accepted in one pass with a table lookup per byte; anything else takes the full
/// check, which names the reason.
pub fn canonical_path(path: &str) -> Result<&str, PathRejection> {
    let bytes = path.as_bytes();
    if bytes.first() == Some(&b'/') {
        let mut segment = 1;
        let mut plain = true;
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            if b == b'/' {
                if !ordinary_segment(&bytes[segment..i], false) {
                    plain = false;
                    break;
                }
                segment = i + 1;
            } else if !PLAIN[b as usize] {
                plain = false;
                break;
            }
        }
        if plain && ordinary_segment(&bytes[segment..], true) {
            return Ok(path);
        }
    }
    canonical_path_fully(path)
}

/// Not `.` or `..`, and not empty unless it is the last (a trailing slash).
fn ordinary_segment(seg: &[u8], last: bool) -> bool {
    match seg {
        b"" => last,
        b"." | b".." => false,
        _ => true,
    }
}

/// The full check, with the reason for a refusal.
fn canonical_path_fully(path: &str) -> Result<&str, PathRejection> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathRejection::NotOriginForm);
    }
    // Decoded bytes for the UTF-8 check; most paths have no escapes, so this stays empty.
    let mut decoded: Vec<u8> = Vec::new();
    let mut has_escape = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex_val),
                    bytes.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathRejection::BadPercentEncoding);
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' => return Err(PathRejection::EncodedSeparator),
                    b'.' => return Err(PathRejection::EncodedDot),
                    b'%' => return Err(PathRejection::EncodedPercent),
                    b';' | 0..=0x1f | 0x7f => return Err(PathRejection::EncodedControl),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                        return Err(PathRejection::EncodedUnreserved)
                    }
                    _ => {}
                }
                if !has_escape {
                    has_escape = true;
                    decoded.extend_from_slice(&bytes[..i]);
                }
                decoded.push(v);
                i += 3;
                continue;
            }
            b';' => return Err(PathRejection::Semicolon),
            b'\\' => return Err(PathRejection::Backslash),
            0..=0x1f | 0x7f => return Err(PathRejection::ControlByte),
            0x80..=0xff => return Err(PathRejection::RawNonAscii),
            _ => {}
        }
        if has_escape {
            decoded.push(b);
        }
        i += 1;
    }
    if has_escape && std::str::from_utf8(&decoded).is_err() {
        return Err(PathRejection::InvalidUtf8);
    }
    // Segment checks on the raw form: no escapes of `/` or `.` survived above, so raw and decoded
    // segments line up.
    let mut segs = path[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        if seg.is_empty() && segs.peek().is_some() {
            return Err(PathRejection::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(PathRejection::DotSegment);
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A corpus of tricky paths: each is either refused with a reason, or accepted unchanged.
    #[test]
    fn the_one_pass_check_agrees_with_the_full_check() {
        // Every path over a small alphabet up to five bytes long: the fast path may only accept
        // what the full check accepts, and must give the full check's reason otherwise.
        let alphabet: &[u8] = b"/.a%2F;\\\x01:";
        let mut paths = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = paths
                .iter()
                .flat_map(|p| {
                    alphabet.iter().map(move |&c| {
                        let mut q = p.clone();
                        q.push(c);
                        q
                    })
                })
                .collect();
            paths.extend(longer);
        }
        for p in &paths {
            let Ok(s) = std::str::from_utf8(p) else {
                continue;
            };
            assert_eq!(canonical_path(s), canonical_path_fully(s), "{s:?}");
        }
    }

    #[test]
    fn canonicalisation_corpus() {
        let refused: &[(&str, PathRejection)] = &[
            ("v1/models", PathRejection::NotOriginForm),
            ("*", PathRejection::NotOriginForm),
            ("//v1/responses", PathRejection::EmptySegment),
            ("/v1//responses", PathRejection::EmptySegment),
            ("/v1/./responses", PathRejection::DotSegment),
            ("/v1/../v1/responses", PathRejection::DotSegment),
            ("/v1/models/..", PathRejection::DotSegment),
            ("/v1/responses;x=1", PathRejection::Semicolon),
            ("/v1;/responses", PathRejection::Semicolon),
            ("/v1\\responses", PathRejection::Backslash),
            ("/v1%2Fresponses", PathRejection::EncodedSeparator),
            ("/v1%2fresponses", PathRejection::EncodedSeparator),
            ("/v1%5Cresponses", PathRejection::EncodedSeparator),
            ("/v1/%2e%2e/admin", PathRejection::EncodedDot),
            ("/v1/%2E/x", PathRejection::EncodedDot),
            ("/v1/%72esponses", PathRejection::EncodedUnreserved),
            ("/v1/%7E", PathRejection::EncodedUnreserved),
            ("/v1/%252F", PathRejection::EncodedPercent),
            ("/v1/%00", PathRejection::EncodedControl),
            ("/v1/%3B", PathRejection::EncodedControl),
            ("/v1/%0a", PathRejection::EncodedControl),
            ("/v1/%zz", PathRejection::BadPercentEncoding),
            ("/v1/%2", PathRejection::BadPercentEncoding),
            ("/v1/%C0%AE%C0%AE/", PathRejection::InvalidUtf8),
            ("/v1/%C0%AF", PathRejection::InvalidUtf8),
            ("/v1/%FF", PathRejection::InvalidUtf8),
            ("/v1/\u{e9}", PathRejection::RawNonAscii),
            ("/v1/\tx", PathRejection::ControlByte),
        ];
        for (p, why) in refused {
            assert_eq!(canonical_path(p), Err(*why), "{p}");
        }
        let accepted = [
            "/",
            "/v1/responses",
            "/v1/models/",
            "/sessions/agent:main:main/history",
            "/sessions/agent%3Amain/history",
            "/files/a%20b",
            "/files/%E2%9C%93",
            "/odd/~user/a-b_c.d",
            "/v1/models/gpt-4.1",
            "/x/...",
            "/x/.hidden",
        ];
        for p in accepted {
            assert_eq!(canonical_path(p), Ok(p), "{p}");
        }
    }
}
