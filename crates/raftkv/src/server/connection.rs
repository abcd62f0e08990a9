//! One client connection: read, parse, classify, batch, answer in order
//! (guide chapter 9, "One connection: batches, in order").

use super::execute::{execute, Pending};
use super::*;
use crate::kv::{KvCommand, TxOp};

pub(super) async fn accept_clients(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, shared.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: wait a little, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection. Any error just closes it.
async fn serve_client(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok(_permit) = shared.clients.clone().try_acquire_owned() else {
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let authenticated = shared.requirepass.is_none();
    let mut conn = Connection {
        authenticated,
        shared,
        id: conn_id,
        protocol: Protocol::Resp2,
        out: BytesMut::with_capacity(16 << 10),
        tx: None,
    };
    let mut buf = BytesMut::with_capacity(16 << 10);
    // Remembers how far into a half-arrived command it got, so a large
    // command is not re-scanned from its start on every read.
    let mut parser = CommandParser::new(conn.shared.resp_limits);
    loop {
        let mut commands = Vec::new();
        let mut fatal = None;
        while commands.len() < 1024 {
            match parser.parse(&mut buf) {
                Ok(Some(args)) => commands.push(args),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if commands.is_empty() && fatal.is_none() {
            let read = stream.read_buf(&mut buf);
            let read = match conn.shared.idle_timeout {
                // Redis' `timeout`: an idle client is closed, silently.
                Some(idle) => match tokio::time::timeout(idle, read).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => read.await,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        let quit = conn.run_commands(commands).await;
        if let Some(e) = &fatal {
            // Redis answers malformed input with one error, then hangs up.
            conn.reply(&Reply::error(format!("ERR {e}")));
        }
        if stream.write_all(&conn.out).await.is_err() {
            return;
        }
        conn.out.clear();
        if quit || fatal.is_some() {
            return;
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    id: u64,
    protocol: Protocol,
    out: BytesMut,
    /// Between `MULTI` and `EXEC`/`DISCARD`: what is queued.
    tx: Option<Transaction>,
    /// `AUTH` succeeded, or no password is required.
    authenticated: bool,
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Compares a password in time that depends on the lengths only, not on
/// where the first difference is (a timing side channel would let a client
/// guess the password byte by byte).
fn same_password(given: &[u8], expected: &[u8]) -> bool {
    let n = given.len().max(expected.len());
    let mut diff = (given.len() ^ expected.len()) as u8 | u8::from(given.len() != expected.len());
    for i in 0..n {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

/// A transaction being queued (`MULTI`): the commands for the store, in
/// order, and where each answer of `EXEC`'s array comes from.
#[derive(Default)]
struct Transaction {
    ops: Vec<TxOp>,
    /// One per queued command: the index of its output among the store's,
    /// or a reply known at queueing time (`PING` inside `MULTI`).
    slots: Vec<Result<usize, Reply>>,
    /// The request bytes of the queued commands (the entry's size bound).
    bytes: usize,
    /// A command was refused while queueing: `EXEC` answers `EXECABORT`.
    failed: bool,
}

impl Connection {
    fn reply(&mut self, r: &Reply) {
        encode(r, self.protocol, &mut self.out);
    }

    /// Runs commands in order; returns true after QUIT.
    async fn run_commands(&mut self, commands: Vec<Vec<bytes::Bytes>>) -> bool {
        let mut batch = Pending::default();
        // The command name of each batched command, for metrics.
        let mut names: Vec<String> = Vec::new();
        for args in commands {
            let name = args
                .first()
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .unwrap_or_default();
            let size = request_size(&args);
            let action = classify_sized(&args, size, &self.shared.data_limits);
            if !self.authenticated {
                // Redis: nothing but AUTH, HELLO ... AUTH and QUIT before
                // the password.
                let refusal = match &action {
                    Action::Local(LocalCommand::Auth(..))
                    | Action::Local(LocalCommand::Hello(_, Some(_)))
                    | Action::Local(LocalCommand::Quit) => None,
                    Action::Local(LocalCommand::Hello(_, None)) => Some(
                        "NOAUTH HELLO must be called with the client already authenticated, \
                         otherwise the HELLO AUTH <user> <pass> option can be used to \
                         authenticate the client and select the RESP protocol version at the \
                         same time",
                    ),
                    // As Redis: an unknown command or a wrong arity is
                    // refused before the password is asked for, and a
                    // malformed AUTH or HELLO gets its own error.
                    Action::Reply(Reply::Error(e))
                        if e.starts_with("ERR unknown command")
                            || e.starts_with("ERR wrong number of arguments")
                            || matches!(name.as_str(), "auth" | "hello") =>
                    {
                        None
                    }
                    _ => Some("NOAUTH Authentication required."),
                };
                if let Some(refusal) = refusal {
                    self.flush(batch.take(), &mut names).await;
                    self.shared
                        .metrics
                        .observe_request("noauth", Duration::ZERO, true);
                    self.reply(&Reply::Error(refusal.into()));
                    continue;
                }
            }
            if let Action::Local(LocalCommand::Multi) = action {
                self.flush(batch.take(), &mut names).await;
                let reply = if self.tx.is_some() {
                    Reply::error("ERR MULTI calls can not be nested")
                } else {
                    self.tx = Some(Transaction::default());
                    Reply::ok()
                };
                self.reply(&reply);
                continue;
            }
            if self.tx.is_some() {
                if self.queue(&name, action, size).await {
                    return true;
                }
                continue;
            }
            match action {
                Action::Write(c) => {
                    let item = Batch::Writes(vec![c]);
                    if let Some(full) = batch.add(item, size) {
                        self.flush(Some(full), &mut names).await;
                    }
                    names.push(name);
                }
                Action::Read(q) => {
                    let item = Batch::Reads(vec![q]);
                    if let Some(full) = batch.add(item, size) {
                        self.flush(Some(full), &mut names).await;
                    }
                    names.push(name);
                }
                Action::Local(LocalCommand::RaftSnapshot) => {
                    self.flush(batch.take(), &mut names).await;
                    let started = Instant::now();
                    // §7 on demand: answered once the snapshot is durable
                    // and the log compacted.
                    let reply = match self.shared.handle.snapshot().await {
                        Ok(_) => Reply::ok(),
                        Err(e) => Reply::error(format!("ERR snapshot failed: {e}")),
                    };
                    let failed = matches!(reply, Reply::Error(_));
                    self.shared
                        .metrics
                        .observe_request(&name, started.elapsed(), failed);
                    self.reply(&reply);
                }
                Action::Admin(command) => {
                    self.flush(batch.take(), &mut names).await;
                    let started = Instant::now();
                    let reply = super::admin::run(&self.shared, command).await;
                    let failed = matches!(reply, Reply::Error(_));
                    self.shared
                        .metrics
                        .observe_request(&name, started.elapsed(), failed);
                    self.reply(&reply);
                }
                Action::Local(l) => {
                    self.flush(batch.take(), &mut names).await;
                    self.shared
                        .metrics
                        .observe_request(&name, Duration::ZERO, false);
                    if self.local(l) {
                        return true;
                    }
                }
                Action::Reply(r) => {
                    self.flush(batch.take(), &mut names).await;
                    let known =
                        !matches!(&r, Reply::Error(e) if e.starts_with("ERR unknown command"));
                    let name = if known { name.as_str() } else { "unknown" };
                    self.shared.metrics.observe_request(
                        name,
                        Duration::ZERO,
                        matches!(r, Reply::Error(_)),
                    );
                    self.reply(&r);
                }
                Action::Ignore => {}
            }
        }
        self.flush(batch.take(), &mut names).await;
        false
    }

    /// Inside `MULTI`: queues the command, or runs `EXEC` / `DISCARD`.
    /// Returns true after `QUIT`.
    async fn queue(&mut self, name: &str, action: Action, size: usize) -> bool {
        let Some(tx) = self.tx.as_mut() else {
            return false;
        };
        if name == "watch" {
            // As Redis: refused, and the transaction goes on.
            self.reply(&Reply::error("ERR WATCH inside MULTI is not allowed"));
            return false;
        }
        let reply = match action {
            Action::Local(LocalCommand::Exec) => {
                let tx = self.tx.take().unwrap_or_default();
                let reply = self.exec(tx).await;
                self.reply(&reply);
                return false;
            }
            Action::Local(LocalCommand::Discard) => {
                self.tx = None;
                Reply::ok()
            }
            Action::Local(LocalCommand::Quit) => {
                self.tx = None;
                self.reply(&Reply::ok());
                return true;
            }
            Action::Write(c) => {
                tx.slots.push(Ok(tx.ops.len()));
                tx.ops.push(TxOp::Write(c));
                tx.bytes += size;
                Reply::Simple("QUEUED".into())
            }
            Action::Read(q) => {
                tx.slots.push(Ok(tx.ops.len()));
                tx.ops.push(TxOp::Read(q));
                tx.bytes += size;
                Reply::Simple("QUEUED".into())
            }
            Action::Local(LocalCommand::Ping(m)) => {
                tx.slots
                    .push(Err(m.map_or(Reply::Simple("PONG".into()), Reply::Bulk)));
                Reply::Simple("QUEUED".into())
            }
            Action::Local(LocalCommand::Echo(m)) => {
                tx.slots.push(Err(Reply::Bulk(m)));
                Reply::Simple("QUEUED".into())
            }
            Action::Reply(Reply::Error(e)) => {
                tx.failed = true;
                Reply::Error(e)
            }
            Action::Reply(r) => {
                tx.slots.push(Err(r));
                Reply::Simple("QUEUED".into())
            }
            Action::Ignore => return false,
            // What depends on this node rather than on the data (INFO,
            // HELLO, RAFT.*, administration) does not go into a
            // transaction.
            Action::Local(_) | Action::Admin(_) => {
                tx.failed = true;
                Reply::error(format!(
                    "ERR '{name}' is not allowed inside a transaction in raftkv"
                ))
            }
        };
        self.reply(&reply);
        false
    }

    /// `EXEC`: the queued commands as one log entry (`KvCommand::Exec`),
    /// applied atomically on every replica; the answer is one reply per
    /// queued command.
    async fn exec(&mut self, tx: Transaction) -> Reply {
        let started = Instant::now();
        if tx.failed {
            return Reply::Error(
                "EXECABORT Transaction discarded because of previous errors.".into(),
            );
        }
        let mut outputs = Vec::new();
        if !tx.ops.is_empty() {
            if let Some(refusal) = self.shared.not_a_member() {
                return Reply::Error(refusal.into());
            }
            let limit = self.shared.data_limits.max_request_bytes;
            if tx.bytes > limit {
                return Reply::error(format!(
                    "ERR transaction too large ({} bytes, limit {limit}; see --max-request-bytes)",
                    tx.bytes
                ));
            }
            let batch = Batch::Writes(vec![KvCommand::Exec { ops: tx.ops }]);
            let outcome = execute(&self.shared, batch, tx.bytes)
                .await
                .into_iter()
                .next()
                .unwrap_or(Outcome::NotApplied);
            match outcome {
                Outcome::Done(KvOutput::Multi(outs)) => outputs = outs,
                other => {
                    let r = outcome_reply(other, false);
                    self.shared
                        .metrics
                        .observe_request("exec", started.elapsed(), true);
                    return r;
                }
            }
        }
        let mut outputs = outputs.into_iter().map(Some).collect::<Vec<_>>();
        let replies = tx
            .slots
            .into_iter()
            .map(|slot| match slot {
                Ok(i) => outputs
                    .get_mut(i)
                    .and_then(Option::take)
                    .map_or_else(|| Reply::error("ERR internal: missing output"), kv_reply),
                Err(r) => r,
            })
            .collect();
        self.shared
            .metrics
            .observe_request("exec", started.elapsed(), false);
        Reply::Array(replies)
    }

    /// Runs `batch` (with the request size of its commands); `names` are its
    /// commands' names.
    async fn flush(&mut self, batch: Option<(Batch, usize)>, names: &mut Vec<String>) {
        let Some((batch, bytes)) = batch else { return };
        let read = matches!(batch, Batch::Reads(_));
        if let Some(refusal) = self.shared.not_a_member() {
            for name in names.drain(..) {
                self.shared
                    .metrics
                    .observe_request(&name, Duration::ZERO, true);
                self.reply(&Reply::Error(refusal.into()));
            }
            return;
        }
        let started = Instant::now();
        let outcomes = execute(&self.shared, batch, bytes).await;
        let elapsed = started.elapsed();
        for (outcome, name) in outcomes.into_iter().zip(names.drain(..)) {
            let r = outcome_reply(outcome, read);
            self.shared
                .metrics
                .observe_request(&name, elapsed, matches!(r, Reply::Error(_)));
            self.reply(&r);
        }
    }

    /// `AUTH [user] pass` (also `HELLO ... AUTH`): only the default user.
    fn auth(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Reply {
        let default_user = user.is_none_or(|u| u == b"default");
        match &self.shared.requirepass {
            None if user.is_none() => Reply::error(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            ),
            // No password: the default user takes any.
            None if default_user => Reply::ok(),
            Some(expected) if default_user && same_password(pass, expected) => {
                self.authenticated = true;
                Reply::ok()
            }
            _ => Reply::Error(WRONGPASS.into()),
        }
    }

    /// Answers a command this node handles itself; true means close.
    fn local(&mut self, cmd: LocalCommand) -> bool {
        let reply = match cmd {
            LocalCommand::Ping(None) => Reply::Simple("PONG".into()),
            LocalCommand::Ping(Some(m)) | LocalCommand::Echo(m) => Reply::Bulk(m),
            LocalCommand::Auth(user, pass) => self.auth(user.as_deref(), &pass),
            LocalCommand::Hello(proto, auth) => {
                if let Some((user, pass)) = auth {
                    let r = self.auth(Some(&user), &pass);
                    if matches!(r, Reply::Error(_)) {
                        self.reply(&r);
                        return false;
                    }
                }
                if let Some(p) = proto {
                    self.protocol = if p == 3 {
                        Protocol::Resp3
                    } else {
                        Protocol::Resp2
                    };
                }
                let proto = if self.protocol == Protocol::Resp3 {
                    3
                } else {
                    2
                };
                let s = |t: &str| Reply::Bulk(bytes::Bytes::copy_from_slice(t.as_bytes()));
                Reply::Map(vec![
                    (s("server"), s("redis")),
                    (s("version"), s("7.2.4")),
                    (s("proto"), Reply::Integer(proto)),
                    (s("id"), Reply::Integer(self.id as i64)),
                    (s("mode"), s("standalone")),
                    (s("role"), s("master")),
                    (s("modules"), Reply::Array(vec![])),
                ])
            }
            LocalCommand::Info(section) => {
                let text = info_text(
                    &self.shared,
                    &self.shared.handle.status(),
                    section.as_deref(),
                );
                Reply::Verbatim {
                    format: *b"txt",
                    text: text.into(),
                }
            }
            LocalCommand::RaftInfo => {
                let vote = self.shared.identity.vote_right();
                let text = raft_section(&self.shared, &self.shared.handle.status(), vote.name());
                Reply::Bulk(text.into())
            }
            // Handled in run_commands (it waits for the snapshot).
            LocalCommand::RaftSnapshot => Reply::error("ERR internal: RAFT.SNAPSHOT misrouted"),
            LocalCommand::Quit => {
                self.reply(&Reply::ok());
                return true;
            }
            // Outside MULTI (inside, `queue` takes them).
            LocalCommand::Exec => Reply::error("ERR EXEC without MULTI"),
            LocalCommand::Discard => Reply::error("ERR DISCARD without MULTI"),
            LocalCommand::Multi => Reply::error("ERR internal: MULTI misrouted"),
            LocalCommand::ConfigGet(params) => {
                let known = [("save", ""), ("appendonly", "yes")];
                let mut pairs = Vec::new();
                for p in params {
                    let p = String::from_utf8_lossy(&p).to_ascii_lowercase();
                    for (name, value) in known {
                        if p == name || p == "*" {
                            pairs.push((
                                Reply::Bulk(name.as_bytes().to_vec().into()),
                                Reply::Bulk(value.as_bytes().to_vec().into()),
                            ));
                        }
                    }
                }
                Reply::Map(pairs)
            }
            LocalCommand::Ok => Reply::ok(),
        };
        self.reply(&reply);
        false
    }
}

fn outcome_reply(o: Outcome, read: bool) -> Reply {
    match o {
        Outcome::Done(out) => kv_reply(out),
        // A read that failed had no effect, whatever the reason.
        Outcome::NotApplied | Outcome::Unknown if read => Reply::Error(
            "TIMEOUT the read did not complete in time (no leader or no quorum); it had no effect"
                .into(),
        ),
        Outcome::NotApplied => Reply::Error("CLUSTERDOWN the command was not applied (no leader or leadership changed); it is safe to retry".into()),
        Outcome::Unknown => Reply::Error(
            "TIMEOUT the outcome is unknown: the command may still take effect".into(),
        ),
    }
}

fn kv_reply(out: KvOutput) -> Reply {
    match out {
        KvOutput::Ok => Reply::ok(),
        KvOutput::Nil => Reply::Nil,
        KvOutput::Integer(n) => Reply::Integer(n),
        KvOutput::Value(v) => Reply::Bulk(v.into()),
        KvOutput::Values(vs) => Reply::Array(
            vs.into_iter()
                .map(|v| v.map_or(Reply::Nil, |v| Reply::Bulk(v.into())))
                .collect(),
        ),
        KvOutput::Error(e) => Reply::Error(e),
        KvOutput::Status(s) => Reply::Simple(s),
        KvOutput::Multi(outs) => Reply::Array(outs.into_iter().map(kv_reply).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::same_password;

    #[test]
    fn passwords_compare_equal_only_when_identical() {
        assert!(same_password(b"s3cret", b"s3cret"));
        assert!(!same_password(b"s3cre", b"s3cret"));
        assert!(!same_password(b"s3cret!", b"s3cret"));
        assert!(!same_password(b"S3cret", b"s3cret"));
        assert!(!same_password(b"", b"s3cret"));
        // A prefix padded with zero bytes is not the password either.
        assert!(!same_password(b"s3cret\0", b"s3cret"));
        assert!(same_password(b"", b""));
    }
}
