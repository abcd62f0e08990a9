//! Clients: threads, each with its own connection, that run GET, SET, SET ..
//! IFEQ and INCR and record every operation with its call and return time and
//! outcome.

use super::*;

/// Sets the flag when dropped, so the client threads stop also when the
/// test panics half-way (they would otherwise retry dead ports forever).
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub(crate) struct ClientSpec {
    pub(crate) id: usize,
    pub(crate) ports: Arc<Vec<u16>>,
    pub(crate) home: usize,
    pub(crate) seed: u64,
    pub(crate) t0: Instant,
    pub(crate) stop: Arc<AtomicBool>,
}

/// A connection to the first node, from `start` on, that accepts one.
fn connect_from(ports: &[u16], start: usize) -> Option<(RawConn, usize)> {
    (0..ports.len()).find_map(|k| {
        let i = (start + k) % ports.len();
        let conn = RawConn::connect(ports[i], CONNECT_TIMEOUT).ok()?;
        conn.set_timeout(CLIENT_TIMEOUT);
        Some((conn, i))
    })
}

/// One operation at a time, until told to stop.
pub(crate) fn client_main(spec: ClientSpec) -> Vec<HistoryOp> {
    let mut rng = SimRng::new(spec.seed);
    let mut me = Client::default();
    // Values are unique across clients (choose_op counts up from here), so
    // a read names the one write it saw.
    let mut unique = (spec.id as u64 + 1) * 1_000_000_000;
    let mut node = spec.home;
    let mut conn: Option<RawConn> = None;
    let mut history = Vec::new();
    while !spec.stop.load(Ordering::SeqCst) && history.len() < MAX_OPS_PER_CLIENT {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect_from(&spec.ports, node) {
                Some((c, i)) => {
                    node = i;
                    conn.insert(c)
                }
                None => {
                    // Every node refused: all restarting at once. Pace the
                    // retries; the loop is bounded by `stop`.
                    thread::sleep(POLL);
                    continue;
                }
            },
        };
        let kv = choose_op(&mut rng, &me, KEYS, &mut unique);
        let call = us_since(spec.t0);
        let (outcome, replied) = execute(c, &kv);
        let ret = us_since(spec.t0);
        let mut h = op(spec.id, kv.clone(), call, outcome.clone(), ret);
        h.node = node as u64 + 1;
        history.push(h);
        match (&kv, &outcome) {
            (KvOp::Get { key }, Outcome::Ok(KvOutput::Value(v))) => {
                me.last_seen.insert(key.clone(), v.clone());
            }
            (
                KvOp::Set { key, value } | KvOp::SetIfEq { key, value, .. },
                Outcome::Ok(KvOutput::Ok),
            ) => {
                me.last_seen.insert(key.clone(), value.clone());
            }
            (KvOp::Incr { key }, Outcome::Ok(KvOutput::Integer(n))) => {
                me.last_seen.insert(key.clone(), n.to_string().into_bytes());
            }
            _ => {}
        }
        if !replied || matches!(outcome, Outcome::Unknown(_)) {
            // A late reply on this connection would be taken for the next
            // request's: start afresh, on the next node (so clients drift
            // away from a dead or paused one).
            conn = None;
            node = (node + 1) % spec.ports.len();
        }
    }
    history
}

fn command_of(kv: &KvOp) -> Vec<Vec<u8>> {
    let s = |x: &str| x.as_bytes().to_vec();
    match kv.clone() {
        KvOp::Get { key } => vec![s("GET"), key],
        KvOp::Set { key, value } => vec![s("SET"), key, value],
        KvOp::SetIfEq {
            key,
            value,
            expected,
        } => vec![s("SET"), key, value, s("IFEQ"), expected],
        KvOp::Incr { key } => vec![s("INCR"), key],
    }
}

pub(crate) fn send(conn: &mut RawConn, ops: &[&KvOp]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for kv in ops {
        let args = command_of(kv);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        encode_cmd(&args, &mut buf);
    }
    conn.send_raw(&buf)
}

/// Sends `kv` and waits for its reply; the outcome, and whether a reply came.
pub(crate) fn execute(conn: &mut RawConn, kv: &KvOp) -> (Outcome, bool) {
    match send(conn, &[kv]).and_then(|()| conn.read()) {
        Ok(reply) => (outcome_of(kv, reply), true),
        Err(e) => (no_reply(kv, &e), false),
    }
}

pub(crate) fn no_reply(kv: &KvOp, e: &std::io::Error) -> Outcome {
    let why = format!("no reply ({e})");
    if kv.is_read() {
        Outcome::Failed(why)
    } else {
        Outcome::Unknown(why)
    }
}

/// What a reply means, per the contract.
pub(crate) fn outcome_of(kv: &KvOp, reply: Resp) -> Outcome {
    match (kv, reply) {
        // Certainly not applied.
        (_, Resp::Error(e)) if e.starts_with("CLUSTERDOWN") => Outcome::Failed(e),
        // A read that failed had no effect.
        (KvOp::Get { .. }, Resp::Error(e)) => Outcome::Failed(e),
        // INCR of a non-integer: applied, and it changed nothing.
        (KvOp::Incr { .. }, Resp::Error(e)) if e == NOT_AN_INTEGER || e == OVERFLOW => {
            Outcome::Ok(KvOutput::Error(e))
        }
        // `-TIMEOUT`, and to be safe any other error: the write may apply.
        (_, Resp::Error(e)) => Outcome::Unknown(e),
        (KvOp::Get { .. }, Resp::Bulk(v)) => Outcome::Ok(KvOutput::Value(v)),
        (KvOp::Get { .. } | KvOp::SetIfEq { .. }, Resp::Nil) => Outcome::Ok(KvOutput::Nil),
        (KvOp::Set { .. } | KvOp::SetIfEq { .. }, Resp::Simple(s)) if s == "OK" => {
            Outcome::Ok(KvOutput::Ok)
        }
        (KvOp::Incr { .. }, Resp::Int(n)) => Outcome::Ok(KvOutput::Integer(n)),
        // A reply of the wrong shape breaks the contract; recorded as an
        // answer no register gives, so the checker reports it with context.
        (_, other) => Outcome::Ok(KvOutput::Value(
            format!("<unexpected reply {other:?}>").into_bytes(),
        )),
    }
}
