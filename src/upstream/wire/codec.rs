//! The HTTP/1.1 client codec without I/O: a request head written into a buffer, and a response read
//! from a buffer the caller fills. Keeping it free of sockets lets the fuzz target and the unit tests
//! drive it byte by byte, and lets the connection code stay a thin loop around it.
//!
//! Response framing follows RFC 9112 §6.3 in its order: no body for `HEAD`, 1xx, 204 and 304; then
//! `Transfer-Encoding` (chunked as the final coding, else the body runs to the close); then
//! `Content-Length` (every value must agree); else the body runs to the close. Anything ambiguous is an
//! error or, where the message can still be read, a connection that is not reused.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};

use crate::upstream::injected::Injected;

/// A response head larger than this is refused (nginx's default is 4–8 KiB; hyper's read buffer ~400 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// More header fields than this in a response head, or in a trailer section, is refused (as hyper).
pub const MAX_HEADERS: usize = 100;
/// A chunk-size line (with its extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a response could not be read.
#[derive(Debug)]
pub enum WireError {
    Io(std::io::Error),
    /// The connection closed (or was reset) before the first byte of a response.
    ClosedBeforeResponse,
    /// The connection closed in the middle of a response head or body.
    Truncated,
    /// The upstream broke the protocol; the text names how.
    Malformed(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "upstream connection error: {e}"),
            WireError::ClosedBeforeResponse => {
                f.write_str("the upstream closed the connection before responding")
            }
            WireError::Truncated => f.write_str("the upstream closed the connection mid-response"),
            WireError::Malformed(why) => write!(f, "the upstream sent an invalid response: {why}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Methods whose empty body needs no framing header; any other method with an empty body gets
/// `content-length: 0`, so the upstream never waits for a body that is not coming.
fn bodiless_by_convention(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Writes the head of a request that has no body. `target` is origin-form (`/path?query`). Framing
/// headers the client sent are not copied: this hop's framing is ours to state. Header values cannot
/// hold CR or LF (`http` refuses them), so nothing here can split the head. `out` belongs to the
/// connection and keeps its capacity from one request to the next. `injected` (scopegate's own fields)
/// follow the client's; the client's were scrubbed of every name scopegate sets.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    injected: &Injected,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter().chain(injected.iter()) {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !bodiless_by_convention(method) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body after a response head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A final (non-1xx) response head.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// Whether the connection may carry another request once this response's body has been read.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf`, skipping interim 1xx responses, and consumes it.
/// `Ok(None)`: the head is not complete yet (read more and call again).
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            &buf[..],
            &mut slots,
        );
        let len = match status {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(WireError::Malformed("response head too large"));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Malformed("too many response header fields"))
            }
            Err(_) => return Err(WireError::Malformed("unparsable response head")),
        };
        if len > MAX_HEAD_BYTES {
            return Err(WireError::Malformed("response head too large"));
        }
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| WireError::Malformed("invalid status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Malformed(
                "101 Switching Protocols to a request that asked for no upgrade",
            ));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints, …: nothing for this hop; the final response follows.
            buf.advance(len);
            continue;
        }
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Where each field sits in `buf`, so the values can share the head's bytes instead of being
        // copied one allocation each once the head is split off.
        let base = buf.as_ptr() as usize;
        let mut spans = [[0usize; 4]; MAX_HEADERS];
        let fields = parsed.headers.len();
        for (span, f) in spans.iter_mut().zip(parsed.headers.iter()) {
            *span = [
                f.name.as_ptr() as usize - base,
                f.name.len(),
                f.value.as_ptr() as usize - base,
                f.value.len(),
            ];
        }
        let head = buf.split_to(len).freeze();
        // One field more than the upstream sent: the response gets its `x-request-id` without a
        // second table.
        let mut headers = HeaderMap::with_capacity(fields + 1);
        let mut seen = Seen::default();
        for &[name_at, name_len, value_at, value_len] in &spans[..fields] {
            let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
                .map_err(|_| WireError::Malformed("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
                .map_err(|_| WireError::Malformed("invalid header value"))?;
            seen.note(&name);
            headers.append(name, value);
        }
        let (framing, framing_keeps_alive) = framing(method, status, version, &headers, seen)?;
        let keep_alive = framing_keeps_alive
            && version == Version::HTTP_11
            && !(seen.connection && has_token(&headers, &http::header::CONNECTION, "close"));
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

/// Which framing-related fields a head has, noted while it is read (saves a lookup per field).
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    content_length: bool,
    transfer_encoding: bool,
    connection: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName) {
        if name == http::header::CONTENT_LENGTH {
            self.content_length = true;
        } else if name == http::header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == http::header::CONNECTION {
            self.connection = true;
        }
    }
}

fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, WireError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| WireError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| WireError::Malformed("invalid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Whether any comma-separated element of any `name` field equals `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The body's framing, and whether that framing lets the connection be reused.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    seen: Seen,
) -> Result<(Framing, bool), WireError> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    let has_length = seen.content_length;
    if seen.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(WireError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        let chunked_last = headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|c| !c.is_empty())
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked_last {
            // Both framings present smells of smuggling: read by chunks (TE wins), then close.
            (Framing::Chunked, !has_length)
        } else {
            // RFC 9112 §6.3 (4): a response whose final coding is not chunked runs to the close.
            (Framing::UntilClose, false)
        });
    }
    if has_length {
        let mut length: Option<u64> = None;
        for value in headers.get_all(http::header::CONTENT_LENGTH) {
            for item in value.as_bytes().split(|&b| b == b',') {
                let n = parse_decimal(item.trim_ascii())
                    .ok_or(WireError::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::Malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
        return Ok(match length {
            Some(0) => (Framing::Empty, true),
            Some(n) => (Framing::Length(n), true),
            None => return Err(WireError::Malformed("invalid Content-Length")),
        });
    }
    Ok((Framing::UntilClose, false))
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// One step of a response body.
#[derive(Debug, PartialEq)]
pub enum BodyEvent {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section up to its empty line.
    Trailers,
}

/// Cuts a response body out of the bytes after its head, without copying them.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    /// True once the body has been read to its end (nothing more will be returned but `End`).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The exact number of body bytes still to come, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body from `buf`. `Ok(None)`: more bytes are needed (`eof` says
    /// none will come, which is the end of a close-delimited body and an error for the others).
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<BodyEvent>, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Some(BodyEvent::End)),
                State::Length(left) => {
                    if buf.is_empty() {
                        return if eof {
                            Err(WireError::Truncated)
                        } else {
                            Ok(None)
                        };
                    }
                    let n = take_len(left, buf.len());
                    let rest = left - n as u64;
                    self.state = if rest == 0 {
                        State::Done
                    } else {
                        State::Length(rest)
                    };
                    return Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())));
                }
                State::UntilClose => {
                    if !buf.is_empty() {
                        return Ok(Some(BodyEvent::Data(buf.split().freeze())));
                    }
                    if eof {
                        self.state = State::Done;
                        return Ok(Some(BodyEvent::End));
                    }
                    return Ok(None);
                }
                State::Chunked(chunk) => match self.chunked(chunk, buf)? {
                    Some(event) => return Ok(Some(event)),
                    None if self.state != State::Chunked(chunk) => continue,
                    None if eof => return Err(WireError::Truncated),
                    None => return Ok(None),
                },
            }
        }
    }

    /// One chunked-coding step. `Ok(None)` with a changed state means "go on"; with the same state,
    /// "need more bytes".
    fn chunked(
        &mut self,
        chunk: Chunk,
        buf: &mut BytesMut,
    ) -> Result<Option<BodyEvent>, WireError> {
        match chunk {
            Chunk::Size => {
                let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(WireError::Malformed("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                if lf > MAX_CHUNK_LINE {
                    return Err(WireError::Malformed("chunk-size line too long"));
                }
                let size = parse_chunk_size(&buf[..lf])?;
                buf.advance(lf + 1);
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(None)
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = take_len(left, buf.len());
                let rest = left - n as u64;
                self.state = State::Chunked(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                });
                Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(WireError::Malformed("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                self.state = State::Chunked(Chunk::Size);
                Ok(None)
            }
            Chunk::Trailers => {
                if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                    buf.advance(2);
                    self.state = State::Done;
                    return Ok(Some(BodyEvent::End));
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(&buf[..], &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let trailers = header_map(fields)?;
                        buf.advance(len);
                        self.state = State::Done;
                        Ok(Some(BodyEvent::Trailers(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => Ok(None),
                    Ok(httparse::Status::Partial) => {
                        Err(WireError::Malformed("trailer section too large"))
                    }
                    Err(_) => Err(WireError::Malformed("unparsable trailer section")),
                }
            }
        }
    }
}

/// How many of `available` bytes belong to a piece with `left` bytes to go.
fn take_len(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

/// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1), given the line up to (without) its LF.
fn parse_chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(WireError::Malformed("chunk-size line not ended by CRLF"));
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(WireError::Malformed("invalid chunk size"));
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0);
        size = (size << 4) | u64::from(v);
    }
    // Extensions are allowed and ignored; anything else after the size is not.
    let ext = line[digits..].trim_ascii_start();
    if !ext.is_empty() && (ext[0] != b';' || ext.iter().any(|&b| b < 0x20 && b != b'\t')) {
        return Err(WireError::Malformed("invalid chunk extension"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &[u8], method: &Method) -> Result<Option<Head>, WireError> {
        parse_head(&mut BytesMut::from(raw), method)
    }

    fn framing_of(raw: &str) -> Result<(Framing, bool), WireError> {
        let h = head_of(raw.as_bytes(), &Method::GET)?.expect("complete head");
        Ok((h.framing, h.keep_alive))
    }

    /// The whole body of `framing` in `wire`, fed in pieces of `step` bytes.
    fn body(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), WireError> {
        let mut dec = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            let eof = fed == wire.len();
            match dec.decode(&mut buf, eof)? {
                Some(BodyEvent::Data(b)) => data.extend_from_slice(&b),
                Some(BodyEvent::Trailers(t)) => trailers = Some(t),
                Some(BodyEvent::End) => return Ok((data, trailers)),
                None => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn request_head_states_its_own_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("gw:1"));
        headers.insert("content-length", HeaderValue::from_static("7"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut injected = Injected::default();
        injected.set(
            HeaderName::from_static("x-scopegate"),
            HeaderValue::from_static("s"),
        );
        injected.set(http::header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &Method::GET,
            "/v1/models?x=1",
            &headers,
            &injected,
        );
        assert_eq!(
            out,
            b"GET /v1/models?x=1 HTTP/1.1\r\nhost: gw:1\r\nx-a: 1\r\nx-a: 2\r\nx-scopegate: s\r\n\r\n"
        );
        out.clear();
        let none = Injected::default();
        encode_request_head(&mut out, &Method::POST, "", &HeaderMap::new(), &none);
        assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn framing_follows_rfc_9112_order() {
        // (head, framing, whether the connection may be reused). TE with CL: chunks win, and the
        // connection is not trusted again.
        let cases: &[(&str, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Framing::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                Framing::Empty,
                true,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
        ];
        for (raw, framing, keep_alive) in cases {
            assert_eq!(
                framing_of(raw).expect(raw),
                (*framing, *keep_alive),
                "{raw:?}"
            );
        }
        let head = head_of(
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            &Method::HEAD,
        )
        .expect("parses")
        .expect("complete");
        assert_eq!(head.framing, Framing::Empty);
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 Odd\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(framing_of(bad), Err(WireError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_heads_are_consumed_exactly() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-b: 1\r\nx-b: 2\r\n\r\nhiNEXT"[..],
        );
        let head = parse_head(&mut buf, &Method::GET)
            .expect("parses")
            .expect("complete");
        assert_eq!(head.response.status(), StatusCode::OK);
        assert_eq!(head.response.headers().get_all("x-b").iter().count(), 2);
        assert!(head.response.headers().get("link").is_none());
        assert_eq!(&buf[..], b"hiNEXT");
    }

    #[test]
    fn partial_heads_wait_and_oversized_heads_are_refused() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
        for cut in 0..raw.len() {
            let mut buf = BytesMut::from(&raw[..cut]);
            assert!(parse_head(&mut buf, &Method::GET)
                .expect("partial is fine")
                .is_none());
            assert_eq!(buf.len(), cut, "a partial head consumes nothing");
        }
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert!(matches!(
            head_of(&big, &Method::GET),
            Err(WireError::Malformed(_))
        ));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            head_of(&many, &Method::GET),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn bodies_decode_the_same_in_any_split() {
        let chunked = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nx-t: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 64] {
            let (data, trailers) = body(Framing::Chunked, chunked, step).expect("chunked");
            assert_eq!(data, b"hello world!");
            assert_eq!(
                trailers.expect("trailers").get("x-t").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
            let (data, trailers) =
                body(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\n", step).expect("no trailers");
            assert_eq!((data.as_slice(), trailers), (&b"abc"[..], None));
            let (data, _) = body(Framing::Length(4), b"abcd", step).expect("length");
            assert_eq!(data, b"abcd");
            let (data, _) = body(Framing::UntilClose, b"to the end", step).expect("close");
            assert_eq!(data, b"to the end");
        }
    }

    #[test]
    fn cut_short_or_malformed_bodies_are_errors() {
        for step in [1, 5, 100] {
            assert!(matches!(
                body(Framing::Length(5), b"abc", step),
                Err(WireError::Truncated)
            ));
            assert!(matches!(
                body(Framing::Chunked, b"5\r\nab", step),
                Err(WireError::Truncated)
            ));
            assert!(matches!(
                body(Framing::Chunked, b"5\r\nabcde\r\n", step),
                Err(WireError::Truncated)
            ));
            for bad in [
                &b"x\r\n"[..],
                b"5\nhello\r\n0\r\n\r\n",
                b"5 junk\r\nhello\r\n0\r\n\r\n",
                b"5\r\nhelloXX0\r\n\r\n",
                b"11111111111111111\r\n",
                b"-1\r\n",
                b"0\r\nbad trailer\r\n\r\n",
            ] {
                assert!(
                    matches!(
                        body(Framing::Chunked, bad, step),
                        Err(WireError::Malformed(_))
                    ),
                    "{:?} was accepted",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 2];
        assert!(matches!(
            body(Framing::Chunked, &long, 4096),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn bytes_after_a_body_stay_in_the_buffer() {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(
            dec.decode(&mut buf, false).expect("data"),
            Some(BodyEvent::Data(Bytes::from_static(b"ok")))
        );
        assert_eq!(
            dec.decode(&mut buf, false).expect("end"),
            Some(BodyEvent::End)
        );
        assert!(dec.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
    }
}
