//! A jail cannot make boundary grow without bound by parking blocking calls in the connect
//! supervisor: every `sendmsg` goes through it, and one that has to wait (its socket is full)
//! waits on a thread of boundary's. Before the bound, a jailed program that filled a
//! socketpair and started hundreds of threads each sending 1 MiB on it got boundary (and
//! nsjail's sender) a thread, a descriptor and a 1 MiB copy per send: GBs at the jail's will.
//! Now at most 64 calls wait on threads at once (the rest wait in the kernel, as the jail's
//! own threads do) and a waiting stream send keeps at most 64 KiB. The positive control: when
//! the jail reads its socketpair, every parked send completes.
//!
//! Needs root and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

/// The jailed program: fills one end of a socketpair, starts `N` threads that each `sendmsg`
/// 1 MiB on it (they all wait), says PARKED, waits for a line on stdin, then reads everything
/// and reports how many sends completed.
const FLOOD: &str = r#"
import socket, sys, threading, time
n = int(sys.argv[1])
a, b = socket.socketpair()
a.setblocking(False)
try:
    while True:
        a.send(b"x" * 65536)
except BlockingIOError:
    pass
a.setblocking(True)
done = []
lock = threading.Lock()
def send():
    sent = a.sendmsg([b"y" * (1 << 20)])
    with lock:
        done.append(sent)
threads = [threading.Thread(target=send, daemon=True) for _ in range(n)]
for t in threads:
    t.start()
print("PARKED", flush=True)
sys.stdin.readline()
b.setblocking(False)
deadline = time.time() + 120
while len(done) < n and time.time() < deadline:
    try:
        b.recv(1 << 20)
    except BlockingIOError:
        time.sleep(0.01)
print("completed", len(done), flush=True)
"#;

const SENDS: usize = 300;

/// Threads and resident KiB of `pid` and its descendants (nsjail's sender is one).
fn tree_usage(pid: u32) -> (usize, u64) {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(parent) && !pids.contains(&p) {
                pids.push(p);
            }
        }
        i += 1;
    }
    let mut threads = 0;
    let mut rss = 0;
    for p in pids {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if !comm.starts_with("boundary") {
            continue; // the jail's own processes (init, python) are not boundary's cost
        }
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        for l in status.lines() {
            let num = |v: &str| v.split_whitespace().next().unwrap().parse::<u64>().unwrap();
            if let Some(v) = l.strip_prefix("Threads:") {
                threads += num(v) as usize;
            } else if let Some(v) = l.strip_prefix("VmRSS:") {
                rss += num(v);
            }
        }
    }
    (threads, rss)
}

#[test]
fn parked_sends_cannot_grow_boundary_without_bound() {
    require_root().unwrap();
    for (jail, flags) in both_jails() {
        let config = config_home(As::Root);
        let mut child = boundary_cmd(As::Root, config.path(), &[])
            .args(&flags)
            .args(["--", "python3", "-c", FLOOD, &SENDS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "PARKED", "{jail}: the flood did not start");
        // Wait until the supervisor holds as many waiting calls as it will (it stops growing),
        // at most 30 s; the old code reached one thread per send within a second or two.
        let mut last = tree_usage(child.id());
        for _ in 0..60 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let now = tree_usage(child.id());
            if now.0 == last.0 && now.0 > 64 {
                break;
            }
            last = now;
        }
        let (threads, rss_kib) = tree_usage(child.id());
        // 64 waiting calls (and in nsjail the sender's thread for each), plus boundary's own
        // runtime, proxy and audit threads.
        assert!(
            threads <= 64 * 2 + 40,
            "{jail}: boundary runs {threads} threads for {SENDS} parked sends (bound: 64 waiting calls)"
        );
        assert!(
            rss_kib < 128 * 1024,
            "{jail}: boundary holds {rss_kib} KiB with {SENDS} parked sends of 1 MiB"
        );
        // The positive control: reading the socketpair lets every send, queued ones too, finish.
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(status.success(), "{jail}: {status:?}\n{rest}\n{err}");
        assert_eq!(
            rest.trim(),
            format!("completed {SENDS}"),
            "{jail}: parked sends lost\n{err}"
        );
        eprintln!("{jail}: {threads} threads, {rss_kib} KiB with {SENDS} sends parked");
    }
}
