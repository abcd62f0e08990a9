//! A TCP proxy in front of every node's peer port, so a test can partition
//! real processes without root (no iptables, no network namespaces).
//!
//! Each node listens for peers on its own port (`--peer-listen`), while the
//! shared `--cluster` list names the proxy's front ports: every peer
//! connection thus passes through [`Network`]. A connection is accepted on
//! the front port of the node it is *for*; which node it comes *from* is read
//! from the first frame, the peer handshake's `Hello { from, to, .. }`
//! (`raftkv::peer`): the dialer always speaks first, and a connection carries
//! traffic of exactly one pair for its whole life. The proxy decodes the
//! hello with the crate's own codec and forwards it unchanged.
//!
//! A cut between two nodes affects every connection of the pair, in both
//! directions (requests and replies), in one of two ways ([`Cut`]):
//! - `Blackhole`: bytes stop flowing but connections stay open, like a
//!   router dropping packets. The sender sees silence (its pings go
//!   unanswered) rather than an error; bytes already read are held, not
//!   lost, and delivered late if the connection survives the heal, as TCP
//!   would after a long outage.
//! - `Reset`: open connections are closed at once and new ones are closed
//!   right after their hello, like a peer host refusing connections.
//!
//! Threads and blocking sockets only: two pump threads per connection, one
//! accept thread per node. Dropping the [`Network`] closes everything and
//! joins the threads, with a bound.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raftkv::peer::{decode_frame, Frame};

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A hello is a few dozen bytes; anything much larger is not a hello.
const MAX_HELLO_LEN: usize = 64 * 1024;
/// Connecting to the real peer port on loopback: refused at once if the node
/// is down, so this only bounds pathological cases.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `Drop` waits for the proxy's threads before leaving them.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a cut pair of nodes fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Connections stay open; nothing gets through.
    Blackhole,
    /// Connections are closed; new ones are closed after their hello.
    Reset,
}

/// Counters, to show that the faults actually bit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    /// Connections closed by a `Reset` cut (open ones and refused new ones).
    pub resets: u64,
    /// Chunks of bytes held back by a `Blackhole` cut.
    pub held: u64,
}

/// One proxied connection, as the control side sees it.
struct Conn {
    from: usize,
    to: usize,
    downstream: TcpStream,
    upstream: Option<TcpStream>,
    /// Set when the connection is to end (a reset or the proxy stopping);
    /// pumps waiting out a blackhole check it.
    killed: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let _ = self.downstream.shutdown(Shutdown::Both);
        if let Some(up) = &self.upstream {
            let _ = up.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Default)]
struct State {
    /// Cut pairs, keyed with the smaller node index first.
    cuts: HashMap<(usize, usize), Cut>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    stopping: bool,
    threads: Vec<JoinHandle<()>>,
    stats: ProxyStats,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl State {
    fn cut_between(&self, a: usize, b: usize) -> Option<Cut> {
        self.cuts.get(&pair(a, b)).copied()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every heal and on stop, for pumps held by a blackhole.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A pump that panicked must not take the whole proxy down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(self: &Arc<Self>, f: impl FnOnce() + Send + 'static) {
        let handle = std::thread::spawn(f);
        let mut st = self.lock();
        st.threads.retain(|h| !h.is_finished());
        st.threads.push(handle);
    }

    /// Blocks while the pair is blackholed; false when the connection is to
    /// end instead (reset, stop).
    fn wait_until_open(&self, from: usize, to: usize, killed: &AtomicBool) -> bool {
        let mut st = self.lock();
        let mut counted = false;
        loop {
            if st.stopping || killed.load(Ordering::SeqCst) {
                return false;
            }
            match st.cut_between(from, to) {
                None => return true,
                Some(Cut::Reset) => return false,
                Some(Cut::Blackhole) => {
                    if !counted {
                        st.stats.held += 1;
                        counted = true;
                    }
                    // The timeout only guards against a lost wake-up.
                    st = self
                        .changed
                        .wait_timeout(st, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

/// The proxies of a whole cluster. Nodes are named by index (0-based), as in
/// `Cluster::nodes`; node index `i` has id `i + 1`.
pub struct Network {
    shared: Arc<Shared>,
    fronts: Vec<SocketAddr>,
}

impl Network {
    /// Binds one front port per node on 127.0.0.1 (ports chosen by the OS,
    /// so they cannot race with anything) and forwards each to the matching
    /// `upstream` port (the node's real `--peer-listen` port).
    pub fn start(upstream: &[u16]) -> io::Result<Network> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let mut fronts = Vec::new();
        for (to, &up) in upstream.iter().enumerate() {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            fronts.push(listener.local_addr()?);
            let s = Arc::clone(&shared);
            let n = upstream.len();
            shared.spawn(move || accept_loop(s, listener, to, n, up));
        }
        Ok(Network { shared, fronts })
    }

    /// The port to name node `i` by in `--cluster`.
    pub fn front_port(&self, i: usize) -> u16 {
        self.fronts[i].port()
    }

    /// Cuts the pair `a`–`b` (both directions).
    pub fn cut(&self, a: usize, b: usize, how: Cut) {
        assert_ne!(a, b, "a node cannot be cut from itself");
        let mut st = self.shared.lock();
        st.cuts.insert(pair(a, b), how);
        if how == Cut::Reset {
            let doomed: Vec<u64> = st
                .conns
                .iter()
                .filter(|(_, c)| pair(c.from, c.to) == pair(a, b))
                .map(|(&id, _)| id)
                .collect();
            for id in doomed {
                if let Some(c) = st.conns.remove(&id) {
                    c.close();
                    st.stats.resets += 1;
                }
            }
        }
    }

    /// Cuts every pair with one node in `side` and the other not, for a
    /// cluster of `n` nodes.
    pub fn split(&self, side: &[usize], n: usize, how: Cut) {
        let side: HashSet<usize> = side.iter().copied().collect();
        for a in side.iter().copied() {
            for b in (0..n).filter(|b| !side.contains(b)) {
                self.cut(a, b, how);
            }
        }
    }

    /// Cuts node `i` from every other node of a cluster of `n`.
    pub fn isolate(&self, i: usize, n: usize, how: Cut) {
        self.split(&[i], n, how);
    }

    /// Removes every cut; held bytes flow again.
    pub fn heal_all(&self) {
        self.shared.lock().cuts.clear();
        self.shared.changed.notify_all();
    }

    /// The pairs currently cut, for reports.
    pub fn cuts(&self) -> Vec<((usize, usize), Cut)> {
        let mut v: Vec<_> = self
            .shared
            .lock()
            .cuts
            .iter()
            .map(|(&p, &c)| (p, c))
            .collect();
        v.sort_unstable_by_key(|(p, _)| *p);
        v
    }

    pub fn stats(&self) -> ProxyStats {
        self.shared.lock().stats
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let threads = {
            let mut st = self.shared.lock();
            st.stopping = true;
            for c in st.conns.values() {
                c.close();
            }
            st.conns.clear();
            std::mem::take(&mut st.threads)
        };
        self.shared.changed.notify_all();
        // Wake the accept loops, blocked in accept(): they see `stopping`.
        for addr in &self.fronts {
            let _ = TcpStream::connect_timeout(addr, Duration::from_millis(200));
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut left = threads;
        while !left.is_empty() && Instant::now() < deadline {
            // Threads are joined as they finish; a straggler is left behind
            // rather than hanging the test.
            let (done, rest): (Vec<_>, Vec<_>) = left.into_iter().partition(|h| h.is_finished());
            for h in done {
                let _ = h.join();
            }
            left = rest;
            if !left.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if !left.is_empty() {
            eprintln!(
                "proxy: {} threads still running after {JOIN_TIMEOUT:?}; leaving them",
                left.len()
            );
        }
        // A late accept thread could have spawned more; they end on their
        // own (every socket is shut down and `stopping` is set).
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener, to: usize, n: usize, upstream: u16) {
    for stream in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let Ok(stream) = stream else {
            continue;
        };
        let s = Arc::clone(&shared);
        // Errors end just that connection; they are expected on every kill,
        // reset and shutdown, and the dialer redials.
        shared.spawn(move || {
            let _ = serve(&s, stream, to, n, upstream);
        });
    }
}

/// Reads the hello to learn the dialer, then connects to the real peer port
/// and pumps both ways until either side closes.
fn serve(
    shared: &Arc<Shared>,
    downstream: TcpStream,
    to: usize,
    n: usize,
    upstream_port: u16,
) -> io::Result<()> {
    let killed = Arc::new(AtomicBool::new(false));
    // Registered before the hello is read, so that a stop unblocks the read.
    let id = {
        let mut st = shared.lock();
        if st.stopping {
            return Ok(());
        }
        st.next_conn += 1;
        st.stats.connections += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                from: usize::MAX,
                to,
                downstream: downstream.try_clone()?,
                upstream: None,
                killed: Arc::clone(&killed),
            },
        );
        id
    };
    let result = serve_registered(shared, id, &killed, downstream, to, n, upstream_port);
    if let Some(c) = shared.lock().conns.remove(&id) {
        c.close();
    }
    result
}

fn serve_registered(
    shared: &Arc<Shared>,
    id: u64,
    killed: &Arc<AtomicBool>,
    mut downstream: TcpStream,
    to: usize,
    n: usize,
    upstream_port: u16,
) -> io::Result<()> {
    downstream.set_nodelay(true)?;
    downstream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let hello = read_frame(&mut downstream)?;
    let from = dialer_of(&hello[4..], to, n)?;
    downstream.set_read_timeout(None)?;

    let upstream = {
        let addr: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
        TcpStream::connect_timeout(&addr, UPSTREAM_CONNECT_TIMEOUT)?
    };
    upstream.set_nodelay(true)?;
    {
        let mut st = shared.lock();
        if st.stopping || killed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if st.cut_between(from, to) == Some(Cut::Reset) {
            st.stats.resets += 1;
            return Ok(()); // the caller closes both ends
        }
        let conn = st.conns.get_mut(&id).expect("registered connection");
        conn.from = from;
        conn.upstream = Some(upstream.try_clone()?);
    }

    // Replies: upstream → downstream, on a thread of their own.
    {
        let (s, k) = (Arc::clone(shared), Arc::clone(killed));
        let (src, dst) = (upstream.try_clone()?, downstream.try_clone()?);
        shared.spawn(move || pump(&s, &k, src, dst, from, to, Vec::new()));
    }
    // Requests: downstream → upstream, starting with the hello itself (so a
    // blackhole holds the handshake too).
    pump(shared, killed, downstream, upstream, from, to, hello);
    Ok(())
}

/// Copies `src` to `dst` (after `first`), holding bytes while the pair is
/// blackholed; on EOF, an error or a reset, closes both sockets.
fn pump(
    shared: &Shared,
    killed: &AtomicBool,
    mut src: TcpStream,
    mut dst: TcpStream,
    from: usize,
    to: usize,
    first: Vec<u8>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = first;
    loop {
        if !pending.is_empty() {
            if !shared.wait_until_open(from, to, killed) || dst.write_all(&pending).is_err() {
                break;
            }
            pending.clear();
        }
        match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => pending.extend_from_slice(&buf[..k]),
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// One length-delimited frame (4-byte big-endian length, then the payload),
/// returned with its length prefix so it can be forwarded as is.
pub fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_HELLO_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a first frame of {n} bytes is not a hello"),
        ));
    }
    let mut frame = len.to_vec();
    frame.resize(4 + n, 0);
    r.read_exact(&mut frame[4..])?;
    Ok(frame)
}

/// The index of the node that sent `hello`, checked against the front port
/// (`to`) it arrived on.
pub fn dialer_of(payload: &[u8], to: usize, n: usize) -> io::Result<usize> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    match decode_frame(payload) {
        Ok(Frame::Hello {
            from, to: for_id, ..
        }) => {
            let from = usize::try_from(from)
                .ok()
                .and_then(|f| f.checked_sub(1))
                .filter(|&f| f < n && f != to)
                .ok_or_else(|| bad(format!("hello from unknown node {from}")))?;
            if for_id != to as u64 + 1 {
                return Err(bad(format!(
                    "hello for node {for_id} arrived at node {}'s proxy",
                    to + 1
                )));
            }
            Ok(from)
        }
        Ok(other) => Err(bad(format!("expected a hello, got {}", other.kind()))),
        Err(e) => Err(bad(format!("undecodable first frame: {e}"))),
    }
}
