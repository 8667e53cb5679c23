//! The spool's own tests: adoption, order, torn tails, the bound.

use super::disk::crc32;
use super::*;
use bytes::Bytes;
use std::fs::OpenOptions;
use std::io::Write;

fn batch(first: i32, n: usize) -> Batch {
    Batch {
        req: Bytes::from(vec![first as u8; 100 + n]),
        records: n,
        first_seq: first,
        last_seq: first + n as i32 - 1,
        dequeued: false,
    }
}

#[test]
fn crc32_is_the_ieee_one() {
    assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    // The parts run on one from another.
    assert_eq!(crc32(&[b"1234", b"", b"56789"]), 0xCBF4_3926);
    assert_eq!(crc32(&[]), 0);
}

#[test]
fn a_dead_runs_records_are_adopted_in_order_and_a_torn_tail_is_cut() {
    let root = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: root.path().to_path_buf(),
        max_bytes: 1 << 20,
    };
    let (mut first, _) = Spool::open(&cfg, "a").unwrap();
    for i in 0..3 {
        first.push(batch(i * 10, 10)).unwrap();
    }
    // The agent read the first batch only.
    assert_eq!(first.next_unsent().unwrap().first_seq, 0);
    first.ack_inflight(false);
    let dir = first.sources.last().unwrap().dir.clone();
    drop(first);
    // A crash in the middle of a fourth append.
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("data"))
        .unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();

    let (mut second, opened) = Spool::open(&cfg, "b").unwrap();
    assert_eq!((opened.adopted_runs, opened.torn), (1, 1));
    second.push(batch(100, 5)).unwrap();
    let mut seen = Vec::new();
    while let Some(b) = second.next_unsent() {
        seen.push(b.first_seq);
    }
    assert_eq!(seen, [10, 20, 100]);
    assert_eq!(second.inflight_records(), 25);
    second.rewind();
    assert_eq!(second.next_unsent().unwrap().first_seq, 10);
    while second.next_unsent().is_some() {}
    second.ack_inflight(false);
    assert!(!dir.exists(), "a delivered run's directory is removed");
    assert_eq!(second.used(), 0);
}

#[test]
fn a_live_runs_spool_is_not_adopted_and_the_bound_holds() {
    let root = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: root.path().to_path_buf(),
        max_bytes: 400,
    };
    let (mut live, _) = Spool::open(&cfg, "a").unwrap();
    live.push(batch(0, 1)).unwrap();
    let (_other, opened) = Spool::open(&cfg, "b").unwrap();
    assert_eq!(opened.adopted_runs, 0);
    live.push(batch(1, 1)).unwrap();
    assert!(live.push(batch(2, 200)).is_err(), "past the bound");
}

#[test]
fn a_partly_written_last_batch_is_kept_and_sent_again_the_rest_confirmed() {
    let root = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: root.path().to_path_buf(),
        max_bytes: 1 << 20,
    };
    let (mut s, _) = Spool::open(&cfg, "a").unwrap();
    for i in 0..3 {
        s.push(batch(i * 10, 10)).unwrap();
    }
    while s.next_unsent().is_some() {}
    // The agent read everything but the third frame was cut short: only it goes again.
    assert_eq!(s.ack_inflight(true), 10);
    assert_eq!(s.inflight_records(), 0);
    assert_eq!(s.next_unsent().map(|b| b.first_seq), Some(20));
    assert!(s.next_unsent().is_none());
    assert_eq!(s.ack_inflight(false), 0);
    assert_eq!(s.used(), 0);
}
