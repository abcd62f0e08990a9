//! The nemesis: driven by a seeded RNG, it kills nodes with kill -9 and
//! restarts them, pauses them (SIGSTOP / SIGCONT) and partitions them through
//! the proxy, and reads from a node as it resumes or heals.

use super::clients::{no_reply, outcome_of, send};
use super::*;

pub(crate) struct Nemesis<'a> {
    pub(crate) c: &'a mut Cluster,
    pub(crate) cfg: Config,
    pub(crate) seed: u64,
    rng: SimRng,
    pub(crate) t0: Instant,
    paused: Vec<bool>,
    /// Every fault, with its time, for the report.
    pub(crate) log: Vec<String>,
    /// Reads sent to a node just before it resumes or is healed.
    pub(crate) probes: Vec<HistoryOp>,
}

/// Whom a fault hits.
#[derive(Clone, Copy)]
enum Target {
    Leader,
    /// The leader with this probability, otherwise a random node.
    LeaderOr(f64),
}

impl<'a> Nemesis<'a> {
    pub(crate) fn new(c: &'a mut Cluster, cfg: Config, seed: u64) -> Self {
        let n = c.nodes.len();
        Nemesis {
            c,
            cfg,
            seed,
            rng: SimRng::new(seed),
            t0: Instant::now(),
            paused: vec![false; n],
            log: Vec::new(),
            probes: Vec::new(),
        }
    }

    pub(crate) fn now_us(&self) -> u64 {
        us_since(self.t0)
    }

    fn n(&self) -> usize {
        self.c.nodes.len()
    }

    fn note(&mut self, what: String) {
        let line = format!("{} {what}", fmt_time(self.now_us()));
        eprintln!("chaos ({}): {line}", self.cfg.name());
        self.log.push(line);
    }

    /// Faults for `len`, one at a time with quiet gaps; returns with
    /// everything healed.
    pub(crate) fn run_faults(&mut self, len: Duration) {
        let end = Instant::now() + len;
        let left = || end.saturating_duration_since(Instant::now());
        thread::sleep(WARM_UP.min(left()));
        // Every epoch: the leader paused for a while the others take
        // writes, then read from as it resumes. A leader that trusts a
        // lease across a pause serves a stale value here.
        if left() >= MIN_FAULT {
            self.pause(Target::Leader, LEADER_PAUSE.min(left()));
        }
        loop {
            let quiet = Duration::from_millis(self.rng.range(200, 1000));
            thread::sleep(quiet.min(left()));
            if left() < MIN_FAULT {
                break;
            }
            let cap = left();
            let ms = |lo: u64, hi: u64, rng: &mut SimRng| Duration::from_millis(rng.range(lo, hi));
            match self.rng.below(100) {
                0..=29 => {
                    let down = ms(300, 2000, &mut self.rng).min(cap);
                    self.kill(Target::LeaderOr(0.5), down);
                }
                30..=59 => {
                    let d = ms(1000, 5000, &mut self.rng).min(cap);
                    self.pause(Target::LeaderOr(0.6), d);
                }
                _ => {
                    let d = ms(1000, 3000, &mut self.rng).min(cap);
                    self.partition(d);
                }
            }
        }
    }

    /// The node that leads with the highest term among the running,
    /// unpaused ones, if one says so within a bound.
    fn leader(&self) -> Option<usize> {
        try_wait_until(Duration::from_secs(3), || {
            (0..self.n())
                .filter(|&i| self.c.nodes[i].child.is_some() && !self.paused[i])
                .filter_map(|i| {
                    let info = self.c.info(i)?;
                    (info.role() == "leader").then(|| (info.num("term"), i))
                })
                .max()
                .map(|(_, i)| i)
        })
    }

    /// A node to hit, and whether it is the leader. Draws the same random
    /// numbers whatever the cluster does, so a seed replays its schedule.
    fn pick(&mut self, target: Target) -> (usize, bool) {
        let p = match target {
            Target::Leader => 1.0,
            Target::LeaderOr(p) => p,
        };
        let want_leader = self.rng.chance(p);
        let fallback = self.rng.below(self.n() as u64) as usize;
        match want_leader.then(|| self.leader()).flatten() {
            Some(l) => (l, true),
            None => (fallback, false),
        }
    }

    fn role(is_leader: bool) -> &'static str {
        if is_leader {
            " (the leader)"
        } else {
            ""
        }
    }

    fn kill(&mut self, target: Target, down: Duration) {
        let (i, leader) = self.pick(target);
        self.c.kill9(i);
        self.note(format!(
            "kill -9 n{}{} for {down:?}",
            i + 1,
            Self::role(leader)
        ));
        thread::sleep(down); // the fault's duration
        self.c.spawn(i);
        self.note(format!("restart n{}", i + 1));
    }

    fn pause(&mut self, target: Target, d: Duration) {
        let (i, leader) = self.pick(target);
        // Opened first: a paused process cannot accept (the kernel would,
        // but the server would not read the request before it resumes).
        let probe = self.open_probe(i);
        self.c.pause(i);
        self.paused[i] = true;
        self.note(format!(
            "SIGSTOP n{}{} for {d:?}",
            i + 1,
            Self::role(leader)
        ));
        thread::sleep(d); // the fault's duration
                          // Invoked now, after every write the others acknowledged meanwhile;
                          // waiting in the socket when the node resumes.
        let sent = probe.map(|conn| self.send_probe(conn, i));
        self.c.resume(i);
        self.paused[i] = false;
        self.note(format!("SIGCONT n{}", i + 1));
        if let Some(sent) = sent {
            self.finish_probe(sent);
        }
    }

    fn partition(&mut self, d: Duration) {
        let how = if self.rng.chance(0.5) {
            Cut::Blackhole
        } else {
            Cut::Reset
        };
        let n = self.n();
        // The minority side: one node (often the leader) or, with five, two.
        let size = if n >= 5 && self.rng.chance(0.3) { 2 } else { 1 };
        let (first, leader) = self.pick(Target::LeaderOr(0.5));
        let mut side = vec![first];
        while side.len() < size {
            let other = self.rng.below(n as u64) as usize;
            if !side.contains(&other) {
                side.push(other);
            }
        }
        self.c.net().split(&side, n, how);
        let names: Vec<String> = side.iter().map(|i| format!("n{}", i + 1)).collect();
        self.note(format!(
            "partition {{{}}}{} from the rest ({how:?}) for {d:?}",
            names.join(","),
            Self::role(leader)
        ));
        thread::sleep(d); // the fault's duration
                          // Read from the cut-off side before the heal: it must not answer
                          // with a value the majority has overwritten.
        let sent = self
            .open_probe(first)
            .map(|conn| self.send_probe(conn, first));
        self.c.net().heal_all();
        self.note("heal the partition".into());
        if let Some(sent) = sent {
            self.finish_probe(sent);
        }
    }

    /// Undoes whatever is still in effect.
    pub(crate) fn heal_all(&mut self) {
        self.c.net().heal_all();
        for i in 0..self.n() {
            if self.paused[i] {
                self.c.resume(i);
                self.paused[i] = false;
            }
            if self.c.nodes[i].child.is_none() {
                self.c.spawn(i);
            }
        }
        self.note("all healed".into());
    }

    fn open_probe(&self, i: usize) -> Option<RawConn> {
        let mut conn = RawConn::connect(self.c.nodes[i].client_port, CONNECT_TIMEOUT).ok()?;
        // Make sure the server has taken the connection before it stops.
        match conn.cmd(&["PING"]) {
            Ok(Resp::Simple(p)) if p == "PONG" => {}
            _ => return None,
        }
        conn.set_timeout(CLIENT_TIMEOUT);
        Some(conn)
    }

    /// Pipelines a GET of every key; the history entries are completed by
    /// `finish_probe`.
    fn send_probe(&mut self, mut conn: RawConn, i: usize) -> (RawConn, Vec<usize>) {
        let gets: Vec<KvOp> = (0..KEYS).map(|k| KvOp::Get { key: key_name(k) }).collect();
        let call = self.now_us();
        let sent = send(&mut conn, &gets.iter().collect::<Vec<_>>()).is_ok();
        let mut slots = Vec::new();
        for kv in gets {
            let mut h = op(PROBE, kv, call, Outcome::Pending, call);
            h.node = i as u64 + 1;
            if !sent {
                h.outcome = Outcome::Failed("not sent".into());
            }
            slots.push(self.probes.len());
            self.probes.push(h);
        }
        (conn, if sent { slots } else { Vec::new() })
    }

    fn finish_probe(&mut self, (mut conn, slots): (RawConn, Vec<usize>)) {
        let mut broken = false;
        for slot in slots {
            let kv = self.probes[slot].op.clone();
            let outcome = if broken {
                Outcome::Failed("an earlier reply was lost".into())
            } else {
                match conn.read() {
                    Ok(reply) => outcome_of(&kv, reply),
                    Err(e) => {
                        broken = true;
                        no_reply(&kv, &e)
                    }
                }
            };
            let h = &mut self.probes[slot];
            h.outcome = outcome;
            h.complete_seq = us_since(self.t0);
            h.complete_us = h.complete_seq;
        }
    }
}
