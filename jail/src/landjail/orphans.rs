//! Jailed processes that detach (double fork, `setsid`) would outlive boundary: landjail has
//! no PID namespace whose end takes them along. They would keep the terminal open (and read
//! what the user types next into the shell) and keep running unsupervised. So boundary
//! becomes the subreaper of the jail: a process whose parent dies is reparented to boundary
//! instead of init, and when the jail is dropped every such child is killed and reaped.
//! A child counts as the jail's when it runs under more seccomp filters than boundary (every
//! jailed process inherits the jail's filter; processes the host program started itself do
//! not) and is not the target of another landjail of this process, which keeps running.
//! Limits: if boundary itself is killed with SIGKILL, they are reparented to init and live on;
//! a program running several landjails at once ends the detached processes of all of them
//! when the first one is dropped.

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

    /// Notes the jail's target, which other landjails' cleanups must leave alone.
    pub(crate) fn target(mut self, pid: u32) -> Self {
        targets().push(pid);
        self.target = Some(pid);
        self
    }
}

fn targets() -> std::sync::MutexGuard<'static, Vec<u32>> {
    TARGETS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Orphans {
    fn drop(&mut self) {
        if let Some(t) = self.target {
            targets().retain(|&p| p != t);
        }
        // Each round kills the current children; their own children are then reparented to
        // us and killed in the next round. A child we have not reaped keeps its pid, so the
        // pids read from /proc cannot be reused before we signal them.
        for _ in 0..10_000 {
            let kids = children();
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
    }
}

/// The jail's processes among our children (see the module documentation).
fn children() -> Vec<Pid> {
    let me = std::process::id();
    let Some(own_filters) = seccomp_filters(Path::new("/proc/self")) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let running = targets().clone();
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the command name (which may contain spaces and parentheses).
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
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
