//! Where a batch runs: proposed or read on this node when it leads, or
//! forwarded to the leader, with the forwards of many connections combined
//! (guide chapter 9, "Where a batch runs" and "Forwarding"); and the
//! leader's side of forwarding.

use super::*;

/// The batch a connection is building: consecutive commands of one kind,
/// with at most `limits::MAX_REQUEST_BYTES` of requests in all, so that the
/// batch, forwarded, fits one peer frame (a pipeline of large values is run
/// as a few batches, in order).
#[derive(Default)]
pub(super) struct Pending {
    batch: Option<Batch>,
    /// The request size of the commands in `batch`.
    bytes: usize,
}

impl Pending {
    /// Adds one command of request size `size`. Returns the batch to run
    /// first when the command is of the other kind or would make it too
    /// large (the command then starts the next batch).
    pub(super) fn add(&mut self, item: Batch, size: usize) -> Option<(Batch, usize)> {
        let fits = self.bytes.saturating_add(size) <= limits::MAX_REQUEST_BYTES;
        let item = match self.batch.as_mut().filter(|_| fits) {
            Some(batch) => match batch.append(item) {
                Ok(()) => {
                    self.bytes += size;
                    return None;
                }
                Err(item) => item,
            },
            None => item,
        };
        let full = self.take();
        self.batch = Some(item);
        self.bytes = size;
        full
    }

    pub(super) fn take(&mut self) -> Option<(Batch, usize)> {
        let bytes = std::mem::take(&mut self.bytes);
        self.batch.take().map(|b| (b, bytes))
    }
}

/// A batch a follower's connection wants forwarded to the leader, and where
/// its outcomes go (`None`: nothing was proposed, so it may be retried).
pub(super) struct ForwardJob {
    leader: u64,
    batch: Batch,
    /// The batch's request size (`limits::request_size` of its commands),
    /// which bounds its encoded size.
    bytes: usize,
    deadline: Instant,
    reply: oneshot::Sender<Option<Vec<Outcome>>>,
}

/// Forwarded batches in flight from this node at once. While they are, the
/// batches of other connections queue and then travel together in one
/// request (batching by design, as for AppendEntries).
const FORWARD_WINDOW: usize = 4;

/// Batches of several connections are combined into one forward up to this
/// many commands or bytes. (One connection's batch may be larger, up to
/// `limits::MAX_REQUEST_BYTES`; it then travels alone.)
const FORWARD_MAX_COMMANDS: usize = 256;

const FORWARD_MAX_BYTES: usize = 1 << 20;

/// Jobs whose deadlines differ by more than this travel separately: one
/// request times out at its earliest deadline, and a job retried after a
/// leader change must not cut short the time of fresh ones.
const FORWARD_DEADLINE_SPREAD: Duration = Duration::from_millis(50);

/// Runs a batch wherever the leader is, until done or the request timeout.
///
/// Retries only when nothing can have been proposed (the node asked was not
/// the leader, or the request never left this node), so one client command
/// is at most one log entry.
///
/// `bytes` is the batch's request size. A leader may answer forwarded reads
/// only in part, when their values together would not fit one frame; the
/// rest are then asked for again.
pub(super) async fn execute(shared: &Shared, batch: Batch, bytes: usize) -> Vec<Outcome> {
    let deadline = Instant::now() + shared.request_timeout;
    let mut done = Vec::with_capacity(batch.len());
    let mut batch = batch;
    loop {
        let (state, leader_id) = shared.handle.role();
        let attempt = if state == RaftState::Leader {
            run_locally(shared, &batch, deadline).await
        } else if let Some(leader) = leader_id.filter(|&l| l != shared.node_id) {
            forward_coalesced(shared, leader, &batch, bytes, deadline).await
        } else {
            None
        };
        if let Some(outcomes) = attempt {
            let answered = outcomes.len();
            done.extend(outcomes);
            // Only reads are ever answered in part (see `forward_to`), and
            // at least one at a time.
            if answered >= batch.len() {
                return done;
            }
            batch = batch.split_off(answered);
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            done.extend(vec![Outcome::NotApplied; batch.len()]);
            return done;
        }
        // No leader known yet (an election is under way): look again soon.
        tokio::time::sleep((deadline - now).min(Duration::from_millis(20))).await;
    }
}

/// This node's wall clock, Unix ms (0 if the clock is before 1970).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Proposes (or reads) on this node. `None` when this node turned out not to
/// lead for any of the commands (nothing was proposed).
async fn run_locally(shared: &Shared, batch: &Batch, deadline: Instant) -> Option<Vec<Outcome>> {
    // Enqueue in order (that is what keeps a connection's writes in order),
    // but never wait for queue space past the deadline: a command that
    // never got into the queue was certainly not proposed.
    let mut receivers = Vec::with_capacity(batch.len());
    match batch {
        Batch::Writes(cmds) => {
            // Every write carries this leader's clock (`KvCommand::At`):
            // the time replicas and replays agree on.
            let now_ms = wall_clock_ms();
            for c in cmds {
                let rx = tokio::time::timeout_at(
                    deadline,
                    shared.handle.enqueue_submit(encode_stamped(c, now_ms)),
                )
                .await;
                receivers.push(rx.ok().and_then(Result::ok));
            }
        }
        Batch::Reads(queries) => {
            for q in queries {
                let rx =
                    tokio::time::timeout_at(deadline, shared.handle.enqueue_read(encode_query(q)))
                        .await;
                receivers.push(rx.ok().and_then(Result::ok));
            }
        }
    }
    let mut outcomes = Vec::with_capacity(receivers.len());
    let mut proposed_any = false;
    for rx in receivers {
        let Some(rx) = rx else {
            outcomes.push(Outcome::NotApplied);
            continue;
        };
        let result = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Stopped),
            Err(_) => {
                proposed_any = true;
                outcomes.push(Outcome::Unknown);
                continue;
            }
        };
        if !matches!(&result, Err(ClientError::NotLeader { .. })) {
            proposed_any = true;
        }
        let outcome = match result {
            Ok(out) => Outcome::Done(out),
            Err(ClientError::NotLeader { .. }) => Outcome::NotApplied,
            Err(ClientError::LeadershipLost) => Outcome::NotApplied,
            // Only a command over the largest request any node accepts
            // (`limits::MAX_REQUEST_BYTES`) gets here; every node refuses
            // those before proposing, so it is a node with other limits.
            Err(ClientError::TooLarge { size, limit }) => Outcome::Done(KvOutput::Error(format!(
                "ERR request too large ({size} bytes, limit {limit})"
            ))),
            Err(ClientError::Stopped) | Err(ClientError::Unknown) => Outcome::Unknown,
        };
        outcomes.push(outcome);
    }
    proposed_any.then_some(outcomes)
}

async fn forward_to(
    shared: &Shared,
    leader: u64,
    batch: Batch,
    deadline: Instant,
) -> Option<Vec<Outcome>> {
    let (len, reads) = (batch.len(), matches!(batch, Batch::Reads(_)));
    // What to answer when the fate of the request is unknown: writes may
    // have happened; reads have no effect, so they are simply retried.
    let unknown = || (!reads).then(|| vec![Outcome::Unknown; len]);
    let timeout = deadline.saturating_duration_since(Instant::now());
    match shared
        .transport
        .forward(leader, forward::encode(&batch), timeout)
        .await
    {
        Ok(bytes) => match forward::decode::<ForwardReply>(&bytes) {
            Some(ForwardReply::Outcomes(o)) if o.len() == len => Some(o),
            // The leader answered the first reads only: their values filled
            // a frame. The rest are asked for again.
            Some(ForwardReply::Outcomes(o)) if reads && !o.is_empty() && o.len() < len => Some(o),
            Some(ForwardReply::NotLeader { .. }) => None,
            _ => {
                tracing::warn!(leader, "undecodable forward reply");
                unknown()
            }
        },
        Err(ForwardError::NotSent(_)) => None,
        Err(ForwardError::Unknown(_)) => unknown(),
    }
}

/// Forwards `batch` to `leader` together with whatever other connections
/// of this node are forwarding at the same moment (see
/// `coalesce_forwards`). Same result as [`forward_to`] would give it alone.
async fn forward_coalesced(
    shared: &Shared,
    leader: u64,
    batch: &Batch,
    bytes: usize,
    deadline: Instant,
) -> Option<Vec<Outcome>> {
    let (reply, outcomes) = oneshot::channel();
    let job = ForwardJob {
        leader,
        batch: batch.clone(),
        bytes,
        deadline,
        reply,
    };
    if shared.forwarder.send(job).is_err() {
        // The node is stopping; nothing was sent.
        return None;
    }
    // A dropped job was never sent either.
    outcomes.await.ok().flatten()
}

/// Combines the forwards of many connections into few requests: it takes
/// every job already queued (up to a size limit), groups them by leader and
/// by kind (writes, reads), and sends each group as one batch, with at most
/// [`FORWARD_WINDOW`] groups in flight. A group's outcomes are split back in
/// order; a group that was not sent, or whose leader refused it, is `None`
/// for each of its jobs, which then retry as they would alone. One request
/// times out with its earliest deadline, so no job waits past its own.
pub(super) async fn coalesce_forwards(
    shared: std::sync::Weak<Shared>,
    mut jobs: mpsc::UnboundedReceiver<ForwardJob>,
) {
    let window = Arc::new(Semaphore::new(FORWARD_WINDOW));
    let mut next: Option<ForwardJob> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // Wait for room in the window first: jobs pile up meanwhile.
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let (mut commands, mut bytes) = (first.batch.len(), first.bytes);
        let mut taken = vec![first];
        while commands < FORWARD_MAX_COMMANDS && bytes < FORWARD_MAX_BYTES {
            let Ok(job) = jobs.try_recv() else { break };
            commands += job.batch.len();
            bytes += job.bytes;
            if commands > FORWARD_MAX_COMMANDS || bytes > FORWARD_MAX_BYTES {
                // Goes first in the next round instead.
                next = Some(job);
                break;
            }
            taken.push(job);
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let permit = Arc::new(permit);
        for group in group_forward_jobs(taken) {
            let (shared, permit) = (shared.clone(), permit.clone());
            tokio::spawn(async move {
                send_forward_group(&shared, group).await;
                drop(permit);
            });
        }
    }
}

/// Splits jobs into groups with one leader, one kind and nearly the same
/// deadline, keeping their order.
fn group_forward_jobs(jobs: Vec<ForwardJob>) -> Vec<Vec<ForwardJob>> {
    // Every group is created holding a job, so `g[0]` below exists.
    let mut groups: Vec<Vec<ForwardJob>> = Vec::new();
    for job in jobs {
        let reads = matches!(job.batch, Batch::Reads(_));
        let same = |g: &Vec<ForwardJob>| {
            let spread = if g[0].deadline > job.deadline {
                g[0].deadline - job.deadline
            } else {
                job.deadline - g[0].deadline
            };
            g[0].leader == job.leader
                && matches!(g[0].batch, Batch::Reads(_)) == reads
                && spread <= FORWARD_DEADLINE_SPREAD
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

/// Sends one group from `group_forward_jobs` as one request.
async fn send_forward_group(shared: &Shared, group: Vec<ForwardJob>) {
    let mut jobs = group.into_iter();
    let Some(first) = jobs.next() else {
        return;
    };
    let (leader, mut deadline) = (first.leader, first.deadline);
    let mut lens = vec![first.batch.len()];
    let mut replies = vec![first.reply];
    let mut combined = first.batch;
    for job in jobs {
        let len = job.batch.len();
        match combined.append(job.batch) {
            Ok(()) => {
                deadline = deadline.min(job.deadline);
                lens.push(len);
                replies.push(job.reply);
            }
            // Not of the group's kind (grouping prevents it): not sent, so
            // it retries on its own.
            Err(_) => {
                let _ = job.reply.send(None);
            }
        }
    }
    let outcomes = forward_to(shared, leader, combined, deadline).await;
    let mut outcomes = outcomes.map(Vec::into_iter);
    for (reply, len) in replies.into_iter().zip(lens) {
        // Reads answered in part: a job may get fewer outcomes than it has
        // commands (it asks again for the rest), or none (as if not sent).
        let mine = outcomes
            .as_mut()
            .map(|o| o.by_ref().take(len).collect::<Vec<_>>())
            .filter(|o| !o.is_empty());
        // The connection may have given up; nobody to tell then.
        let _ = reply.send(mine);
    }
}

/// The leader's side of forwarding.
pub(super) async fn serve_forwards(
    shared: Arc<Shared>,
    mut forwards: mpsc::Receiver<IncomingForward>,
) {
    while let Some(fwd) = forwards.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(admin) = fwd.payload.strip_prefix(super::admin::ADMIN_PREFIX) {
                let reply = super::admin::serve_forwarded(&shared, admin).await;
                let _ = fwd.reply.send(reply);
                return;
            }
            let reply = match forward::decode::<Batch>(&fwd.payload) {
                None => {
                    tracing::warn!(from = fwd.from, "undecodable forwarded request");
                    return;
                }
                Some(batch) => {
                    let (state, _) = shared.handle.role();
                    let deadline = Instant::now() + shared.request_timeout;
                    let outcomes = if state == RaftState::Leader {
                        run_locally(&shared, &batch, deadline).await
                    } else {
                        None
                    };
                    match outcomes {
                        Some(o) if matches!(batch, Batch::Reads(_)) => {
                            ForwardReply::Outcomes(fit_read_outcomes(o, limits::MAX_REQUEST_BYTES))
                        }
                        // Write outcomes are small (OK, an integer, a short
                        // error): a batch's always fit one frame.
                        Some(o) => ForwardReply::Outcomes(o),
                        None => ForwardReply::NotLeader {
                            leader_hint: shared.handle.role().1,
                        },
                    }
                }
            };
            let _ = fwd.reply.send(forward::encode(&reply));
        });
    }
}

/// The first of `outcomes` (of forwarded reads) whose encoding fits
/// `budget` bytes, so the reply fits one frame; the follower asks again for
/// the rest. A first read whose reply alone is larger gets an error instead:
/// a follower cannot relay it, but the leader can serve it directly.
fn fit_read_outcomes(outcomes: Vec<Outcome>, budget: usize) -> Vec<Outcome> {
    let mut left = budget;
    let mut kept = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let size = outcome.size_bound();
        if size > left {
            if kept.is_empty() {
                kept.push(Outcome::Done(KvOutput::Error(format!(
                    "ERR reply too large to relay from the leader ({size} bytes, limit {budget}); \
                     send it to the leader, or ask for less at once"
                ))));
            }
            break;
        }
        left -= size;
        kept.push(outcome);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvCommand, KvQuery};

    fn job(leader: u64, batch: Batch, deadline: Instant) -> ForwardJob {
        let (reply, _) = oneshot::channel();
        ForwardJob {
            leader,
            batch,
            bytes: 1,
            deadline,
            reply,
        }
    }

    fn write(key: &str) -> Batch {
        Batch::Writes(vec![KvCommand::IncrBy {
            key: key.as_bytes().to_vec(),
            by: 1,
        }])
    }

    fn read(key: &str) -> Batch {
        Batch::Reads(vec![KvQuery::Get {
            key: key.as_bytes().to_vec(),
        }])
    }

    fn keys(group: &[ForwardJob]) -> Vec<String> {
        group
            .iter()
            .map(|j| match &j.batch {
                Batch::Writes(w) => match &w[0] {
                    KvCommand::IncrBy { key, .. } => format!("w:{}", String::from_utf8_lossy(key)),
                    other => format!("{other:?}"),
                },
                Batch::Reads(r) => match &r[0] {
                    KvQuery::Get { key } => format!("r:{}", String::from_utf8_lossy(key)),
                    other => format!("{other:?}"),
                },
            })
            .collect()
    }

    #[test]
    fn forwarded_jobs_group_by_leader_kind_and_deadline_in_order() {
        let now = Instant::now();
        let later = now + Duration::from_millis(10);
        let much_later = now + Duration::from_secs(3);
        let jobs = vec![
            job(1, write("a"), now),
            job(1, read("b"), now),
            job(1, write("c"), later),
            job(2, write("d"), now),
            job(1, write("e"), much_later),
            job(1, read("f"), later),
        ];
        let groups: Vec<Vec<String>> = group_forward_jobs(jobs).iter().map(|g| keys(g)).collect();
        assert_eq!(
            groups,
            vec![
                // Writes to leader 1 within the deadline spread, in order:
                // a connection's commands never overtake each other.
                vec!["w:a".to_string(), "w:c".to_string()],
                vec!["r:b".to_string(), "r:f".to_string()],
                vec!["w:d".to_string()],
                // A retried job with a far deadline travels on its own.
                vec!["w:e".to_string()],
            ]
        );
    }

    #[test]
    fn a_batch_appends_its_own_kind_and_hands_back_the_other() {
        let mut b = write("a");
        assert!(b.append(write("b")).is_ok());
        assert_eq!(b.len(), 2);
        assert!(matches!(b.append(read("c")), Err(Batch::Reads(_))));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn a_connection_batch_stays_within_one_frame_of_requests() {
        let mut pending = Pending::default();
        let big = limits::MAX_REQUEST_BYTES / 2;
        assert!(pending.add(write("a"), big).is_none());
        assert!(pending.add(write("b"), big).is_none(), "exactly full");
        // One more byte would not fit: the full batch runs first.
        let (full, bytes) = pending.add(write("c"), 1).expect("full");
        assert_eq!((full.len(), bytes), (2, 2 * big));
        // A read after writes also starts a new batch.
        let (writes, bytes) = pending.add(read("d"), 5).expect("kind changed");
        assert_eq!((writes.len(), bytes), (1, 1));
        let (reads, bytes) = pending.take().expect("the read");
        assert!(matches!(reads, Batch::Reads(_)));
        assert_eq!((reads.len(), bytes), (1, 5));
        assert!(pending.take().is_none());
    }

    #[test]
    fn forwarded_read_replies_are_cut_to_fit_a_frame() {
        let value = |n: usize| Outcome::Done(KvOutput::Value(vec![7; n]));
        let outcomes = vec![value(400), value(400), value(400), Outcome::NotApplied];
        // Two values fit 1000 bytes; the rest are asked for again.
        let kept = fit_read_outcomes(outcomes.clone(), 1000);
        assert_eq!(kept, outcomes[..2].to_vec());
        // Everything fits a larger budget.
        assert_eq!(fit_read_outcomes(outcomes.clone(), 1 << 20), outcomes);
        // A first reply larger than the budget becomes an error, so every
        // round answers at least one read.
        let kept = fit_read_outcomes(vec![value(2000), value(1)], 1000);
        assert!(
            matches!(&kept[..], [Outcome::Done(KvOutput::Error(e))] if e.starts_with("ERR reply too large"))
        );
        // The bound is honest: an encoded reply is never larger.
        for o in &outcomes {
            assert!(forward::encode(o).len() <= o.size_bound());
        }
    }
}
