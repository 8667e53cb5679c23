//! `boundary selftest`: proves on this host, offline, that the jail holds.
//!
//! It starts an embedded upstream (`upstream.rs`: HTTP and HTTPS on loopback, its own CA
//! passed to the proxy with `--upstream-ca-file`, the name mapped with `--resolve`), then runs
//! the real `boundary` (this executable, with the user's flags, e.g. `--jail-type`) with the
//! escape probes of `boundary_jail::probe` as the jailed command, and `curl` for HTTPS when it
//! is installed. The probes are data: the tables of `table.rs`, `seccomp.rs`, `unix.rs` and
//! `kernel.rs` say what each row probes and which result proves it. As root it also creates
//! the workspace's far host (`boundary_farhost`), runs boundary next to it, and reports the
//! far host's [`Verdict`]: nothing arrived from the jail, and a control connection from
//! outside the jail did. No probe ever targets a real public address: without a far host the
//! targets are documentation addresses (192.0.2.0/24, 2001:db8::/32).
//!
//! Prints one row per check and exits 0 only if every enforcement check holds (1 otherwise,
//! 2 if the selftest itself could not run).
//!
//! Wiring: `main.rs` dispatches `"selftest" => selftest::main(&args[2..])` (the arguments after
//! the word `selftest`).

mod kernel;
mod report;
mod seccomp;
mod table;
mod unix;
mod upstream;
mod user;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
use boundary::config::{self, JailType};
use boundary_farhost::{FarHost, Verdict};
use boundary_jail::probe::{probe_args, ProbeResult, PROBE_ARG};

use report::{one_line, Outcome, Row};
use table::{Arg, Expect, ProbeSpec, Values};
use upstream::Upstream;
use user::{free_port, user_settings, which, TempDir, CLEARED_ENV};

/// The upstream's name inside the jail (resolved by the proxy through `--resolve`).
const HOST: &str = "selftest.boundary.test";
/// Text only the embedded upstream answers with.
const MARKER: &str = "boundary-selftest-upstream-ok";
/// Text of the proxy's 403 page (docs/interop.md §3).
const BLOCKED: &str = boundary_proxy::BLOCKED_TITLE;

/// Every row, in the order they are printed.
const TABLES: [&[ProbeSpec]; 5] = [
    table::NETWORK_AND_HOST,
    seccomp::PROBES,
    unix::PROBES,
    kernel::PROBES,
    table::PROCESSES,
];

/// `boundary selftest [flags]`: runs the selftest, prints the table, returns the exit code.
pub fn main(args: &[OsString]) -> u8 {
    match run(args) {
        Ok(code) => code.clamp(0, 255) as u8,
        Err(e) => {
            eprintln!("boundary selftest: {e:#}");
            2
        }
    }
}

/// Runs the selftest with `args` (boundary flags, passed on to the jailed runs).
pub fn run(args: &[OsString]) -> Result<i32> {
    let user = user_settings(args)?;
    let jail_type = user.cfg.jail_type;
    let landjail = jail_type == JailType::Landjail;
    let dir = TempDir::new()?;
    let mut notes = Vec::new();
    let far = far_host(landjail, &mut notes);
    let (far4, far6) = targets(far.as_ref(), landjail);
    let upstream = Upstream::start(dir.path(), far.as_ref())?;
    let values = Values {
        landjail,
        far_host: far.is_some(),
        root: is_root(),
        far4,
        far6,
        http_port: upstream.http_port,
        proxy_port: user.proxy_port.unwrap_or_else(free_port),
        dir: dir.path().to_path_buf(),
        audit: dir.path().join("audit.sock"),
        me: std::process::id(),
        near_netns: far.as_ref().map(FarHost::near_path).unwrap_or_default(),
        cgroups: kernel::own_cgroup_files(),
    };
    let probes: Vec<(&ProbeSpec, Vec<String>)> = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .filter_map(|spec| values.expand(spec).map(|args| (spec, args)))
        .collect();
    serve_sockets(&values, &probes)?;
    let port_args: Vec<String> = match user.flags.get("proxy_port") {
        [] => vec!["--proxy-port".into(), values.proxy_port.to_string()],
        _ => Vec::new(),
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n")?;
    let runs = Runs {
        exe: std::env::current_exe().context("locating the boundary executable")?,
        args,
        config,
        upstream_ca: upstream.ca.cert_path().to_path_buf(),
        audit: values.audit.clone(),
        port_args,
        xdg: dir.path().join("xdg"),
        workdir: dir.path().to_path_buf(),
        far: far.as_ref(),
    };
    let before = far.as_ref().map(FarHost::counters).transpose()?;
    let mut rows = runs.probe_rows(&probes)?;
    rows.extend(runs.curl_rows(upstream.https_port)?);
    if let (Some(f), Some(before)) = (&far, before) {
        rows.extend(far_rows(&f.verdict(before)?));
    }
    drop(upstream);
    Ok(report::print(jail_type, &rows, &notes))
}

/// The far host, as root; otherwise (or if it cannot be made) a note saying what is missing.
fn far_host(landjail: bool, notes: &mut Vec<String>) -> Option<FarHost> {
    if !is_root() {
        notes.push(if landjail {
            "not root: no far host counters; landjail probes target loopback (127.0.0.2, ::1)"
                .into()
        } else {
            "not root: no far host counters; targets are documentation addresses".into()
        });
        return None;
    }
    FarHost::new()
        .map_err(|e| {
            notes.push(format!(
                "no far host (creating network namespaces failed: {e})"
            ))
        })
        .ok()
}

/// Where the network probes aim: the far host, or addresses that cannot leave this machine.
fn targets(far: Option<&FarHost>, landjail: bool) -> (IpAddr, IpAddr) {
    match far {
        Some(f) => (f.far_v4.into(), f.far_v6.into()),
        // landjail shares the host's network: without a far host, aim at loopback so that even
        // a broken jail sends nothing off this machine.
        None if landjail => (
            Ipv4Addr::new(127, 0, 0, 2).into(),
            Ipv6Addr::LOCALHOST.into(),
        ),
        // nsjail's namespace has no link to the host at all, so documentation addresses cannot
        // leave the machine whatever the jail's netfilter does.
        None => (
            Ipv4Addr::new(192, 0, 2, 10).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10).into(),
        ),
    }
}

/// Serves the Unix sockets the probes aim at: the stand-in for the Coder agent's audit socket
/// and each `Arg::HostSocket`. They only read and drop; the jail must reach none of them.
fn serve_sockets(values: &Values, probes: &[(&ProbeSpec, Vec<String>)]) -> Result<()> {
    let mut paths = vec![values.audit.clone()];
    for (spec, _) in probes {
        for arg in spec.args {
            match arg {
                Arg::HostSocket(name) => paths.push(values.dir.join(name)),
                Arg::HostDatagram(name) => {
                    let p = values.dir.join(name);
                    let d = std::os::unix::net::UnixDatagram::bind(&p)
                        .with_context(|| format!("binding {}", p.display()))?;
                    // Kept open for the selftest's life; its file goes with the directory.
                    std::mem::forget(d);
                }
                _ => {}
            }
        }
    }
    for p in paths {
        let l = UnixListener::bind(&p).with_context(|| format!("binding {}", p.display()))?;
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &conn, &mut std::io::sink());
                });
            }
        });
    }
    Ok(())
}

/// What every jailed run of the selftest shares.
struct Runs<'a> {
    exe: PathBuf,
    args: &'a [OsString],
    config: PathBuf,
    upstream_ca: PathBuf,
    audit: PathBuf,
    port_args: Vec<String>,
    xdg: PathBuf,
    /// The jailed runs' working directory (the selftest's own).
    workdir: PathBuf,
    far: Option<&'a FarHost>,
}

impl Runs<'_> {
    /// `boundary <user flags> <selftest flags> -- program`; run it with [`Runs::output`].
    fn boundary(&self, program: &Path) -> Command {
        let mut cmd = Command::new(&self.exe);
        // Started by root, the jail refuses a system directory as working directory (it would
        // be writable); the selftest's own directory is never one.
        cmd.current_dir(&self.workdir)
            .args(self.args)
            .arg("--config")
            .arg(&self.config)
            .args(["--log-level", "error"])
            .arg("--allow")
            .arg(format!("domain={HOST} path=/allowed"))
            .arg("--resolve")
            .arg(format!("{HOST}=127.0.0.1"))
            .arg("--upstream-ca-file")
            .arg(&self.upstream_ca)
            .arg("--log-proxy-socket-path")
            .arg(&self.audit)
            .args(&self.port_args)
            .env("XDG_CONFIG_HOME", &self.xdg)
            .stdin(Stdio::null());
        for name in CLEARED_ENV {
            cmd.env_remove(name);
        }
        cmd.arg("--").arg(program);
        cmd
    }

    /// Runs `cmd` to completion, in the far host's near namespace if there is one (only the
    /// network changes: the jail sees this host's mounts, `/sys/fs/cgroup` included).
    fn output(&self, cmd: Command) -> Result<Output> {
        Ok(match self.far {
            Some(f) => f.output_in_near(cmd)?,
            None => {
                let mut cmd = cmd;
                cmd.output()?
            }
        })
    }

    /// Runs every probe in one jail and judges each result with its row's expectation.
    fn probe_rows(&self, probes: &[(&ProbeSpec, Vec<String>)]) -> Result<Vec<Row>> {
        let lists: Vec<Vec<String>> = probes.iter().map(|(_, a)| a.clone()).collect();
        let mut cmd = self.boundary(&self.exe);
        cmd.arg(PROBE_ARG).args(probe_args(&lists));
        let out = self
            .output(cmd)
            .context("running boundary with the probes")?;
        let results = ProbeResult::all(&String::from_utf8_lossy(&out.stdout));
        let rows = probes.iter().enumerate().map(|(i, (spec, _))| {
            let found = results.iter().find(|r| r.index == i);
            let (outcome, detail) = match found {
                None => (
                    Outcome::Fail,
                    format!(
                        "no result (boundary exited {}; stderr: {})",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ),
                Some(r) if spec.expect == Expect::Info => {
                    (Outcome::Info, format!("{} {}", r.word, r.detail))
                }
                Some(r) => (
                    Outcome::of(spec.expect.holds(r)),
                    format!("{} {}", r.word, r.detail),
                ),
            };
            Row {
                name: spec.name.to_string(),
                outcome,
                detail,
            }
        });
        Ok(rows.collect())
    }

    /// HTTPS with a real client, if there is one.
    fn curl_rows(&self, https_port: u16) -> Result<Vec<Row>> {
        let Some(curl) = which("curl") else {
            return Ok(vec![Row {
                name: "HTTPS through our CA (curl)".into(),
                outcome: Outcome::Skipped,
                detail: "curl is not installed".into(),
            }]);
        };
        let mut cmd = self.boundary(&curl);
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\\n[status %{http_code}]\\n",
        ])
        .arg(format!("https://{HOST}:{https_port}/allowed"))
        .arg(format!("https://{HOST}:{https_port}/denied"));
        let out = self.output(cmd).context("running curl in the jail")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (first, second) = text.split_once("[status ").unwrap_or((&text, ""));
        Ok(vec![
            Row {
                name: "allowed HTTPS request passes (TLS through our CA)".into(),
                outcome: Outcome::of(first.contains(MARKER) && second.starts_with("200]")),
                detail: one_line(&format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
            },
            Row {
                name: "denied HTTPS request gets 403 with the text".into(),
                outcome: Outcome::of(second.contains(BLOCKED) && second.contains("[status 403]")),
                detail: one_line(second),
            },
        ])
    }
}

/// The far host's verdict on the jailed runs, as two rows.
fn far_rows(v: &Verdict) -> [Row; 2] {
    [
        Row {
            name: "the far host received nothing from the jail".into(),
            outcome: Outcome::of(v.nothing_escaped()),
            detail: format!(
                "far host counted {} packets during the jailed runs ({})",
                v.from_jail.total(),
                v.from_jail
            ),
        },
        Row {
            name: "control: outside the jail, the far host is reachable".into(),
            outcome: Outcome::of(v.control_arrived()),
            detail: format!("counter moved by {} ({})", v.control.total(), v.control),
        },
    ]
}

fn is_root() -> bool {
    config::values::running_as_root()
}
