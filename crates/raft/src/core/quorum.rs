//! Majorities, written once (§5.2 elections, §5.3 commit, thesis §6.2
//! check-quorum and §6.4 ReadIndex all ask the same question: "does a
//! majority of the voters agree?").
//!
//! Each function takes the voters, this server included, as a slice. A joint
//! configuration (thesis §4.3, issue 15) will ask each question of two
//! slices and combine the answers: both majorities must agree.

use std::collections::BTreeMap;

use crate::types::NodeId;

/// How many voters make a majority (§5.2: "a majority of the servers").
pub(crate) fn majority(voters: &[NodeId]) -> usize {
    voters.len() / 2 + 1
}

/// Whether the voters for which `agrees` holds form a majority.
pub(crate) fn has_majority(voters: &[NodeId], agrees: impl Fn(NodeId) -> bool) -> bool {
    voters.iter().filter(|&&id| agrees(id)).count() >= majority(voters)
}

/// The largest value a majority of the voters has reached, each voter at
/// `acked(id)`: the highest index `N` with `acked ≥ N` on a majority (§5.3's
/// "a majority of matchIndex[i] ≥ N"). As etcd's `CommittedIndex`.
pub(crate) fn agreed_value(voters: &[NodeId], acked: impl Fn(NodeId) -> u64) -> u64 {
    let mut values: Vec<u64> = voters.iter().map(|&id| acked(id)).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    // `majority` is between 1 and `voters.len()` for a non-empty slice; a
    // core always has itself among its voters.
    values.get(majority(voters) - 1).copied().unwrap_or(0)
}

/// Where an election stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority granted its vote.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// The outcome of an election with `votes` (voter → granted) so far; votes
/// from servers that are not voters do not count.
pub(crate) fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if has_majority(voters, |id| votes.get(&id) == Some(&true)) {
        VoteResult::Won
    } else if has_majority(voters, |id| votes.get(&id) == Some(&false)) {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_is_more_than_half() {
        assert_eq!(majority(&[1]), 1);
        assert_eq!(majority(&[1, 2]), 2);
        assert_eq!(majority(&[1, 2, 3]), 2);
        assert_eq!(majority(&[1, 2, 3, 4]), 3);
        assert_eq!(majority(&[1, 2, 3, 4, 5]), 3);
    }

    #[test]
    fn the_agreed_value_is_the_largest_a_majority_reached_by_brute_force() {
        // Every assignment of values 0..4 to 3, 4 and 5 voters: the answer
        // is the largest N such that the voters at N or above are a majority.
        for n in 1..=5u64 {
            let voters: Vec<NodeId> = (1..=n).collect();
            let assignments = 4u64.pow(n as u32);
            for code in 0..assignments {
                let acked = |id: NodeId| (code / 4u64.pow((id - 1) as u32)) % 4;
                let brute = (0..4)
                    .rev()
                    .find(|&v| has_majority(&voters, |id| acked(id) >= v))
                    .unwrap_or(0);
                assert_eq!(agreed_value(&voters, acked), brute, "n={n} code={code}");
            }
        }
    }

    #[test]
    fn an_election_is_won_or_lost_by_a_majority_and_only_voters_count() {
        let voters = [1, 2, 3];
        let mut votes = BTreeMap::from([(1, true)]);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(9, true); // not a voter
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(2, false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(3, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
        let lost = BTreeMap::from([(1, true), (2, false), (3, false)]);
        assert_eq!(vote_result(&voters, &lost), VoteResult::Lost);
        assert_eq!(
            vote_result(&[1], &BTreeMap::from([(1, true)])),
            VoteResult::Won
        );
    }
}
