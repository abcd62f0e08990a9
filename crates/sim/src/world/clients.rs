//! The clients: each runs one operation at a time against a node it
//! picks, gives up after a timeout, and records what it saw in the history
//! that the linearizability checker reads at the end.

use super::*;

impl World {
    pub(super) fn next_history_seq(&mut self) -> u64 {
        self.history_seq += 1;
        self.history_seq
    }

    pub(super) fn client_start(&mut self, c: usize) {
        if !self.accepting_ops || self.clients[c].in_flight.is_some() {
            return;
        }
        let op = match self.clients[c].retry.take() {
            Some(op) => op,
            None => choose_op(
                &mut self.rng,
                &self.clients[c],
                self.opts.keys,
                &mut self.unique,
            ),
        };
        let node = match self.clients[c].leader_hint {
            Some(h) if self.rng.chance(0.8) => h,
            _ => self.rng.pick(&self.ids),
        };
        let id = self.invoke(c, node, op);
        let arrive = self.now + self.rng.range(100, 2_000);
        self.schedule(arrive, Event::ClientArrive { op: id });
        self.schedule(
            self.now + CLIENT_TIMEOUT_US,
            Event::ClientTimeout { op: id },
        );
    }

    pub(super) fn invoke(&mut self, client: usize, node: NodeId, op: KvOp) -> usize {
        let id = self.history.len();
        let seq = self.next_history_seq();
        self.trace(format!("c{client} → n{node} {op} (op {id})"));
        self.history.push(HistoryOp {
            id,
            client,
            node,
            op,
            invoke_seq: seq,
            invoke_us: self.now,
            outcome: Outcome::Pending,
            complete_seq: 0,
            complete_us: 0,
            proposed_at: None,
        });
        self.clients[client].in_flight = Some(id);
        id
    }

    pub(super) fn client_arrive(&mut self, op: usize) {
        if !self.history[op].is_pending() {
            return;
        }
        let x = self.history[op].node as usize - 1;
        if !self.nodes[x].is_up() {
            self.finish(op, Outcome::Failed("connection refused".into()));
            return;
        }
        self.submit_to_driver(x, op);
        self.after_input(x);
    }

    pub(super) fn client_timeout(&mut self, op: usize) {
        if !self.history[op].is_pending() {
            return;
        }
        let outcome = if self.history[op].op.is_read() {
            Outcome::Failed("timeout".into())
        } else {
            Outcome::Unknown("timeout".into())
        };
        let client = self.history[op].client;
        self.clients[client].leader_hint = None;
        self.finish(op, outcome);
    }

    /// Completes an operation (once). Returns false if it was already done.
    pub(super) fn finish(&mut self, op: usize, outcome: Outcome) -> bool {
        if !self.history[op].is_pending() {
            return false;
        }
        let seq = self.next_history_seq();
        let h = &mut self.history[op];
        h.outcome = outcome;
        h.complete_seq = seq;
        h.complete_us = self.now;
        let (client, node) = (h.client, h.node);
        let line = format!("c{client} ← n{node} op {} {}: {}", h.id, h.op, h.outcome);
        match &h.outcome {
            Outcome::Ok(out) => {
                self.stats.ops_ok += 1;
                let cl = &mut self.clients[client];
                cl.leader_hint = Some(node);
                let key = h.op.key().to_vec();
                match (out, &h.op) {
                    (KvOutput::Value(v), _) => {
                        cl.last_seen.insert(key, v.clone());
                    }
                    (KvOutput::Ok, KvOp::Set { value, .. } | KvOp::SetIfEq { value, .. }) => {
                        cl.last_seen.insert(key, value.clone());
                    }
                    _ => {}
                }
            }
            Outcome::Failed(_) => {
                self.stats.ops_failed += 1;
                if self.rng.chance(0.5) {
                    self.clients[client].retry = Some(self.history[op].op.clone());
                }
            }
            Outcome::Unknown(_) => {
                self.stats.ops_unknown += 1;
                if self.rng.chance(0.3) {
                    self.clients[client].retry = Some(self.history[op].op.clone());
                }
            }
            Outcome::Pending => {}
        }
        self.trace(line);
        self.clients[client].in_flight = None;
        if self.accepting_ops {
            // Think time after a success; back off after a failure, as a
            // real client does while the cluster elects a leader.
            let pause = if matches!(self.history[op].outcome, Outcome::Ok(_)) {
                self.rng.range(0, 20_000)
            } else {
                self.rng.range(20_000, 150_000)
            };
            self.schedule(self.now + pause, Event::ClientStart { client });
        }
        true
    }
}
