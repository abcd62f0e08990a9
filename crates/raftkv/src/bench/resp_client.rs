//! A minimal RESP client for the load generator: a command encoder, a reply
//! parser (RESP2 and the RESP3 types a server may send) and one connection
//! with one request in flight.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest bulk string or aggregate the parser accepts.
const MAX_LEN: i64 = 512 * 1024 * 1024;

/// A parsed reply. Only what the load generator looks at is kept in detail.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+...`, `,...`, `#t`, `(...`: a one-line value.
    Simple(Vec<u8>),
    /// `-...` or `!<len>`: the error text.
    Error(String),
    Integer(i64),
    /// `$<len>` or `=<len>`; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*`, `~`, `>`, and `%` (flattened to key, value, ...); `None` for `*-1`.
    Array(Option<Vec<Reply>>),
    /// RESP3 `_`.
    Null,
}

impl Reply {
    /// True for a missing value (`$-1`, `*-1`, `_`).
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Bulk(None) | Reply::Array(None) | Reply::Null)
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`: `Ok(None)` if it is not complete
/// yet, else the reply and how many bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], pos + end + 2))
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(text)))
}

fn length(text: &[u8]) -> Result<Option<usize>, String> {
    match number(text)? {
        -1 => Ok(None),
        n if (0..=MAX_LEN).contains(&n) => Ok(Some(n as usize)),
        n => Err(format!("bad length {n}")),
    }
}

/// A length-prefixed blob after its header line: `None` if incomplete.
fn blob(buf: &[u8], pos: usize, len: usize) -> Result<Option<(Vec<u8>, usize)>, String> {
    if buf.len() < pos + len + 2 {
        return Ok(None);
    }
    if &buf[pos + len..pos + len + 2] != b"\r\n" {
        return Err("bulk string not followed by CRLF".into());
    }
    Ok(Some((buf[pos..pos + len].to_vec(), pos + len + 2)))
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if depth > 32 {
        return Err("reply nested too deeply".into());
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, pos + 1) else {
        return Ok(None);
    };
    let reply = match tag {
        b'+' | b',' | b'#' | b'(' => (Reply::Simple(text.to_vec()), next),
        b'-' => (
            Reply::Error(String::from_utf8_lossy(text).into_owned()),
            next,
        ),
        b':' => (Reply::Integer(number(text)?), next),
        b'_' => (Reply::Null, next),
        b'$' | b'=' | b'!' => match length(text)? {
            None => (Reply::Bulk(None), next),
            Some(len) => match blob(buf, next, len)? {
                None => return Ok(None),
                Some((data, after)) if tag == b'!' => (
                    Reply::Error(String::from_utf8_lossy(&data).into_owned()),
                    after,
                ),
                Some((data, after)) => (Reply::Bulk(Some(data)), after),
            },
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => match length(text)? {
            None => (Reply::Array(None), next),
            Some(n) => {
                let count = if matches!(tag, b'%' | b'|') { n * 2 } else { n };
                let mut items = Vec::with_capacity(count.min(1024));
                let mut at = next;
                for _ in 0..count {
                    match parse_at(buf, at, depth + 1)? {
                        None => return Ok(None),
                        Some((item, after)) => {
                            items.push(item);
                            at = after;
                        }
                    }
                }
                if tag == b'|' {
                    // Attributes precede the real reply: skip them.
                    return parse_at(buf, at, depth + 1);
                }
                (Reply::Array(Some(items)), at)
            }
        },
        other => return Err(format!("unknown reply type byte 0x{other:02x}")),
    };
    Ok(Some(reply))
}

/// One client connection with one request in flight.
pub struct RespConn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

impl RespConn {
    pub async fn connect(addr: &str) -> io::Result<RespConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: Vec::with_capacity(1024),
        })
    }

    /// Sends one command and waits for its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.wbuf.clear();
        encode_command(&mut self.wbuf, args);
        self.stream.write_all(&self.wbuf).await?;
        loop {
            match parse_reply(&self.rbuf) {
                Ok(Some((reply, used))) => {
                    self.rbuf.advance(used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("protocol error: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn full(input: &[u8]) -> Reply {
        let (reply, used) = parse_reply(input).unwrap().unwrap();
        assert_eq!(used, input.len(), "consumed all of {input:?}");
        // Every strict prefix is incomplete, never an error.
        for cut in 0..input.len() {
            assert_eq!(parse_reply(&input[..cut]).unwrap(), None, "prefix {cut}");
        }
        reply
    }

    #[test]
    fn parses_each_type() {
        assert_eq!(full(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(
            full(b"-ERR wrong\r\n"),
            Reply::Error("ERR wrong".to_string())
        );
        assert_eq!(full(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(full(b"$3\r\nfoo\r\n"), Reply::Bulk(Some(b"foo".to_vec())));
        assert_eq!(full(b"$0\r\n\r\n"), Reply::Bulk(Some(Vec::new())));
        assert!(full(b"$-1\r\n").is_nil());
        assert!(full(b"*-1\r\n").is_nil());
        assert!(full(b"_\r\n").is_nil());
        assert_eq!(
            full(b"*2\r\n:1\r\n$1\r\na\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(b"a".to_vec()))
            ]))
        );
        assert_eq!(
            full(b"%1\r\n+k\r\n:2\r\n"),
            Reply::Array(Some(vec![Reply::Simple(b"k".to_vec()), Reply::Integer(2)]))
        );
        assert_eq!(full(b"!3\r\nbad\r\n"), Reply::Error("bad".into()));
        assert_eq!(full(b"|1\r\n+a\r\n+b\r\n:7\r\n"), Reply::Integer(7));
    }

    #[test]
    fn leaves_following_bytes() {
        let (reply, used) = parse_reply(b"+OK\r\n:1\r\n").unwrap().unwrap();
        assert_eq!(reply, Reply::Simple(b"OK".to_vec()));
        assert_eq!(used, 5);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b"$x\r\n").is_err());
        assert!(parse_reply(b"$-5\r\n").is_err());
        assert!(parse_reply(b"$1\r\nab\r\n").is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"vv"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }
}
