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
    let dir = first.sources.last().unwrap().path.clone();
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

/// A run directory planted in the spool root by a jailed program of the same user: a `data`
/// that links to another file of the user (symbolic or hard link), a torn tail, an `ack.tmp`
/// link and a `lock` link. Adoption must leave every file they point to as it was, deliver
/// nothing from them, and a real dead run beside them is still adopted.
#[test]
fn planted_links_in_the_spool_are_never_followed_truncated_or_delivered() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: root.path().to_path_buf(),
        max_bytes: 1 << 20,
    };
    // A victim file with a valid entry at its start and more after it: read as a spool, the
    // bytes after the entry are a "torn tail" the old code cut off.
    let victim = elsewhere.path().join("victim");
    let mut bytes = super::disk::encode_entry(&batch(7, 3));
    bytes.extend_from_slice(b"precious user data that must stay");
    std::fs::write(&victim, &bytes).unwrap();
    let other_victim = elsewhere.path().join("other");
    std::fs::write(&other_victim, b"do not touch").unwrap();
    let absent = elsewhere.path().join("created-by-lock");

    let sym = root.path().join("000000000000000000000001-planted-symlink");
    std::fs::create_dir(&sym).unwrap();
    symlink(&victim, sym.join("data")).unwrap();
    std::fs::write(sym.join("ack"), "0").unwrap();
    symlink(&other_victim, sym.join("ack.tmp")).unwrap();
    symlink(&absent, sym.join("lock")).unwrap();

    let hard = root
        .path()
        .join("000000000000000000000002-planted-hardlink");
    std::fs::create_dir(&hard).unwrap();
    std::fs::hard_link(&victim, hard.join("data")).unwrap();
    std::fs::write(hard.join("ack"), "0").unwrap();

    // A run directory that is itself a link to a directory holding a spool.
    let linked_dir = elsewhere.path().join("dir");
    std::fs::create_dir(&linked_dir).unwrap();
    std::fs::write(
        linked_dir.join("data"),
        super::disk::encode_entry(&batch(9, 1)),
    )
    .unwrap();
    symlink(
        &linked_dir,
        root.path().join("000000000000000000000003-planted-dirlink"),
    )
    .unwrap();

    // FIFOs as lock and as data: opening either must not wait for a partner.
    for (n, name) in [(4, "lock"), (5, "data")] {
        let d = root
            .path()
            .join(format!("00000000000000000000000{n}-planted-fifo"));
        std::fs::create_dir(&d).unwrap();
        nix::unistd::mkfifo(&d.join(name), nix::sys::stat::Mode::S_IRWXU).unwrap();
    }

    // A genuine dead run: adopted (the positive control).
    let (mut dead, _) = Spool::open(&cfg, "dead").unwrap();
    dead.push(batch(50, 2)).unwrap();
    drop(dead);

    let (mut s, opened) = Spool::open(&cfg, "now").unwrap();
    let mut seen = Vec::new();
    while let Some(b) = s.next_unsent() {
        seen.push(b.first_seq);
    }
    assert_eq!(
        seen,
        [50],
        "only the genuine dead run's records are delivered"
    );
    assert_eq!(opened.adopted_runs, 1);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        bytes,
        "the linked file was changed"
    );
    assert_eq!(std::fs::read(&other_victim).unwrap(), b"do not touch");
    assert!(
        !absent.exists(),
        "a planted lock link created a file elsewhere"
    );
    s.ack_inflight(false);
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    assert_eq!(std::fs::read(&other_victim).unwrap(), b"do not touch");
    assert!(linked_dir.join("data").exists());
}

/// An entry header claiming 1 GiB over a sparse file (a dead run planted in a spool the jail
/// can write, as in landjail) is not read into memory: entries are at most one frame long.
#[test]
fn a_giant_entry_length_is_not_read() {
    let root = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        dir: root.path().to_path_buf(),
        max_bytes: 1 << 20,
    };
    let (mut dead, _) = Spool::open(&cfg, "dead").unwrap();
    dead.push(batch(1, 1)).unwrap();
    let dir = dead.sources.last().unwrap().path.clone();
    drop(dead);
    let data = OpenOptions::new()
        .append(true)
        .open(dir.join("data"))
        .unwrap();
    let mut header = vec![0u8; 20];
    header[..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    (&data).write_all(&header).unwrap();
    data.set_len(data.metadata().unwrap().len() + (1 << 30))
        .unwrap();
    let peak = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let before = peak();
    let (mut s, opened) = Spool::open(&cfg, "now").unwrap();
    let grown = peak().saturating_sub(before);
    assert!(grown < 64 << 10, "adoption grew the process by {grown} KiB");
    assert_eq!((opened.adopted_runs, opened.torn), (1, 1));
    assert_eq!(s.next_unsent().map(|b| b.first_seq), Some(1));
}
