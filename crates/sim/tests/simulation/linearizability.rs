//! The linearizability checker accepts a linearizable history and rejects a
//! stale read.

use super::*;

fn op(id: usize, op: RegisterOp, output: RegisterOutput, call: u64, ret: Option<u64>) -> LinOp {
    LinOp {
        id,
        op,
        output,
        call,
        ret,
    }
}

fn w(v: &str) -> RegisterOp {
    RegisterOp::Write(v.as_bytes().to_vec())
}

fn read(v: Option<&str>) -> RegisterOutput {
    RegisterOutput::Value(v.map(|s| s.as_bytes().to_vec()))
}

fn cas(expected: &str, new: &str) -> RegisterOp {
    RegisterOp::Cas {
        expected: expected.as_bytes().to_vec(),
        new: new.as_bytes().to_vec(),
    }
}

#[test]
fn the_linearizability_checker_accepts_a_linearizable_history_and_rejects_a_stale_read() {
    use RegisterOp::{Incr, Read};
    use RegisterOutput::{CasFailed, Integer, Ok, Unknown};
    const BUDGET: u64 = 100_000;

    // Sequential: write 1, read 1, cas 1→2 ok, cas 1→3 fails, read 2, incr → 3.
    let good = vec![
        op(0, w("1"), Ok, 1, Some(2)),
        op(1, Read, read(Some("1")), 3, Some(4)),
        op(2, cas("1", "2"), Ok, 5, Some(6)),
        op(3, cas("1", "3"), CasFailed, 7, Some(8)),
        op(4, Read, read(Some("2")), 9, Some(10)),
        op(5, Incr, Integer(3), 11, Some(12)),
    ];
    assert_eq!(check_register(&good, BUDGET), LinResult::Linearizable);

    // Concurrent: a read overlapping a write may see either value.
    let overlap = vec![
        op(0, w("1"), Ok, 1, Some(2)),
        op(1, w("2"), Ok, 3, Some(6)),
        op(2, Read, read(Some("1")), 4, Some(5)),
        op(3, Read, read(Some("2")), 7, Some(8)),
    ];
    assert_eq!(check_register(&overlap, BUDGET), LinResult::Linearizable);

    // A stale read: write 2 completed before the read began, which still
    // returned 1 (what a deposed leader answering locally would do).
    let stale = vec![
        op(0, w("1"), Ok, 1, Some(2)),
        op(1, w("2"), Ok, 3, Some(4)),
        op(2, Read, read(Some("1")), 5, Some(6)),
    ];
    assert!(matches!(
        check_register(&stale, BUDGET),
        LinResult::Violation { op: 2, .. }
    ));

    // An unknown write may have happened (the read sees it)...
    let unknown_seen = vec![
        op(0, w("1"), Ok, 1, Some(2)),
        op(1, w("2"), Unknown, 3, None),
        op(2, Read, read(Some("2")), 10, Some(11)),
        op(3, Read, read(Some("2")), 12, Some(13)),
    ];
    assert_eq!(
        check_register(&unknown_seen, BUDGET),
        LinResult::Linearizable
    );
    // ...or not at all (the reads never see it)...
    let unknown_unseen = vec![
        op(0, w("1"), Ok, 1, Some(2)),
        op(1, w("2"), Unknown, 3, None),
        op(2, Read, read(Some("1")), 10, Some(11)),
    ];
    assert_eq!(
        check_register(&unknown_unseen, BUDGET),
        LinResult::Linearizable
    );
    // ...but not "happened, then un-happened".
    let flicker = vec![
        op(0, w("1"), Ok, 1, Some(2)),
        op(1, w("2"), Unknown, 3, None),
        op(2, Read, read(Some("2")), 10, Some(11)),
        op(3, Read, read(Some("1")), 12, Some(13)),
    ];
    assert!(matches!(
        check_register(&flicker, BUDGET),
        LinResult::Violation { op: 3, .. }
    ));

    // Lost update: two CAS from the same value both succeed.
    let lost_update = vec![
        op(0, w("0"), Ok, 1, Some(2)),
        op(1, cas("0", "a"), Ok, 3, Some(6)),
        op(2, cas("0", "b"), Ok, 4, Some(7)),
    ];
    assert!(matches!(
        check_register(&lost_update, BUDGET),
        LinResult::Violation { .. }
    ));

    // INCR on a non-integer is an error and changes nothing; on nil it
    // starts from 0. A duplicated INCR (two results 1 and 1) is not linearizable.
    let incr = vec![
        op(0, w("x"), Ok, 1, Some(2)),
        op(1, Incr, RegisterOutput::Error, 3, Some(4)),
        op(2, Read, read(Some("x")), 5, Some(6)),
    ];
    assert_eq!(check_register(&incr, BUDGET), LinResult::Linearizable);
    let duplicated_incr = vec![
        op(0, Incr, Integer(1), 1, Some(4)),
        op(1, Incr, Integer(1), 2, Some(5)),
    ];
    assert!(matches!(
        check_register(&duplicated_incr, BUDGET),
        LinResult::Violation { .. }
    ));

    // Keys are checked separately: a stale read on one key is reported
    // under that key only.
    let history: Vec<(Vec<u8>, LinOp)> = good
        .iter()
        .cloned()
        .map(|o| (b"a".to_vec(), o))
        .chain(stale.iter().cloned().map(|o| (b"b".to_vec(), o)))
        .collect();
    let verdict = check_history(&history, BUDGET);
    assert_eq!(verdict.violations.len(), 1);
    assert_eq!(verdict.violations[0].0, b"b".to_vec());
}
