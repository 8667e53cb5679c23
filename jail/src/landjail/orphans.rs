//! Jailed processes that detach (double fork, `setsid`) would outlive boundary: landjail has
//! no PID namespace whose end takes them along. They would keep the terminal open (and read
//! what the user types next into the shell) and keep running unsupervised. So boundary
//! becomes the subreaper of the jail: a process whose parent dies is reparented to boundary
//! instead of init, and when the jail is dropped the jail's processes are ended.
//! A child counts as the jail's when it runs under more seccomp filters than boundary (every
//! jailed process inherits the jail's filter; processes the host program started itself do
//! not) and is not the target of another landjail of this process, which keeps running.
//!
//! Ending them one generation at a time (kill our children, then the grandchildren that were
//! reparented to us, ...) can be outrun: a member can ask for a signal when its parent dies
//! (`PR_SET_PDEATHSIG`) and fork a replacement before the next round. So the whole tree is
//! stopped first (`SIGSTOP` cannot be caught or ignored, and a stopped process cannot fork or
//! react), walking `/proc` until one walk finds every member of the tree stopped; only then is
//! every member killed. The generation-by-generation rounds follow as a fallback (and reap).
//!
//! A target being started is noted before any cleanup can see it: starting one holds the list
//! of targets ([`Orphans::starting`]) from before the spawn until its pid is in it, and a
//! cleanup holds it from its first look at `/proc` to its last kill.
//!
//! Limits: if boundary itself is killed with SIGKILL, they are reparented to init and live on;
//! a program running several landjails at once ends the detached processes of all of them
//! when the first one is dropped; a tree whose members keep resuming each other (`SIGCONT`)
//! while stopping themselves races the walks, and the fallback rounds are then what is left
//! (an error is logged when jailed processes remain after them).

use std::io;
use std::path::Path;
use std::sync::Mutex;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tracing::debug;

/// Targets of the landjails of this process that are still running.
static TARGETS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Makes boundary the jail's subreaper; dropping it ends whatever of the jail is left.
pub(crate) struct Orphans {
    target: Option<u32>,
}

impl Orphans {
    /// Sets `PR_SET_CHILD_SUBREAPER` on this process (call before starting the target).
    pub(crate) fn adopt() -> io::Result<Orphans> {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        Ok(Orphans { target: None })
    }

    /// Holds off every landjail's cleanup until [`target`](Self::target) notes the target
    /// about to be started: from the moment its filter is installed it looks like a jailed
    /// process left behind, and a cleanup running meanwhile would stop and kill it (and reap it
    /// before its jail opened a pidfd). Take it just before the spawn.
    pub(crate) fn starting(&self) -> Starting {
        Starting(targets())
    }

    /// Notes the jail's target, which other landjails' cleanups must leave alone, and lets
    /// them run again.
    pub(crate) fn target(mut self, starting: Starting, pid: u32) -> Self {
        let mut running = starting.0;
        running.push(pid);
        self.target = Some(pid);
        self
    }
}

/// A target being started (see [`Orphans::starting`]); dropping it without a target (the
/// spawn failed) lets the cleanups run again.
pub(crate) struct Starting(std::sync::MutexGuard<'static, Vec<u32>>);

fn targets() -> std::sync::MutexGuard<'static, Vec<u32>> {
    TARGETS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Orphans {
    fn drop(&mut self) {
        // Held until the end: no landjail target starts while we look for what to end.
        let mut running = targets();
        if let Some(t) = self.target {
            running.retain(|&p| p != t);
        }
        let frozen = freeze(&running);
        if !frozen.is_empty() {
            debug!(
                count = frozen.len(),
                "landjail: ending the stopped jailed processes"
            );
        }
        for &p in &frozen {
            let _ = kill(p, Signal::SIGKILL);
        }
        // Each round kills the current children; their own children are then reparented to
        // us and killed in the next round. A child we have not reaped keeps its pid, so the
        // pids read from /proc cannot be reused before we signal them.
        for _ in 0..FALLBACK_ROUNDS {
            let kids = children(&running);
            if kids.is_empty() {
                return;
            }
            debug!(
                count = kids.len(),
                "landjail: ending jailed processes left behind"
            );
            for &k in &kids {
                let _ = kill(k, Signal::SIGKILL);
            }
            for &k in &kids {
                let _ = waitpid(k, None);
            }
        }
        tracing::error!(
            left = ?children(&running),
            "landjail: jailed processes are still running after boundary tried to end them; \
             they may outlive this run (kill them by hand; nsjail's PID namespace has no such limit)"
        );
    }
}

/// Rounds of the generation-by-generation fallback before giving up (loudly).
const FALLBACK_ROUNDS: usize = 10_000;
/// Walks of the tree while stopping it.
const FREEZE_WALKS: usize = 1_000;

/// Stops every process of the jail's tree and returns them once one walk of `/proc` found
/// the whole tree stopped (see the module documentation).
fn freeze(running: &[u32]) -> Vec<Pid> {
    let mut tree = Vec::new();
    for _ in 0..FREEZE_WALKS {
        tree = jail_tree(running);
        let running: Vec<Pid> = tree.iter().filter(|m| !m.stopped).map(|m| m.pid).collect();
        if running.is_empty() {
            break;
        }
        for &p in &running {
            let _ = kill(p, Signal::SIGSTOP);
        }
        for &p in &running {
            wait_stopped(p);
        }
    }
    tree.into_iter().map(|p| p.pid).collect()
}

/// Waits (briefly) until `pid` is stopped, a zombie or gone: the signal is delivered
/// asynchronously, and a process in an uninterruptible sleep stops only when it wakes.
fn wait_stopped(pid: Pid) {
    for _ in 0..1_000 {
        match state(Path::new(&format!("/proc/{pid}"))) {
            Some(s) if !is_stopped(s) => std::thread::sleep(std::time::Duration::from_micros(200)),
            _ => return,
        }
    }
}

/// One member of the jail's tree.
struct Member {
    pid: Pid,
    stopped: bool,
}

/// Every process of the jail's tree: our jailed children (not another landjail's target, one
/// of `running`) and all their descendants.
fn jail_tree(running: &[u32]) -> Vec<Member> {
    let me = std::process::id();
    let Some(own_filters) = seccomp_filters(Path::new("/proc/self")) else {
        return Vec::new();
    };
    // pid -> (parent, state), for the jailed processes only.
    let mut procs = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let (Some((ppid, st)), Some(filters)) = (stat(&e.path()), seccomp_filters(&e.path()))
        else {
            continue;
        };
        if filters > own_filters {
            procs.insert(pid, (ppid, st));
        }
    }
    let mut tree: Vec<u32> = procs
        .iter()
        .filter(|(pid, (ppid, _))| *ppid == me && !running.contains(pid))
        .map(|(pid, _)| *pid)
        .collect();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(_, (ppid, _))| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree.into_iter()
        .map(|pid| Member {
            pid: Pid::from_raw(pid as i32),
            stopped: is_stopped(procs[&pid].1),
        })
        .collect()
}

/// Stopped (`T`, or `t` under a tracer), or already dead (`Z`, `X`).
fn is_stopped(state: char) -> bool {
    matches!(state, 'T' | 't' | 'Z' | 'X')
}

/// Parent pid and state letter from `<proc_dir>/stat`.
fn stat(proc_dir: &Path) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // Fields after the command name (which may contain spaces and parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

fn state(proc_dir: &Path) -> Option<char> {
    stat(proc_dir).map(|(_, s)| s)
}

/// The jail's processes among our children, but the targets in `running` (see the module
/// documentation).
fn children(running: &[u32]) -> Vec<Pid> {
    let me = std::process::id();
    let Some(own_filters) = seccomp_filters(Path::new("/proc/self")) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let (ppid, _) = stat(&e.path())?;
            let jailed = seccomp_filters(&e.path())? > own_filters;
            (ppid == me && jailed && !running.contains(&pid)).then(|| Pid::from_raw(pid as i32))
        })
        .collect()
}

/// `Seccomp_filters` of `/proc/<pid>/status` (Linux 5.9 and later).
fn seccomp_filters(proc_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))?
        .trim()
        .parse()
        .ok()
}
