//! A minimal etcd v3 client for the load generator: JSON over HTTP/1.1
//! keep-alive to etcd's gRPC gateway (`POST /v3/kv/put`, `POST /v3/kv/range`),
//! so no gRPC dependency is needed. Keys and values are base64 in the JSON,
//! as the gateway expects for `bytes` fields.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, appended to `out`.
pub fn base64_encode(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63]);
        out.push(B64[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63]
        } else {
            b'='
        });
    }
}

/// A parsed HTTP response.
#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close`.
    pub close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// Parses one HTTP/1.1 response from the start of `buf`: `Ok(None)` if it is
/// not complete yet, else the response and how many bytes it took. Handles
/// `Content-Length` and `Transfer-Encoding: chunked` bodies.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(bad("response head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if n > MAX_BODY {
                return Err(format!("body too large ({n} bytes)"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body_start = head_end + 4;
    if chunked {
        let mut body = Vec::new();
        let mut at = body_start;
        loop {
            let Some(end) = find(&buf[at..], b"\r\n") else {
                return Ok(None);
            };
            let size_text = std::str::from_utf8(&buf[at..at + end]).map_err(|_| bad("chunk"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            at += end + 2;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let Some(end) = find(&buf[at..], b"\r\n") else {
                        return Ok(None);
                    };
                    at += end + 2;
                    if end == 0 {
                        let response = Response {
                            status,
                            body,
                            close,
                        };
                        return Ok(Some((response, at)));
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("chunked body too large"));
            }
            if buf.len() < at + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    let len = match content_length {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        // Body delimited by the end of the connection: not used by etcd.
        None => return Err(format!("status {status} without Content-Length")),
    };
    if buf.len() < body_start + len {
        return Ok(None);
    }
    let response = Response {
        status,
        body: buf[body_start..body_start + len].to_vec(),
        close,
    };
    Ok(Some((response, body_start + len)))
}

/// One keep-alive connection to one etcd member's client URL.
pub struct EtcdConn {
    stream: TcpStream,
    host: String,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    body: Vec<u8>,
    /// The server asked to close: the caller must reconnect.
    pub closed: bool,
}

impl EtcdConn {
    pub async fn connect(addr: &str) -> io::Result<EtcdConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(EtcdConn {
            stream,
            host: addr.to_string(),
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: Vec::with_capacity(1024),
            body: Vec::with_capacity(512),
            closed: false,
        })
    }

    /// `PUT key value`: `/v3/kv/put`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<Response> {
        self.body.clear();
        self.body.extend_from_slice(b"{\"key\":\"");
        base64_encode(key, &mut self.body);
        self.body.extend_from_slice(b"\",\"value\":\"");
        base64_encode(value, &mut self.body);
        self.body.extend_from_slice(b"\"}");
        self.post("/v3/kv/put").await
    }

    /// A linearizable `GET key`: `/v3/kv/range` (etcd's default is linearizable).
    pub async fn range(&mut self, key: &[u8]) -> io::Result<Response> {
        self.body.clear();
        self.body.extend_from_slice(b"{\"key\":\"");
        base64_encode(key, &mut self.body);
        self.body.extend_from_slice(b"\"}");
        self.post("/v3/kv/range").await
    }

    /// `/v3/maintenance/status`: a cheap reachability check.
    pub async fn status(&mut self) -> io::Result<Response> {
        self.body.clear();
        self.body.extend_from_slice(b"{}");
        self.post("/v3/maintenance/status").await
    }

    async fn post(&mut self, path: &str) -> io::Result<Response> {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                self.body.len()
            )
            .as_bytes(),
        );
        self.wbuf.extend_from_slice(&self.body);
        self.stream.write_all(&self.wbuf).await?;
        loop {
            match parse_response(&self.rbuf) {
                Ok(Some((response, used))) => {
                    self.rbuf.advance(used);
                    self.closed = response.close;
                    return Ok(response);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("HTTP: {e}"),
                    ))
                }
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }
}

/// True if a `/v3/kv/range` response body holds at least one key.
pub fn range_found(body: &[u8]) -> bool {
    find(body, b"\"kvs\"").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(data: &[u8]) -> String {
        let mut out = Vec::new();
        base64_encode(data, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg==");
        assert_eq!(b64(b"fooba"), "Zm9vYmE=");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn parses_content_length_response() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1";
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
        assert!(!r.close);
        assert_eq!(used, raw.len() - "HTTP/1.1".len());
        for cut in 0..used {
            assert_eq!(parse_response(&raw[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn parses_chunked_response() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"abcde");
        assert!(r.close);
        assert_eq!(used, raw.len());
        for cut in 0..used {
            assert_eq!(parse_response(&raw[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn detects_found_keys() {
        assert!(range_found(
            br#"{"header":{},"kvs":[{"key":"Zm9v"}],"count":"1"}"#
        ));
        assert!(!range_found(br#"{"header":{"revision":"2"}}"#));
    }
}
