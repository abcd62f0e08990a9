//! The wire format: frames, their codec, and small helpers both sides use.

use super::*;

/// One frame on a peer connection (postcard-encoded inside a length prefix).
///
/// Public so tests and tools can speak the protocol. `Hello` must stay the
/// first variant with `version` as its first field, and `HelloRefused` the
/// third, in every protocol version: that way any two versions can still
/// read each other's version number and refusal, and log something useful.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Dialer → acceptor, first frame on a connection.
    Hello {
        version: u32,
        cluster_id: String,
        from: NodeId,
        to: NodeId,
        /// The dialer's data-dir incarnation.
        incarnation: u64,
    },
    /// Acceptor → dialer: requests may follow. The acceptor's incarnation,
    /// and what its book says of the dialer's (both already durable).
    HelloOk {
        incarnation: u64,
        verdict: PeerVerdict,
    },
    /// Acceptor → dialer, then the acceptor closes the connection.
    HelloRefused {
        reason: String,
    },
    /// Dialer → acceptor. `id` is unique per dialer and peer.
    Request {
        id: u64,
        body: RequestBody,
    },
    /// Acceptor → dialer, answering the request with the same `id`.
    Response {
        id: u64,
        body: ResponseBody,
    },
    /// Dialer → acceptor liveness check; answered by the transport itself.
    Ping,
    Pong,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// `Rpc::RequestVote` or `Rpc::AppendEntries`.
    Raft(Rpc),
    /// A client request forwarded to this node; opaque to the transport.
    /// (`serde_bytes`: copied as one byte string, not byte by byte, which
    /// matters for a forward of many large values; same bytes on the wire.)
    Forward(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The reply to a `RequestBody::Raft`.
    Raft(Rpc),
    /// The reply to a `RequestBody::Forward` (`serde_bytes` as there).
    Forward(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The receiver will never answer: it dropped the request after it was
    /// handed over (`delivered`), or nobody was there to take it. Lets the
    /// caller fail now instead of waiting out its timeout.
    NoReply { delivered: bool },
}

impl Frame {
    /// The variant's name, for logs (never the contents: they can be large).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::HelloOk { .. } => "HelloOk",
            Frame::HelloRefused { .. } => "HelloRefused",
            Frame::Request { .. } => "Request",
            Frame::Response { .. } => "Response",
            Frame::Ping => "Ping",
            Frame::Pong => "Pong",
        }
    }
}

/// The length-delimited codec both sides use: 4-byte big-endian length,
/// frames of at most [`MAX_FRAME_LEN`] bytes.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// A frame's payload (without the length prefix).
pub fn encode_frame(frame: &Frame) -> Result<Bytes, postcard::Error> {
    postcard::to_allocvec(frame).map(Bytes::from)
}

/// Inverse of [`encode_frame`]. Trailing bytes are tolerated (a later version
/// might append fields); the handshake is what guarantees compatibility.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The version in a hello that does not decode as ours: postcard writes the
/// variant index (0 for `Hello`) then the first field, both as varints.
pub(super) fn peek_hello_version(bytes: &[u8]) -> Option<u32> {
    match postcard::take_from_bytes::<(u32, u32)>(bytes) {
        Ok(((0, version), _)) => Some(version),
        _ => None,
    }
}

pub(super) type FrameReader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
pub(super) type FrameWriter = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

pub(super) fn framed(stream: TcpStream) -> (FrameReader, FrameWriter) {
    let (r, w) = stream.into_split();
    (
        FramedRead::new(r, frame_codec()),
        FramedWrite::new(w, frame_codec()),
    )
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map operation and cannot
    // leave the map inconsistent, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `s` made safe and short for a log line: it may come off the network.
pub(super) fn for_log(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(LOG_STRING_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(LOG_STRING_MAX).is_some() {
        out.push('…');
    }
    out
}
