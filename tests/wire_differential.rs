//! Differential test: scopegate's own upstream HTTP/1.1 codec (`upstream::wire::codec`) and hyper's
//! client read the same response bytes; they must agree on the status, the fields, the body and the
//! trailers, and on which responses are broken. Where scopegate is deliberately stricter than hyper the
//! case says so and checks scopegate's answer. hyper reads through a real client connection over an
//! in-memory duplex pipe; the codec has no I/O of its own, so it is fed the same bytes directly.

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use scopegate::upstream::wire::codec::{parse_head, BodyDecoder, BodyEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, PartialEq)]
enum Outcome {
    Complete {
        status: u16,
        fields: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        trailers: Vec<(String, Vec<u8>)>,
    },
    /// No response: the head was broken or cut short.
    HeadFailed,
    /// A status arrived, then the body broke or was cut short.
    BodyFailed { status: u16 },
}

fn fields(map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

async fn hyper_reads(method: &Method, wire: &'static [u8]) -> Outcome {
    let (client_io, mut server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match server_io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = server_io.write_all(wire).await;
        let _ = server_io.shutdown().await;
        while server_io.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
    });
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .expect("handshake over a pipe");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "upstream")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let Ok(resp) = send.send_request(req).await else {
        return Outcome::HeadFailed;
    };
    let status = resp.status().as_u16();
    let head_fields = fields(resp.headers());
    let mut body = resp.into_body();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Outcome::BodyFailed { status };
        };
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = fields(&t);
                }
            }
        }
    }
    Outcome::Complete {
        status,
        fields: head_fields,
        body: data,
        trailers,
    }
}

fn codec_reads(method: &Method, wire: &[u8]) -> Outcome {
    let mut buf = BytesMut::from(wire);
    let head = match parse_head(&mut buf, method) {
        Ok(Some(h)) => h,
        Ok(None) | Err(_) => return Outcome::HeadFailed,
    };
    let status = head.response.status().as_u16();
    let mut decoder = BodyDecoder::new(head.framing);
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    loop {
        // All bytes are in the buffer: asking for more means the upstream closed.
        match decoder.decode(&mut buf, true) {
            Ok(Some(BodyEvent::Data(d))) => data.extend_from_slice(&d),
            Ok(Some(BodyEvent::Trailers(t))) => trailers = fields(&t),
            Ok(Some(BodyEvent::End)) => break,
            Ok(None) | Err(_) => return Outcome::BodyFailed { status },
        }
    }
    Outcome::Complete {
        status,
        fields: fields(head.response.headers()),
        body: data,
        trailers,
    }
}

/// Responses both must read alike (a GET unless the name says HEAD). Reuse of the connection after a
/// response (`keep_alive`) is not compared: hyper does not expose it; `codec`'s unit tests check it.
const AGREED: &[(&str, &[u8])] = &[
    ("length", b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"),
    ("empty length", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
    ("repeated equal length", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok"),
    ("chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    ("chunked with extensions", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b;c\r\nhello\r\n0;z\r\n\r\n"),
    ("chunked upper-case hex", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"),
    ("chunked with trailers", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n2\r\nok\r\n0\r\nx-sum: 42\r\n\r\n"),
    ("gzip then chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n"),
    ("no framing reads to the close", b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
    ("http/1.0 to the close", b"HTTP/1.0 200 OK\r\n\r\nold style"),
    ("204 ignores length", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("304", b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"),
    ("HEAD with length", b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"),
    ("100 continue first", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ("103 early hints first", b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"),
    ("odd reason phrase", b"HTTP/1.1 418 I'm a teapot, really\r\ncontent-length: 0\r\n\r\n"),
    ("no reason phrase", b"HTTP/1.1 500 \r\ncontent-length: 0\r\n\r\n"),
    ("repeated fields keep order", b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nx: 1\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n"),
    ("obs-text value", b"HTTP/1.1 200 OK\r\nx-name: caf\xe9\r\ncontent-length: 0\r\n\r\n"),
    ("value whitespace trimmed", b"HTTP/1.1 200 OK\r\nx:   padded   \r\ncontent-length: 0\r\n\r\n"),
    ("bare LF line ends", b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"),
    ("length cut short", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"),
    ("chunk cut short", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"),
    ("last chunk missing", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    ("head cut short", b"HTTP/1.1 200 OK\r\ncontent-le"),
    ("nothing at all", b""),
    ("not http", b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02"),
    ("bad status", b"HTTP/1.1 2x0 OK\r\n\r\n"),
    ("conflicting lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
    ("non-numeric length", b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n"),
    ("negative length", b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"),
    ("space in field name", b"HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 0\r\n\r\n"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nx: a\r\n b\r\ncontent-length: 0\r\n\r\n"),
    ("bad chunk size", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
    ("chunk data without CRLF", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n"),
    ("chunk size overflow", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n"),
    ("te and length: chunks win", b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("chunked not final", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\nabc"),
    ("te in http/1.0", b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("chunk size line with bare LF", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n"),
    ("space before chunk extension", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 ;x\r\nok\r\n0\r\n\r\n"),
];

/// Where scopegate is stricter than hyper's client, on purpose.
#[tokio::test]
async fn the_codec_refuses_what_a_proxy_must_not_pass_on() {
    // A 101 to a request that asked for no upgrade: hyper hands it over (its caller decides); passed
    // downstream it would switch a client's connection to a protocol the client never asked for.
    let wire: &'static [u8] = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
    assert!(matches!(
        hyper_reads(&Method::GET, wire).await,
        Outcome::Complete { status: 101, .. }
    ));
    assert_eq!(codec_reads(&Method::GET, wire), Outcome::HeadFailed);
}

#[tokio::test]
async fn the_codec_reads_responses_as_hyper_does() {
    for (name, wire) in AGREED {
        let method = if name.starts_with("HEAD") {
            Method::HEAD
        } else {
            Method::GET
        };
        let ours = codec_reads(&method, wire);
        let theirs = hyper_reads(&method, wire).await;
        assert_eq!(ours, theirs, "{name}: {:?}", String::from_utf8_lossy(wire));
    }
}
