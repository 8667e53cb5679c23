//! Test helpers that run the two peer binaries as real processes: the coderd sink (its stdout
//! lines collected) and the agent log proxy (killable, restartable). The binaries' paths come
//! from the caller (`env!("CARGO_BIN_EXE_boundary-coderd-sink")` in a test of this package).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A running `boundary-coderd-sink`.
pub struct SinkProcess {
    child: Child,
    /// The DRPC address it listens on.
    pub addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SinkProcess {
    /// Starts the sink on a free loopback port and waits until it listens.
    pub fn spawn(bin: &Path, json: bool) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut addr = None;
        let mut line = String::new();
        while stderr.read_line(&mut line)? > 0 {
            if let Some(a) = line
                .trim()
                .strip_prefix("boundary-coderd-sink listening on ")
            {
                addr = Some(a.to_string());
                break;
            }
            line.clear();
        }
        let Some(addr) = addr else {
            bail!("boundary-coderd-sink exited before listening");
        };
        std::thread::spawn(move || {
            // Keep draining stderr so the sink never blocks on a full pipe.
            let mut sink = std::io::sink();
            let _ = std::io::copy(&mut stderr, &mut sink);
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                l.lock().expect("lines").push(line);
            }
        });
        Ok(Self { child, addr, lines })
    }

    /// Lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits until at least `n` lines were printed (or `limit` passes), then returns all.
    pub fn wait_for_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let have = self.lines.lock().expect("lines").len();
            if have >= n || start.elapsed() > limit {
                return self.lines();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `boundary-agent-log-proxy`.
pub struct LogProxyProcess {
    child: Child,
    /// Its stderr (tracing output), collected line by line.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl LogProxyProcess {
    /// Starts the proxy and waits until its socket exists.
    pub fn spawn(
        bin: &Path,
        socket: &Path,
        coderd: &str,
        v1_only: bool,
        buffer: usize,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--socket")
            .arg(socket)
            .args(["--coderd", coderd, "--buffer", &buffer.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if v1_only {
            cmd.arg("--v1-only");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = BufReader::new(child.stderr.take().expect("piped"));
        let s = stderr.clone();
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                s.lock().expect("stderr").push(line);
            }
        });
        let start = Instant::now();
        let mut me = Self { child, stderr };
        while !socket_listening(socket) {
            if let Some(status) = me.child.try_wait()? {
                bail!(
                    "boundary-agent-log-proxy exited with {status}: {:?}",
                    me.stderr_lines()
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "boundary-agent-log-proxy did not create {}",
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(me)
    }

    /// SIGKILL, as a crashed or OOM-killed agent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the proxy logs its counters and exits.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.child.wait()?;
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }

    /// What it logged so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr").clone()
    }
}

impl Drop for LogProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socket_listening(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// A fresh socket path in `dir`.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("boundary-audit.sock")
}
