//! The four configurations (3 and 5 nodes, ReadIndex and lease reads, thesis
//! §6.4 and §6.4.1): under kill -9, pauses and partitions, every key's history
//! is linearizable. They run in parallel as the test harness sees fit (two at a
//! time on two cores).

use super::one_run::run;
use super::*;

#[test]
fn chaos_3_nodes_read_index_histories_are_linearizable() {
    run(
        Config {
            nodes: 3,
            lease_reads: false,
        },
        "chaos_3_nodes_read_index_histories_are_linearizable",
    );
}

#[test]
fn chaos_5_nodes_read_index_histories_are_linearizable() {
    run(
        Config {
            nodes: 5,
            lease_reads: false,
        },
        "chaos_5_nodes_read_index_histories_are_linearizable",
    );
}

#[test]
fn chaos_3_nodes_lease_reads_histories_are_linearizable() {
    run(
        Config {
            nodes: 3,
            lease_reads: true,
        },
        "chaos_3_nodes_lease_reads_histories_are_linearizable",
    );
}

#[test]
fn chaos_5_nodes_lease_reads_histories_are_linearizable() {
    run(
        Config {
            nodes: 5,
            lease_reads: true,
        },
        "chaos_5_nodes_lease_reads_histories_are_linearizable",
    );
}
