//! The network between the nodes: sending (with the weather's losses,
//! delays and duplicates, and partitions) and delivering a message to its
//! node's driver, after the connection's incarnation handshake.

use super::*;

impl World {
    pub(super) fn send(&mut self, m: Message) {
        self.send_rpc(m, 0);
    }

    /// Sends `m`; `rpc` pairs a snapshot chunk with its reply. False when a
    /// partition refused it at once (the transport noticed).
    pub(super) fn send_rpc(&mut self, m: Message, rpc: u64) -> bool {
        self.stats.messages_sent += 1;
        let (from, to) = (m.from as usize - 1, m.to as usize - 1);
        match self.net.send(&mut self.rng, self.now, from, to) {
            Fate::Unreachable => {
                self.stats.messages_dropped += 1;
                let line = format!("{} unreachable (partition)", fmt_message(&m));
                self.trace(line);
                // A transport notices a broken connection now and then.
                if self.rng.chance(0.5) {
                    if let Some(driver) = self.nodes[from].driver.as_mut() {
                        driver.report_unreachable(m.to);
                    }
                }
                return false;
            }
            Fate::Lost => {
                self.stats.messages_dropped += 1;
                let line = format!("{} lost", fmt_message(&m));
                self.trace(line);
            }
            Fate::Deliver(copies) => {
                let sent_at = self.now;
                let n = copies.len();
                for (i, (at, late)) in copies.into_iter().enumerate() {
                    self.schedule(
                        at,
                        Event::Deliver {
                            msg: m.clone(),
                            incarnation: self.nodes[from].incarnation,
                            sent_at,
                            dup: i > 0,
                            late,
                            rpc,
                        },
                    );
                }
                if n > 1 {
                    self.stats.messages_duplicated += 1;
                }
            }
        }
        true
    }

    pub(super) fn deliver(
        &mut self,
        msg: Message,
        incarnation: u64,
        sent_at: u64,
        dup: bool,
        late: bool,
        rpc: u64,
    ) {
        let (from, to) = (msg.from as usize - 1, msg.to as usize - 1);
        let mut line = fmt_message(&msg);
        if dup {
            line.push_str(" [duplicate]");
        }
        if late {
            line.push_str(&format!(" [late: sent at t={}]", fmt_time(sent_at)));
        }
        if !self.nodes[to].is_up() {
            self.stats.messages_dropped += 1;
            self.trace(format!("{line} dropped: n{} is down", msg.to));
            return;
        }
        if self.net.is_cut(from, to) {
            self.stats.messages_dropped += 1;
            self.trace(format!("{line} dropped: partition"));
            return;
        }
        self.stats.messages_delivered += 1;
        self.trace(line);
        // The connection's handshake: the receiver's book (durable) has the
        // sender's incarnation before it handles anything the sender sent.
        self.nodes[to].book.check(msg.from, incarnation);
        // Snapshot chunks and their replies go through the driver, as in
        // `RaftServer`: the core decides, the driver owns the bytes.
        match &msg.rpc {
            Rpc::InstallSnapshot(_) => return self.on_snapshot_chunk(to, msg, rpc),
            Rpc::InstallSnapshotReply(_) => return self.on_snapshot_reply(to, msg, rpc),
            _ => {}
        }
        if let Some(driver) = self.nodes[to].driver.as_mut() {
            if let Rpc::AppendEntries(a) = &msg.rpc {
                if a.prev_log_index < driver.core().snapshot_index() {
                    self.stats.appends_below_snapshot += 1;
                }
            }
            driver.step(msg);
        }
        self.after_input(to);
    }
}
