//! RESP, the Redis serialization protocol: request parsing and reply encoding.
//!
//! # RESP2 and RESP3
//!
//! Clients always *send* the same thing: a command as an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or, from telnet-like tools, an inline
//! line (`GET k\r\n`). The two versions differ only in *replies*. RESP2 has
//! five types (simple string, error, integer, bulk string, array), so a null,
//! a map, a double or a boolean must be dressed as one of them. RESP3 adds
//! types of their own (`_` null, `%` map, `~` set, `,` double, `#` boolean,
//! `=` verbatim string). Every connection starts in RESP2 and a client may
//! switch it with `HELLO 3`, so the version is a per-connection setting passed
//! to [`encode`]; a [`Reply`] is written once and shows in either.
//!
//! # Why hand-written
//!
//! A general RESP decoder parses any frame a server *or* client could send.
//! A server only ever receives arrays of bulk strings and inline lines, and
//! it must defend itself against what a client declares:
//!
//! - **Limits before buffering.** `*<n>` and `$<len>` are checked against
//!   [`Limits`] digit by digit as they arrive, so a client that declares
//!   `$99999999999` gets a protocol error at once instead of making us wait
//!   for, or reserve room for, gigabytes. A header or inline line is never
//!   buffered past a fixed bound while looking for its end.
//! - **Zero copy.** Arguments are [`Bytes`] slices of the read buffer (one
//!   reference-count increment each), not copies.
//! - **Measured.** `benches/resp.rs` compares this parser and encoder with the
//!   `redis-protocol` crate (6.0) on pipelined batches of `SET`/`GET`
//!   commands. When written: parsing ~70 ns per `GET` and ~100 ns per `SET`
//!   with a 100-byte value, against ~150 and ~200 ns for its RESP2 decoder;
//!   encoding 2-3x faster.
//!
//! [`parse_command`] is stateless: it consumes one whole command or nothing,
//! so a command that arrives in pieces is scanned again from its start on
//! each call. Bulk payloads are skipped by their declared length, so a rescan
//! costs one header per argument, never the payload bytes; but a command of
//! very many arguments arriving in many reads costs time quadratic in its
//! size (measured: a 1M-argument command in 16 KiB reads, 1.5 s of CPU). A
//! [`CommandParser`] per connection remembers how far it got and scans each
//! byte once; a server should prefer it.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Limits for one connection's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest declared `$<len>` accepted (Redis' `proto-max-bulk-len`).
    /// Inline words are bounded by `max_inline_len` instead.
    pub max_bulk_len: usize,
    /// Largest declared `*<n>`: arguments in one command.
    pub max_args: usize,
    /// Longest inline command line, without its newline.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 8 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A request that breaks the protocol. The server replies
/// `-ERR Protocol error: ...` and closes the connection, as Redis does: after
/// a framing error the rest of the stream cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol_error(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// Parses one complete command from the front of `buf`, consuming its bytes.
///
/// - `Ok(Some(args))`: one command; `args` are zero-copy slices of `buf`'s
///   storage. An empty `args` (`*0`, `*-1` or a blank inline line) is a
///   command to ignore.
/// - `Ok(None)`: the command is not complete yet; nothing was consumed.
/// - `Err(_)`: the request is malformed or breaks `limits`; the connection
///   must be closed (what was consumed is then unspecified).
///
/// A first byte of `*` starts a multibulk command; any other byte an inline
/// one, as in Redis' `processInputBuffer`.
pub fn parse_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    parse(buf, limits, &mut Progress::Start)
}

/// [`parse_command`] for one connection, remembering across calls how far an
/// incomplete command has been checked, so that each byte is scanned once
/// however many reads the command takes to arrive (see the module docs).
///
/// Every call must be given the same buffer, only appended to since the
/// previous call, as a read loop does. Results are the same as
/// [`parse_command`]'s.
#[derive(Debug, Clone, Default)]
pub struct CommandParser {
    limits: Limits,
    progress: Progress,
}

impl CommandParser {
    pub fn new(limits: Limits) -> Self {
        CommandParser {
            limits,
            progress: Progress::Start,
        }
    }

    /// As [`parse_command`], resuming where the previous call stopped.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse(buf, &self.limits, &mut self.progress)
    }
}

/// How far the command at the front of the buffer has been checked. Offsets
/// stay valid because an incomplete command is never consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Progress {
    /// Nothing known (or not even the `*<n>` header is complete).
    #[default]
    Start,
    /// An inline line with no newline in its first `searched` bytes.
    Inline { searched: usize },
    /// A multibulk command of `argc` arguments, whose first `done` arguments
    /// are complete and valid and end at `next`.
    Multibulk {
        argc: usize,
        done: usize,
        next: usize,
    },
}

fn parse(
    buf: &mut BytesMut,
    limits: &Limits,
    progress: &mut Progress,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, progress),
        Some(_) => parse_inline(buf, limits, progress),
    }
}

// ---------------------------------------------------------------------------
// Multibulk: `*<n>\r\n` then n times `$<len>\r\n<len bytes>\r\n`.
// ---------------------------------------------------------------------------

/// How many argument ranges the first scan remembers, so that the usual
/// short command needs one scan, not two, and no allocation but its result.
const REMEMBERED_ARGS: usize = 8;

fn parse_multibulk(
    buf: &mut BytesMut,
    limits: &Limits,
    progress: &mut Progress,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // First scan: validate and find the end, allocating nothing, so an
    // incomplete command (the common case while a large one streams in)
    // costs no allocation however many times it is retried.
    let mut remembered = [(0, 0); REMEMBERED_ARGS];
    let mut seen = 0;
    let scan = scan_multibulk(buf, limits, *progress, |range| {
        if let Some(slot) = remembered.get_mut(seen) {
            *slot = (range.start, range.end);
        }
        seen += 1;
    })?;
    let (len, argc) = match scan {
        Scan::Complete { len, argc } => (len, argc),
        Scan::Incomplete(stopped) => {
            *progress = stopped;
            return Ok(None);
        }
    };
    *progress = Progress::Start;
    // Only now take the bytes: `freeze` lets every argument share them.
    let mut frame = buf.split_to(len).freeze();
    let mut args = Vec::with_capacity(argc);
    // All arguments were seen by this scan unless it resumed a previous one.
    match remembered.get(..seen).filter(|_| seen == argc) {
        Some([rest @ .., (start, end)]) => {
            args.extend(rest.iter().map(|&(a, b)| frame.slice(a..b)));
            // The last argument is the frame itself, narrowed: each slice
            // costs an atomic increment now and a decrement when dropped,
            // and refcounting is most of the cost of parsing a command.
            frame.truncate(*end);
            frame.advance(*start);
            args.push(frame);
        }
        Some([]) => {}
        // Too many arguments to remember, or some seen by an earlier call:
        // scan the (now complete and already validated) frame again, once.
        None => {
            let push = |range| args.push(frame.slice(range));
            scan_multibulk(&frame[..], limits, Progress::Start, push)?;
        }
    }
    Ok(Some(args))
}

/// How far [`scan_multibulk`] got.
#[derive(Debug, Clone, Copy)]
enum Scan {
    /// The command is `len` bytes long and has `argc` arguments.
    Complete { len: usize, argc: usize },
    /// The command is incomplete; resume from here.
    Incomplete(Progress),
}

/// Walks the multibulk command at the front of `buf` from `from`, calling
/// `on_arg` with the byte range of each argument it passes.
fn scan_multibulk(
    buf: &[u8],
    limits: &Limits,
    from: Progress,
    mut on_arg: impl FnMut(Range<usize>),
) -> Result<Scan, ProtocolError> {
    let (argc, mut done, mut next) = match from {
        Progress::Multibulk { argc, done, next } => (argc, done, next),
        _ => match read_arg_count(buf, limits)? {
            Some((argc, next)) => (argc, 0, next),
            None => return Ok(Scan::Incomplete(Progress::Start)),
        },
    };
    while done < argc {
        let Some((range, after)) = read_bulk(buf, next, limits)? else {
            return Ok(Scan::Incomplete(Progress::Multibulk { argc, done, next }));
        };
        on_arg(range);
        done += 1;
        next = after;
    }
    Ok(Scan::Complete { len: next, argc })
}

/// Reads `*<n>\r\n` at the front of `buf`: the argument count and where the
/// first argument starts.
fn read_arg_count(buf: &[u8], limits: &Limits) -> Result<Option<(usize, usize)>, ProtocolError> {
    const INVALID: &str = "invalid multibulk length";
    let header = header_line(buf, 1, INVALID)?;
    let count = match parse_i64(header.digits) {
        // `*-1` is a null array and `*0` an empty one: a command to ignore.
        Some(-1) => Some(0),
        Some(n) => usize::try_from(n).ok().filter(|&n| n <= limits.max_args),
        None => None,
    };
    match (count, header.next) {
        (Some(count), Some(next)) => Ok(Some((count, next))),
        (Some(_), None) => Ok(None),
        // Nothing yet, or the `-` of `-1`.
        (None, None) if matches!(header.digits, b"" | b"-") => Ok(None),
        (None, _) => Err(protocol_error(INVALID)),
    }
}

/// Reads one `$<len>\r\n<data>\r\n` at `pos`: the data's range and where the
/// next argument starts.
fn read_bulk(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(Range<usize>, usize)>, ProtocolError> {
    const INVALID: &str = "invalid bulk length";
    match buf.get(pos) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(other) => {
            let got = other.escape_ascii();
            return Err(protocol_error(format!("expected '$', got '{got}'")));
        }
    }
    let header = header_line(buf, pos + 1, INVALID)?;
    let len = parse_i64(header.digits)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= limits.max_bulk_len);
    let (len, start) = match (len, header.next) {
        (Some(len), Some(start)) => (len, start),
        (Some(_), None) => return Ok(None),
        (None, None) if header.digits.is_empty() => return Ok(None),
        (None, _) => return Err(protocol_error(INVALID)),
    };
    let end = start
        .checked_add(len)
        .ok_or_else(|| protocol_error(INVALID))?;
    match buf.get(end..end.saturating_add(2)) {
        Some(b"\r\n") => Ok(Some((start..end, end + 2))),
        Some(_) => Err(protocol_error("expected CRLF after bulk data")),
        None => Ok(None),
    }
}

/// The longest header content looked at: `-9223372036854775808` has 20
/// bytes, so anything longer without a CR is invalid whatever follows.
const MAX_HEADER_DIGITS: usize = 21;

/// A `*<n>` or `$<len>` header line, complete or not.
struct Header<'a> {
    /// The bytes after the type byte, up to the CR or what has arrived.
    digits: &'a [u8],
    /// Where the next part starts, once the CRLF has arrived.
    next: Option<usize>,
}

/// Reads the header line whose digits start at `start`.
///
/// Callers judge the digits even before the CRLF arrives: every prefix of a
/// valid length is itself a valid length no larger than it, so a header that
/// is already too large or not a number (`$99999999999`, `$abc`) is refused
/// at once. Because a header is never looked at past [`MAX_HEADER_DIGITS`],
/// it cannot make us buffer: it is refused as invalid instead (Redis waits
/// for 64 KiB and then says "too big mbulk count string").
fn header_line<'a>(
    buf: &'a [u8],
    start: usize,
    invalid: &str,
) -> Result<Header<'a>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = rest.get(..MAX_HEADER_DIGITS).unwrap_or(rest);
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return Ok(Header {
            digits: window,
            next: None,
        });
    };
    let digits = window.get(..cr).unwrap_or_default();
    match rest.get(cr + 1) {
        None => Ok(Header { digits, next: None }),
        Some(b'\n') => Ok(Header {
            digits,
            next: Some(start + cr + 2),
        }),
        // A lone CR cannot be part of a number.
        Some(_) => Err(protocol_error(invalid)),
    }
}

/// Parses a decimal integer strictly, as Redis' `string2ll`: an optional
/// `-`, then digits with no leading zero (except `0` itself), nothing else.
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate downwards so that i64::MIN parses without overflow.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

// ---------------------------------------------------------------------------
// Inline: one line of words, as typed into telnet.
// ---------------------------------------------------------------------------

/// Parses an inline command: the line up to `\n` (a trailing `\r` dropped),
/// split into words as Redis' `sdssplitargs` does (see [`split_inline`]).
fn parse_inline(
    buf: &mut BytesMut,
    limits: &Limits,
    progress: &mut Progress,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let searched = match *progress {
        Progress::Inline { searched } => searched,
        _ => 0,
    };
    // Search only as far as the limit, and judge the line by its own length
    // whether or not its newline has arrived, so that the outcome does not
    // depend on how the input was split into reads.
    let end = buf.len().min(limits.max_inline_len.saturating_add(1));
    let window = buf.get(searched..end).unwrap_or_default();
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_len {
            return Err(protocol_error("too big inline request"));
        }
        *progress = Progress::Inline { searched: end };
        return Ok(None);
    };
    *progress = Progress::Start;
    let newline = searched + newline;
    let line = buf.split_to(newline + 1).freeze();
    let mut content = line.slice(..newline);
    if content.last() == Some(&b'\r') {
        content.truncate(newline - 1);
    }
    split_inline(&content).map(Some)
}

/// Whitespace between inline words: C's `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits an inline line into words like Redis' `sdssplitargs`: words are
/// separated by whitespace; `"..."` quotes may hold spaces and the escapes
/// `\n \r \t \b \a \\ \" \xHH`; `'...'` quotes may hold `\'`; a closing quote
/// must be followed by whitespace or the end of the line; an unclosed quote
/// is an error. Plain words are zero-copy slices of `line`; only words with
/// quotes are copied (to remove the quotes and escapes).
///
/// Differences, for bytes no client sends: NUL is an ordinary byte here,
/// where C stops at it; `\v` and `\f` end a word as well as separate words.
fn split_inline(line: &Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut pos = 0;
    while let Some(rest) = line.get(pos..) {
        let Some(start) = rest.iter().position(|&b| !is_space(b)) else {
            break;
        };
        let start = pos + start;
        let word = line.get(start..).unwrap_or_default();
        let plain = word
            .iter()
            .position(|&b| is_space(b) || b == b'"' || b == b'\'')
            .unwrap_or(word.len());
        match word.get(plain) {
            Some(b'"' | b'\'') => {
                let (arg, used) = unquote_word(word, plain)?;
                args.push(Bytes::from(arg));
                pos = start + used;
            }
            _ => {
                args.push(line.slice(start..start + plain));
                pos = start + plain;
            }
        }
    }
    Ok(args)
}

fn unbalanced() -> ProtocolError {
    protocol_error("unbalanced quotes in request")
}

/// Builds a word that contains quotes; `word[..plain]` is its unquoted
/// prefix and `word[plain]` the first quote. Returns the word and the bytes
/// of `word` it used. The word ends at its first closing quote, as in Redis.
fn unquote_word(word: &[u8], plain: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut out = word.get(..plain).unwrap_or_default().to_vec();
    let mut pos = plain + 1;
    let double = word.get(plain) == Some(&b'"');
    loop {
        let (byte, used) = match (word.get(pos), word.get(pos + 1)) {
            (None, _) => return Err(unbalanced()),
            (Some(b'"'), next) if double => return closing_quote(out, pos, next),
            (Some(b'\''), next) if !double => return closing_quote(out, pos, next),
            (Some(b'\\'), Some(_)) if double => unescape(word, pos),
            (Some(b'\\'), Some(b'\'')) => (b'\'', 2),
            (Some(&b), _) => (b, 1),
        };
        out.push(byte);
        pos += used;
    }
}

/// A closing quote must end the word: whitespace or the end of line follows.
fn closing_quote(
    out: Vec<u8>,
    pos: usize,
    next: Option<&u8>,
) -> Result<(Vec<u8>, usize), ProtocolError> {
    match next {
        Some(&b) if !is_space(b) => Err(unbalanced()),
        _ => Ok((out, pos + 1)),
    }
}

/// Decodes the escape at `word[pos]` (a backslash) inside double quotes.
/// Returns the byte and how many input bytes it took.
fn unescape(word: &[u8], pos: usize) -> (u8, usize) {
    let hex = |i: usize| word.get(pos + i).and_then(|&b| char::from(b).to_digit(16));
    match (word.get(pos + 1), hex(2), hex(3)) {
        (Some(b'x'), Some(hi), Some(lo)) => ((hi * 16 + lo) as u8, 4),
        (Some(b'n'), ..) => (b'\n', 2),
        (Some(b'r'), ..) => (b'\r', 2),
        (Some(b't'), ..) => (b'\t', 2),
        (Some(b'b'), ..) => (0x08, 2),
        (Some(b'a'), ..) => (0x07, 2),
        (Some(&other), ..) => (other, 2),
        // A trailing backslash stands for itself (the quote is then unclosed).
        (None, ..) => (b'\\', 1),
    }
}

// ---------------------------------------------------------------------------
// Replies.
// ---------------------------------------------------------------------------

/// The reply encoding of a connection: RESP2 until the client sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// A reply, independent of the protocol version it will be written in.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`. Must not contain CR or LF (they are written as spaces).
    Simple(String),
    /// The full text after `-`, starting with the error code, e.g.
    /// `"ERR unknown command 'FOO'"` or `"CLUSTERDOWN no leader"`. CR and LF
    /// are written as spaces, as Redis does, so that a client-supplied name
    /// quoted in a message cannot break the framing.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// A missing value: RESP2 `$-1`, RESP3 `_`.
    Nil,
    Array(Vec<Reply>),
    /// A missing array: RESP2 `*-1`, RESP3 `_`.
    NilArray,
    /// RESP3 `%`; RESP2 a flat array `k1 v1 k2 v2 ...`.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`; RESP2 an array.
    Set(Vec<Reply>),
    /// RESP3 `,`; RESP2 a bulk string of the same text.
    Double(f64),
    /// RESP3 `#t`/`#f`; RESP2 the integer 1 or 0.
    Bool(bool),
    /// RESP3 `=` with a 3-byte format such as `txt` or `mkd`; RESP2 a bulk
    /// string of `text` alone.
    Verbatim {
        format: [u8; 3],
        text: Bytes,
    },
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    /// An error with the generic `ERR` code: `Reply::error("no such key")`
    /// is `-ERR no such key`. A message that already starts with `"ERR "` is
    /// kept as it is, so `ERR` is never doubled. For another code, such as
    /// `CLUSTERDOWN`, build [`Reply::Error`] directly.
    pub fn error(msg: impl Into<String>) -> Reply {
        let msg = msg.into();
        if msg.starts_with("ERR ") {
            Reply::Error(msg)
        } else {
            Reply::Error(format!("ERR {msg}"))
        }
    }
}

/// Appends `reply` to `out` in the wire format of `protocol`.
pub fn encode(reply: &Reply, protocol: Protocol, out: &mut BytesMut) {
    let resp3 = protocol == Protocol::Resp3;
    match reply {
        Reply::Simple(text) => put_line(out, b'+', text.as_bytes()),
        Reply::Error(text) => put_line(out, b'-', text.as_bytes()),
        Reply::Integer(n) => put_number_line(out, b':', *n),
        Reply::Bulk(data) => put_bulk(out, data),
        Reply::Nil if resp3 => out.put_slice(b"_\r\n"),
        Reply::Nil => out.put_slice(b"$-1\r\n"),
        Reply::NilArray if resp3 => out.put_slice(b"_\r\n"),
        Reply::NilArray => out.put_slice(b"*-1\r\n"),
        Reply::Array(items) => put_items(out, b'*', items, protocol),
        Reply::Set(items) => put_items(out, if resp3 { b'~' } else { b'*' }, items, protocol),
        Reply::Map(pairs) => put_map(out, pairs, protocol),
        Reply::Double(value) => put_double(out, *value, resp3),
        Reply::Bool(value) if resp3 => out.put_slice(if *value { b"#t\r\n" } else { b"#f\r\n" }),
        Reply::Bool(value) => put_number_line(out, b':', i64::from(*value)),
        Reply::Verbatim { format, text } if resp3 => put_verbatim(out, format, text),
        Reply::Verbatim { text, .. } => put_bulk(out, text),
    }
}

/// `<tag><text>\r\n` for simple strings and errors, whose text cannot hold
/// CR or LF: those become spaces rather than break the framing.
fn put_line(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(tag);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.put_slice(text);
    }
    out.put_slice(b"\r\n");
}

/// `<tag><n>\r\n`: integers and every length header.
fn put_number_line(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    put_decimal(out, n);
    out.put_slice(b"\r\n");
}

/// `<tag><len>\r\n` for a length that comes from a Rust collection.
fn put_len_line(out: &mut BytesMut, tag: u8, len: usize) {
    put_number_line(out, tag, i64::try_from(len).unwrap_or(i64::MAX));
}

/// Writes `n` in decimal without going through `fmt`, which is measurably
/// slower for the lengths written in front of every bulk string.
fn put_decimal(out: &mut BytesMut, n: i64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    let mut rest = n.unsigned_abs();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        start -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(digits.get(start..).unwrap_or_default());
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    put_len_line(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

fn put_items(out: &mut BytesMut, tag: u8, items: &[Reply], protocol: Protocol) {
    put_len_line(out, tag, items.len());
    for item in items {
        encode(item, protocol, out);
    }
}

fn put_map(out: &mut BytesMut, pairs: &[(Reply, Reply)], protocol: Protocol) {
    match protocol {
        Protocol::Resp3 => put_len_line(out, b'%', pairs.len()),
        Protocol::Resp2 => put_len_line(out, b'*', pairs.len().saturating_mul(2)),
    }
    for (key, value) in pairs {
        encode(key, protocol, out);
        encode(value, protocol, out);
    }
}

/// RESP3 `,<text>\r\n`, RESP2 the same text as a bulk string. The text is
/// what Redis writes: `inf`, `-inf`, `nan`, an integer without a fraction
/// (`3`), otherwise the shortest text that reads back as the same double,
/// with an exponent (`1e300`) when plain digits would be long.
fn put_double(out: &mut BytesMut, value: f64, resp3: bool) {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = match value {
        v if v.is_nan() => write!(text, "nan"),
        v if v.is_infinite() => write!(text, "{}", if v > 0.0 { "inf" } else { "-inf" }),
        v if v == 0.0 || (1e-5..1e17).contains(&v.abs()) => write!(text, "{v}"),
        v => write!(text, "{v:e}"),
    };
    if resp3 {
        put_line(out, b',', text.as_bytes());
    } else {
        put_bulk(out, text.as_bytes());
    }
}

/// RESP3 `=<len>\r\n<fmt>:<text>\r\n`; `len` counts the 4-byte `fmt:`.
fn put_verbatim(out: &mut BytesMut, format: &[u8; 3], text: &[u8]) {
    out.reserve(text.len() + 20);
    put_len_line(out, b'=', text.len() + 4);
    out.put_slice(format);
    out.put_u8(b':');
    out.put_slice(text);
    out.put_slice(b"\r\n");
}
