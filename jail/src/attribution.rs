//! Which jailed process made a connection to the proxy.
//!
//! Both jails send every `connect()` to the connect supervisor, which sees the calling thread
//! while it is blocked in the call (and every `sendto`/`sendmsg` with `MSG_FASTOPEN`, which
//! connects without `connect()` in nsjail). Before it makes a TCP connect, the supervisor notes the
//! socket's inode and the calling process (its host pid and start time) in a small bounded
//! table (`ConnectLog`). When the proxy accepts a connection it asks the [`Attributor`]:
//! one `sock_diag` lookup of the client's socket by its address pair, in the jail's network
//! namespace (nsjail: a netlink socket made inside it; landjail: the host's), gives the
//! inode; the table gives the process that connected, so a socket shared after a `fork` is
//! still attributed to the one that connected. The process's facts are read from `/proc`
//! then, at accept: the pid as seen in the jail (last `NSpid` field), its name, executable,
//! the first words of its command line (never its environment) and its parent's name.
//!
//! Never a guess: a process that has exited (or whose pid now names another process, which
//! the start time read at connect time shows) is reported as [`EXITED`]; a connection the
//! supervisor did not see being made as [`NOT_SEEN`]; a client socket already closed when the
//! proxy looks as [`CLOSED`]; a failed kernel query as [`LOOKUP_FAILED`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Stands for every field of a requester whose process has exited before the proxy accepted
/// its connection.
pub const EXITED: &str = "unknown (exited)";
/// Stands for every field of a requester whose connect the supervisor did not see (its note
/// was forgotten: more than 4,096 connects waited to be accepted).
pub const NOT_SEEN: &str = "unknown (connect not seen)";

/// Stands for every field of a requester whose socket was already closed when the proxy
/// looked (a closed socket has no inode left to find its connect by).
pub const CLOSED: &str = "unknown (socket closed)";
/// Stands for every field of a requester the kernel could not be asked about (the
/// `sock_diag` lookup failed; boundary's log says why).
pub const LOOKUP_FAILED: &str = "unknown (lookup failed)";

/// Words of the command line kept (the program and its first arguments).
const ARG_WORDS: usize = 3;
/// Bytes of the command line kept at most.
const ARG_BYTES: usize = 128;
/// Connects remembered until the proxy accepts them; the oldest is forgotten first (connects
/// that never reach the proxy, such as the jail's own loopback servers, age out this way).
const CAPACITY: usize = 4096;

/// The process that made a request, as the jail saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Its pid as seen inside the jail; `None` when unknown.
    pub pid: Option<u32>,
    /// Its name (`comm`), e.g. `curl`.
    pub name: String,
    /// Its executable's path, or why it is unknown.
    pub exe: String,
    /// The first words of its command line, space-separated (at most 3 words, 128 bytes).
    pub args: String,
    /// Its parent's name (`comm`).
    pub parent: String,
}

impl Requester {
    /// A requester that could not be found, every field saying `why`.
    pub fn unknown(why: &str) -> Self {
        Self {
            pid: None,
            name: why.into(),
            exe: why.into(),
            args: why.into(),
            parent: why.into(),
        }
    }
}

/// The process that made one connect, as the supervisor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Host pid of the process (thread group) that called `connect()`.
    pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22), which tells a reused pid apart.
    start: u64,
}

impl Caller {
    /// The process of thread `tid` (host pid), read while the thread is blocked in a syscall.
    pub(crate) fn of_thread(tid: u32) -> io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
        let pid = status_field(&status, "Tgid:")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other("no Tgid in /proc/<tid>/status"))?;
        let stat = Stat::read(pid)?;
        Ok(Self {
            pid,
            start: stat.start,
        })
    }
}

/// The sockets jailed processes connected, by inode, until the proxy accepts them.
#[derive(Debug, Default)]
pub(crate) struct ConnectLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    by_inode: HashMap<u64, Caller>,
    order: VecDeque<u64>,
}

impl ConnectLog {
    /// Notes that `caller` is connecting the socket with inode `inode`.
    pub(crate) fn note(&self, inode: u64, caller: Caller) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.by_inode.insert(inode, caller).is_none() {
            g.order.push_back(inode);
        }
        while g.order.len() > CAPACITY {
            if let Some(old) = g.order.pop_front() {
                g.by_inode.remove(&old);
            }
        }
    }

    /// The caller that connected `inode`, forgotten once taken.
    fn take(&self, inode: u64) -> Option<Caller> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let c = g.by_inode.remove(&inode)?;
        if let Some(i) = g.order.iter().position(|&x| x == inode) {
            g.order.remove(i);
        }
        Some(c)
    }
}

/// Notes the caller of a TCP connect on `sock` (made by thread `tid`) before the connect is
/// made, so the proxy can never accept the connection before it is noted.
pub(crate) fn note_connect(log: &ConnectLog, sock: &OwnedFd, tid: u32) {
    let inode = match nix::sys::stat::fstat(sock.as_raw_fd()) {
        Ok(st) => st.st_ino,
        Err(e) => {
            tracing::debug!(tid, error = %e, "attribution: cannot stat a connecting socket");
            return;
        }
    };
    match Caller::of_thread(tid) {
        Ok(c) => log.note(inode, c),
        Err(e) => tracing::debug!(tid, error = %e, "attribution: cannot read the caller"),
    }
}

/// Finds the jailed process behind a connection the proxy accepted; one per jail, shared by
/// every listener.
#[derive(Debug)]
pub struct Attributor {
    /// A sock_diag socket in the network namespace of the jail's sockets.
    diag: Mutex<OwnedFd>,
    connects: Arc<ConnectLog>,
    /// The jail has its own PID namespace (nsjail).
    own_pid_ns: bool,
}

impl Attributor {
    /// `own_pid_ns`: the jail's processes have a PID namespace of their own (nsjail).
    pub(crate) fn new(diag: OwnedFd, connects: Arc<ConnectLog>, own_pid_ns: bool) -> Self {
        Self {
            diag: Mutex::new(diag),
            connects,
            own_pid_ns,
        }
    }

    /// The process that made the connection from `peer` to `dest` (the address the client
    /// connected to: the proxy's, or the original destination of a redirected connection).
    pub fn requester(&self, peer: SocketAddr, dest: SocketAddr) -> Requester {
        let inode = {
            let diag = self.diag.lock().unwrap_or_else(|p| p.into_inner());
            crate::supervisor::diag::tcp_socket_inode(&diag, peer, dest)
        };
        let inode = match inode {
            Ok(Some(i)) => i,
            Ok(None) => {
                // The client closed its socket before we looked: it may still be running,
                // but which process it was cannot be told any more.
                tracing::debug!(%peer, %dest, "attribution: the client socket is gone");
                return Requester::unknown(CLOSED);
            }
            Err(e) => {
                tracing::warn!(%peer, %dest, error = %e, "attribution: sock_diag lookup failed");
                return Requester::unknown(LOOKUP_FAILED);
            }
        };
        match self.connects.take(inode) {
            Some(caller) => describe(caller, self.own_pid_ns),
            None => Requester::unknown(NOT_SEEN),
        }
    }
}

/// Reads what the requester record says about `caller`, or [`EXITED`] when it is gone.
/// `own_pid_ns`: the jail has a PID namespace of its own (nsjail), so the pid it sees is read
/// from `NSpid`; otherwise it is the host's. A pidfd opened first, still running after the
/// reads, shows they were all of that process (a pid is not reused while its process lives);
/// the start time shows the pidfd is the process that connected.
fn describe(caller: Caller, own_pid_ns: bool) -> Requester {
    let pid = caller.pid;
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
        return Requester::unknown(EXITED);
    };
    let Some(stat) = Stat::read(pid).ok().filter(|s| s.start == caller.start) else {
        return Requester::unknown(EXITED);
    };
    let jail_pid = if own_pid_ns {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| status_field(&s, "NSpid:").map(|v| v.to_string()))
            .and_then(|v| v.split_whitespace().last().and_then(|p| p.parse().ok()))
    } else {
        Some(pid)
    };
    let exe = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => format!("unknown ({})", e.kind()),
    };
    let args = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| first_words(&b))
        .unwrap_or_else(|_| EXITED.into());
    let parent = std::fs::read_to_string(format!("/proc/{}/comm", stat.ppid))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| EXITED.into());
    if !still_running(&pidfd) {
        return Requester::unknown(EXITED);
    }
    Requester {
        pid: jail_pid,
        name: stat.comm,
        exe,
        args,
        parent,
    }
}

/// The fields of `/proc/<pid>/stat` attribution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: u32,
    start: u64,
}

impl Stat {
    fn read(pid: u32) -> io::Result<Self> {
        let text = std::fs::read(format!("/proc/{pid}/stat"))?;
        Self::parse(&text).ok_or_else(|| io::Error::other("unexpected /proc/<pid>/stat"))
    }

    /// `pid (comm) state ppid ...`, the start time being field 22; `comm` may hold spaces
    /// and parentheses, so the fields are counted from its last `)`.
    fn parse(text: &[u8]) -> Option<Self> {
        let open = text.iter().position(|&b| b == b'(')?;
        let close = text.iter().rposition(|&b| b == b')')?;
        let comm = String::from_utf8_lossy(text.get(open + 1..close)?).into_owned();
        let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Self {
            comm,
            ppid: fields.get(1)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }
}

/// True while the process runs (a pidfd turns readable when it exits).
fn still_running(pidfd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key))
}

/// The first [`ARG_WORDS`] NUL-separated words of a command line, space-joined and cut to
/// [`ARG_BYTES`] on a character boundary, with the secrets a command line often carries
/// replaced by `***` ([`hide_secret`]): audit records go to the workspace owner's log system,
/// which must not learn `curl -u user:password` from them.
fn first_words(cmdline: &[u8]) -> String {
    let mut words: Vec<String> = Vec::new();
    for w in cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .take(ARG_WORDS)
    {
        let w = String::from_utf8_lossy(w);
        let after = words.last().map(String::as_str);
        words.push(hide_secret(after, &w));
    }
    let mut s = words.join(" ");
    if s.len() > ARG_BYTES {
        let mut end = ARG_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Options whose next word is a credential (curl, wget, git, database clients, CLIs).
const SECRET_OPTIONS: [&str; 14] = [
    "-u",
    "--user",
    "-U",
    "--proxy-user",
    "-H",
    "--header",
    "--oauth2-bearer",
    "-p",
    "--password",
    "--http-password",
    "--token",
    "--api-key",
    "--auth",
    "-E",
];

/// Words whose value after `=` (or after the option name) is a credential.
const SECRET_KEYS: [&str; 7] = [
    "pass",
    "token",
    "secret",
    "key",
    "auth",
    "credential",
    "bearer",
];

/// `word`, or `***` where it is (or holds) a credential: the word after a credential option,
/// `--password=x` and `TOKEN=x` forms, `-pPASSWORD`, and a URL's password (or its user part
/// alone, which is often a token).
fn hide_secret(previous: Option<&str>, word: &str) -> String {
    if previous.is_some_and(|p| SECRET_OPTIONS.contains(&p)) {
        return "***".into();
    }
    if let Some((key, _)) = word.split_once('=') {
        let k = key.to_ascii_lowercase();
        if SECRET_KEYS.iter().any(|s| k.contains(s)) || SECRET_OPTIONS.contains(&key) {
            return format!("{key}=***");
        }
    }
    // `mysql -pPASSWORD`, `curl -uuser:password`.
    for short in ["-p", "-u"] {
        if word.len() > 2 && word.starts_with(short) && !word.starts_with("--") {
            return format!("{short}***");
        }
    }
    if let Some((scheme, rest)) = word.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some((user_info, host)) = rest[..end].rsplit_once('@') {
            // A user part alone is often the token itself (`https://TOKEN@github.com`).
            let shown = user_info
                .split_once(':')
                .map_or("***".into(), |u| format!("{}:***", u.0));
            return format!("{scheme}://{shown}@{host}{}", &rest[end..]);
        }
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_past_a_name_with_spaces_and_parentheses() {
        let line = b"1234 (my (odd) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                comm: "my (odd) name".into(),
                ppid: 77,
                start: 98765,
            })
        );
        for n in 0..line.len() {
            let _ = Stat::parse(&line[..n]);
        }
        assert_eq!(Stat::parse(b"garbage"), None);
    }

    #[test]
    fn the_command_line_keeps_its_first_words_only() {
        assert_eq!(
            first_words(b"curl\0-s\0https://example.com/\0--secret\0x\0"),
            "curl -s https://example.com/"
        );
        assert_eq!(first_words(b"python3\0"), "python3");
        // Credentials never reach the record.
        for (cmdline, want) in [
            (&b"curl\0-u\0alice:s3cret\0https://x/\0"[..], "curl -u ***"),
            (b"curl\0-H\0Authorization: Bearer abc\0", "curl -H ***"),
            (b"mysql\0-pS3cret\0db\0", "mysql -p*** db"),
            (b"curl\0-ualice:s3cret\0", "curl -u***"),
            (
                b"git\0clone\0https://bob:ghp_tok@github.com/o/r\0",
                "git clone https://bob:***@github.com/o/r",
            ),
            (
                b"git\0clone\0https://ghp_tok@github.com/o/r\0",
                "git clone https://***@github.com/o/r",
            ),
            (b"tool\0--password=hunter2\0", "tool --password=***"),
            (
                b"env\0GITHUB_TOKEN=abc\0node\0",
                "env GITHUB_TOKEN=*** node",
            ),
            (b"python3\0-c\0print(1)\0", "python3 -c print(1)"),
        ] {
            let got = first_words(cmdline);
            assert_eq!(got, want);
            for secret in ["s3cret", "abc", "S3cret", "ghp_tok", "hunter2"] {
                assert!(!got.contains(secret), "{got}");
            }
        }
        assert_eq!(first_words(b""), "");
        let long = format!("{}\0", "é".repeat(100));
        let w = first_words(long.as_bytes());
        assert!(w.len() <= ARG_BYTES && w.chars().all(|c| c == 'é'), "{w}");
    }

    #[test]
    fn this_process_is_described_as_itself() {
        let me = Caller::of_thread(std::process::id()).unwrap();
        let r = describe(me, true);
        assert_eq!(r.pid, Some(std::process::id()));
        assert_eq!(
            r.exe,
            std::env::current_exe().unwrap().display().to_string()
        );
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(r.name, comm.trim_end());
        assert!(!r.parent.is_empty() && r.parent != EXITED);
    }

    /// A process that exited, or a pid now used by another process (a different start time),
    /// is reported as exited, never described.
    #[test]
    fn an_exited_or_reused_pid_is_never_described() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let caller = Caller::of_thread(child.id()).ok();
        child.wait().unwrap();
        if let Some(caller) = caller {
            assert_eq!(describe(caller, true), Requester::unknown(EXITED));
        }
        let me = Caller::of_thread(std::process::id()).unwrap();
        let reused = Caller {
            start: me.start + 1,
            ..me
        };
        assert_eq!(describe(reused, false), Requester::unknown(EXITED));
    }

    #[test]
    fn the_log_is_bounded_and_forgets_what_it_hands_out() {
        let log = ConnectLog::default();
        let c = Caller { pid: 1, start: 1 };
        for i in 0..(CAPACITY as u64 + 10) {
            log.note(i, c);
        }
        assert_eq!(log.take(0), None, "the oldest entries were forgotten");
        assert_eq!(log.take(10), Some(c));
        assert_eq!(log.take(10), None, "an entry is handed out once");
        let g = log.inner.lock().unwrap();
        assert_eq!(g.by_inode.len(), g.order.len());
    }

    /// The cost per new connection, for BENCHMARKS.md (prints, asserts nothing about time):
    /// `cargo test --release -p boundary-jail --lib attribution::tests::cost_per_connection
    /// -- --ignored --nocapture`. The supervisor's note before a connect, and the proxy's
    /// lookup when it accepts (sock_diag + /proc), against a plain connect + accept.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn cost_per_connection() {
        const N: u32 = 2000;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = l.local_addr().unwrap();
        let log = Arc::new(ConnectLog::default());
        let a = Attributor::new(crate::supervisor::diag::open().unwrap(), log.clone(), true);
        let (mut plain, mut note, mut lookup) = (0u128, 0u128, 0u128);
        for _ in 0..N {
            let t = std::time::Instant::now();
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let fd: OwnedFd = sock.try_clone().unwrap().into();
            let t_note = std::time::Instant::now();
            note_connect(&log, &fd, std::process::id());
            note += t_note.elapsed().as_nanos();
            sock.connect(&dest.into()).unwrap();
            let (_acc, peer) = l.accept().unwrap();
            let t_lookup = std::time::Instant::now();
            let r = a.requester(peer, dest);
            lookup += t_lookup.elapsed().as_nanos();
            plain += t.elapsed().as_nanos();
            assert_eq!(r.pid, Some(std::process::id()));
        }
        // The two halves of the lookup: the /proc reads alone.
        let me = Caller::of_thread(std::process::id()).unwrap();
        let us = |ns: u128| ns as f64 / f64::from(N) / 1000.0;
        for (jail, own_pid_ns) in [("nsjail", true), ("landjail", false)] {
            let t = std::time::Instant::now();
            for _ in 0..N {
                assert!(describe(me, own_pid_ns).pid.is_some());
            }
            let proc_reads = t.elapsed().as_nanos();
            println!("{jail}: of which /proc reads {:.1} us", us(proc_reads));
        }
        println!(
            "per connection: note {:.1} us, lookup {:.1} us, whole round (socket, note, \
             connect, accept, lookup) {:.1} us",
            us(note),
            us(lookup),
            us(plain)
        );
    }

    /// End to end in this process: a connect noted by inode is found again from the
    /// accepted side's addresses; one never noted says so.
    #[test]
    fn an_accepted_connection_names_the_process_that_noted_its_connect() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = l.local_addr().unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let log = Arc::new(ConnectLog::default());
        let fd: OwnedFd = sock.try_clone().unwrap().into();
        note_connect(&log, &fd, std::process::id());
        sock.connect(&dest.into()).unwrap();
        let (_accepted, peer) = l.accept().unwrap();
        let a = Attributor::new(crate::supervisor::diag::open().unwrap(), log.clone(), true);
        let r = a.requester(peer, dest);
        assert_eq!(r.pid, Some(std::process::id()));
        assert_eq!(
            r.exe,
            std::env::current_exe().unwrap().display().to_string()
        );
        // Taken once: a second lookup has no note any more.
        assert_eq!(a.requester(peer, dest), Requester::unknown(NOT_SEEN));
        drop(sock);
        drop(fd);
        let r = a.requester(peer, dest);
        assert!(r.pid.is_none(), "{r:?}");
        // Closed and its note still there: the socket cannot be told any more.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let fd: OwnedFd = sock.try_clone().unwrap().into();
        note_connect(&log, &fd, std::process::id());
        sock.connect(&dest.into()).unwrap();
        let (_accepted2, peer2) = l.accept().unwrap();
        drop((sock, fd));
        assert_eq!(a.requester(peer2, dest), Requester::unknown(CLOSED));
        // An IPv6 socket connected to the IPv4 listener's IPv4-mapped address (the accepted
        // side sees plain IPv4) is found too.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        let fd: OwnedFd = sock.try_clone().unwrap().into();
        note_connect(&log, &fd, std::process::id());
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", dest.port())
            .parse()
            .unwrap();
        sock.connect(&mapped.into()).unwrap();
        let (_accepted, peer) = l.accept().unwrap();
        assert!(peer.is_ipv4());
        assert_eq!(a.requester(peer, dest).pid, Some(std::process::id()));
    }
}
