//! Seed 101674 (3 nodes, all faults, 20 000 steps; pre-vote and check-quorum
//! off) served a stale read with no bug switch on. Scripted here on bare
//! cores so that it does not depend on the simulator's random choices.
//!
//! A follower that refuses an AppendEntries of an older term answers with
//! its *current* term but echoes the request's `read_round`. If the stale
//! request came from an earlier life of the node that now leads the current
//! term (a leader restarts with `read_round` back at 0), that leader takes
//! the echo for an acknowledgement of one of its own, future, heartbeat
//! rounds, and confirms ReadIndex reads that no majority confirmed (thesis
//! §6.4). Once it is deposed, it serves stale reads.

use std::collections::BTreeMap;

use raft::{
    MemoryStorage, Message, NodeId, RaftConfig, RaftCore, RaftState, ReadState, Rpc, Storage,
};

struct Net {
    cores: BTreeMap<NodeId, RaftCore>,
    disks: BTreeMap<NodeId, MemoryStorage>,
    reads: Vec<(NodeId, ReadState)>,
}

fn config() -> RaftConfig {
    RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..RaftConfig::default()
    }
}

impl Net {
    fn new() -> Self {
        let mut net = Net {
            cores: BTreeMap::new(),
            disks: BTreeMap::new(),
            reads: Vec::new(),
        };
        for id in 1..=3 {
            net.disks.insert(id, MemoryStorage::new());
            net.start(id, id);
        }
        net
    }

    /// (Re)starts `id` from its disk: volatile state, `read_round`
    /// included, starts over.
    fn start(&mut self, id: NodeId, seed: u64) {
        let recovered = self.disks.get_mut(&id).unwrap().recover().unwrap();
        let core = RaftCore::new(id, &[1, 2, 3], config(), recovered, seed).unwrap();
        self.cores.insert(id, core);
    }

    fn core(&mut self, id: NodeId) -> &mut RaftCore {
        self.cores.get_mut(&id).unwrap()
    }

    /// Persists and collects what `id` has to say.
    fn process(&mut self, id: NodeId) -> Vec<Message> {
        let mut out = Vec::new();
        let core = self.cores.get_mut(&id).unwrap();
        while core.has_ready() {
            let rd = core.ready();
            let disk = self.disks.get_mut(&id).unwrap();
            disk.persist(rd.hard_state.as_ref(), &rd.entries).unwrap();
            core.advance(&rd);
            out.extend(rd.messages.iter().cloned());
            out.extend(rd.persisted_messages.iter().cloned());
            self.reads
                .extend(rd.read_states.iter().map(|r| (id, r.clone())));
        }
        out
    }

    /// Delivers `msgs` and everything they cause, among `alive` only.
    fn deliver(&mut self, mut msgs: Vec<Message>, alive: &[NodeId]) {
        while !msgs.is_empty() {
            let mut next = Vec::new();
            for m in msgs {
                if alive.contains(&m.from) && alive.contains(&m.to) {
                    let to = m.to;
                    self.core(to).step(m);
                    next.extend(self.process(to));
                }
            }
            msgs = next;
        }
    }

    /// Ticks `id` until it campaigns, then runs the election among `alive`.
    fn elect(&mut self, id: NodeId, alive: &[NodeId]) {
        let term = self.core(id).term();
        while self.core(id).term() == term {
            self.core(id).tick();
        }
        let msgs = self.process(id);
        self.deliver(msgs, alive);
        assert_eq!(self.core(id).state(), RaftState::Leader);
    }

    /// A ReadIndex read on `id`; returns the heartbeats it triggers.
    fn read(&mut self, id: NodeId, read_id: u64) -> Vec<Message> {
        self.core(id).read_index(read_id).unwrap();
        self.process(id)
    }
}

#[test]
fn a_reply_to_a_request_from_a_previous_life_does_not_confirm_a_read() {
    let all = [1, 2, 3];
    let mut net = Net::new();
    // n1 leads term 1 and confirms a few reads: its read round reaches 5.
    net.elect(1, &all);
    for read_id in 1..=5 {
        let heartbeats = net.read(1, read_id);
        net.deliver(heartbeats, &all);
    }
    // One more round: its AppendEntries to n2 is delayed in the network.
    let delayed: Vec<Message> = net
        .read(1, 6)
        .into_iter()
        .filter(|m| m.to == 2 && matches!(&m.rpc, Rpc::AppendEntries(a) if a.read_round == 6))
        .collect();
    assert_eq!(delayed.len(), 1);

    // n1 restarts (read round back to 0) and leads again, in term 2.
    net.start(1, 100);
    net.elect(1, &all);
    assert_eq!(net.core(1).term(), 2);

    // The delayed term-1 request reaches n2, which refuses it; the
    // refusal (term 2, read round 6) is itself delayed.
    net.core(2).step(delayed[0].clone());
    let refusal = net.process(2);
    assert!(
        matches!(&refusal[..], [Message { rpc: Rpc::AppendEntriesReply(r), .. }] if r.term == 2 && !r.success)
    );

    // n1 is cut off. n2 and n3 elect n2 in term 3, which commits a write.
    net.elect(2, &[2, 3]);
    net.core(2).propose(b"x = new".to_vec()).unwrap();
    let msgs = net.process(2);
    net.deliver(msgs, &[2, 3]);
    let committed_elsewhere = net.core(2).commit_index();

    // Now a client reads on n1, which still believes it leads term 2.
    // Its heartbeats are lost; only the delayed refusal arrives.
    let _lost = net.read(1, 7);
    net.deliver(refusal, &all);

    let served = net
        .reads
        .iter()
        .find(|(id, r)| *id == 1 && r.id == 7)
        .map(|(_, r)| r.result);
    if let Some(Ok(index)) = served {
        assert!(
            index >= committed_elsewhere,
            "n1 confirmed a read at index {index} without any peer answering its round, \
             though index {committed_elsewhere} was committed by n2 in term 3: a stale read"
        );
    }
}
