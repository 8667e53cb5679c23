//! `boundary selftest`: proves on this host, offline, that the jail holds.
//!
//! It starts an embedded upstream (HTTP and HTTPS on loopback, its own CA passed to the proxy
//! with `--upstream-ca-file`, the name mapped with `--resolve`), then runs the real `boundary`
//! (this executable, with the user's flags, e.g. `--jail-type`) with the escape probes of
//! `boundary_jail::probe` as the jailed command, and `curl` for HTTPS when it is installed.
//! As root it also creates a far host in network namespaces of its own, runs boundary next to
//! it, and checks the far host's packet counter stayed at zero while a control connection from
//! outside the jail moves it. No probe ever targets a real public address: without a far host
//! the targets are documentation addresses (192.0.2.0/24, 2001:db8::/32).
//!
//! Prints one row per check and exits 0 only if every enforcement check holds (1 otherwise,
//! 2 if the selftest itself could not run).
//!
//! Wiring: `main.rs` dispatches `"selftest" => selftest::main(&args[2..])` (the arguments after
//! the word `selftest`); needs `tokio-rustls` in this crate's dependencies.

mod unix;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result};
use boundary::config::{self, cli::Flags, Config, JailType, Source};
use boundary_jail::probe::{SelftestNet, PROBE_ARG};
use boundary_proxy::CertificateAuthority;
use clap::{Args, FromArgMatches};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod kernel;
mod seccomp;

/// The upstream's name inside the jail (resolved by the proxy through `--resolve`).
const HOST: &str = "selftest.boundary.test";
/// Text only the embedded upstream answers with.
const MARKER: &str = "boundary-selftest-upstream-ok";
/// Text of the proxy's 403 page (docs/interop.md §3).
const BLOCKED: &str = boundary_proxy::BLOCKED_TITLE;

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
    let exe = std::env::current_exe().context("locating the boundary executable")?;
    let dir = TempDir::new()?;
    let mut notes = Vec::new();

    let net = if is_root() {
        match SelftestNet::new() {
            Ok(n) => Some(n),
            Err(e) => {
                notes.push(format!(
                    "no far host (creating network namespaces failed: {e})"
                ));
                None
            }
        }
    } else {
        notes.push(if landjail {
            "not root: no far host counters; landjail probes target loopback (127.0.0.2, ::1)"
                .into()
        } else {
            "not root: no far host counters; targets are documentation addresses".into()
        });
        None
    };
    let (far4, far6): (IpAddr, IpAddr) = match &net {
        Some(n) => (n.far_v4.into(), n.far_v6.into()),
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
            "2001:db8::10".parse::<Ipv6Addr>().expect("literal").into(),
        ),
    };

    // The embedded upstream, on loopback where the proxy runs (the near namespace, if any).
    let upstream_ca = CertificateAuthority::load_or_create(&dir.path().join("upstream-ca"))
        .context("creating the selftest upstream's CA")?;
    let mut tls = upstream_ca
        .mint(HOST)
        .context("minting the selftest upstream's certificate")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let bind = || -> std::io::Result<(TcpListener, TcpListener)> {
        Ok((
            TcpListener::bind("127.0.0.1:0")?,
            TcpListener::bind("127.0.0.1:0")?,
        ))
    };
    let (http_l, https_l) = match &net {
        Some(n) => n.in_near(bind)??,
        None => bind()?,
    };
    let http_port = http_l.local_addr()?.port();
    let https_port = https_l.local_addr()?.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the selftest's runtime")?;
    {
        let _g = rt.enter();
        http_l.set_nonblocking(true)?;
        https_l.set_nonblocking(true)?;
        let http_l = tokio::net::TcpListener::from_std(http_l)?;
        let https_l = tokio::net::TcpListener::from_std(https_l)?;
        rt.spawn(async move {
            while let Ok((s, _)) = http_l.accept().await {
                tokio::spawn(answer(s));
            }
        });
        rt.spawn(async move {
            while let Ok((s, _)) = https_l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        answer(tls).await;
                    }
                });
            }
        });
    }

    // A stand-in for the Coder agent's audit socket; the jail must not reach it.
    let audit_path = dir.path().join("audit.sock");
    let audit = std::os::unix::net::UnixListener::bind(&audit_path)
        .with_context(|| format!("binding {}", audit_path.display()))?;
    std::thread::spawn(move || {
        for conn in audit.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut &conn, &mut std::io::sink());
            });
        }
    });

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n")?;
    let xdg = dir.path().join("xdg");
    // The CA the jail was told to trust, wherever boundary put it (landjail: a per-run CA whose
    // key never stays on disk), resolved by the probe from the jailed environment.
    let ca_key = PathBuf::from("$SSL_CERT_DIR/ca-key.pem");
    let ca_cert = PathBuf::from("$SSL_CERT_FILE");
    let me = std::process::id().to_string();

    // landjail has no transparent path: clients speak to the proxy (absolute-form requests).
    let proxy_port = user.proxy_port.unwrap_or_else(free_port);
    let http = |path: &str| {
        let target = if landjail {
            format!("http://{HOST}:{http_port}{path}")
        } else {
            path.to_string()
        };
        format!(
            "GET {target} HTTP/1.1\\r\\nHost: {HOST}:{http_port}\\r\\nConnection: close\\r\\n\\r\\n"
        )
    };
    let (http_host, http_to) = if landjail {
        ("127.0.0.1".to_string(), proxy_port.to_string())
    } else {
        (HOST.to_string(), http_port.to_string())
    };
    let direct = |ip: IpAddr, port: u16| {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        format!("GET / HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nConnection: close\\r\\n\\r\\n")
    };
    let probes: Vec<Probe> = vec![
        Probe::new(
            "allowed HTTP request passes",
            &["tcp", &http_host, &http_to, &http("/allowed")],
            |w, d| w == "connected" && d.contains(" 200 ") && d.contains(MARKER),
        ),
        Probe::new(
            "denied HTTP request gets 403 with the text",
            &["tcp", &http_host, &http_to, &http("/denied")],
            |w, d| {
                w == "connected"
                    && d.contains(" 403 ")
                    && d.contains(BLOCKED)
                    && !d.contains(MARKER)
            },
        ),
        Probe::new(
            if landjail {
                "direct TCP to an IP:port is refused"
            } else {
                "direct TCP to an IP:port is intercepted"
            },
            &["tcp", &far4.to_string(), "9", &direct(far4, 9)],
            if landjail { refused } else { intercepted },
        ),
        Probe::new(
            if landjail {
                "direct TCP over IPv6 is refused"
            } else {
                "direct TCP over IPv6 is intercepted"
            },
            &["tcp", &far6.to_string(), "443", &direct(far6, 443)],
            if landjail { refused } else { intercepted },
        ),
        Probe::new(
            if landjail {
                "UDP DNS to a public resolver is refused"
            } else {
                "UDP DNS to a public resolver is answered by the stub"
            },
            &["udp", &far4.to_string(), "53", &dns_query()],
            if landjail {
                refused
            } else {
                |w: &str, d: &str| w == "reply" && d.contains("\\x06\\x06\\x06\\x06")
            },
        ),
        Probe::new(
            "UDP to port 443 (QUIC) is blocked",
            &["udp", &far4.to_string(), "443"],
            refused,
        ),
        Probe::new(
            "UDP over IPv6 is blocked",
            &["udp", &far6.to_string(), "443"],
            refused,
        ),
        Probe::new(
            "ICMP echo is blocked",
            &["icmp", &far4.to_string()],
            refused,
        ),
        Probe::new(
            "ICMPv6 echo is blocked",
            &["icmp", &far6.to_string()],
            refused,
        ),
        Probe::new("raw and packet sockets are refused", &["raw"], refused),
        Probe::new("netlink (route) changes are refused", &["netlink"], refused),
        Probe::new("nftables changes are refused", &["nft"], refused),
        Probe::new(
            "the CA private key is unreadable",
            &["read", &ca_key.to_string_lossy()],
            refused,
        ),
        Probe::new(
            "the CA certificate is readable",
            &["read", &ca_cert.to_string_lossy()],
            |w, _| w == "read",
        ),
        Probe::new(
            "the audit socket is unreachable",
            &["unix", &audit_path.to_string_lossy()],
            refused,
        ),
        Probe::new(
            "host processes cannot be signalled",
            &["signal", &me],
            refused,
        ),
        Probe::new(
            "setns into another namespace is refused",
            &["setns", &format!("/proc/{me}/ns/net")],
            refused,
        ),
    ];
    let mut probes = probes;
    probes.extend(seccomp::probes(&me));
    probes.extend(unix::probes(dir.path(), landjail)?);
    probes.extend(kernel::probes(landjail));
    if landjail {
        probes.push(Probe::informational(
            "host processes are visible (landjail has no PID namespace)",
            &["procs", &me],
        ));
    } else {
        probes.push(Probe::new(
            "host processes are invisible",
            &["procs", &me],
            |w, d| w.starts_with("visible=") && d.contains("host_pid_visible=false"),
        ));
    }
    if let Some(n) = &net {
        probes.push(Probe::new(
            "setns into the far host's neighbour is refused",
            &["setns", &n.near_path()],
            refused,
        ));
    }

    let port_args: Vec<String> = match user.flags.get("proxy_port") {
        [] => vec!["--proxy-port".into(), proxy_port.to_string()],
        _ => Vec::new(),
    };
    let base_args = |cmd: &mut Command| {
        cmd.args(args)
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "error"])
            .arg("--allow")
            .arg(format!("domain={HOST} path=/allowed"))
            .arg("--resolve")
            .arg(format!("{HOST}=127.0.0.1"))
            .arg("--upstream-ca-file")
            .arg(upstream_ca.cert_path())
            .arg("--log-proxy-socket-path")
            .arg(&audit_path)
            .args(&port_args)
            .env("XDG_CONFIG_HOME", &xdg)
            .stdin(Stdio::null());
        for name in CLEARED_ENV {
            cmd.env_remove(name);
        }
    };
    let new_cmd = |program: &Path| -> Result<Command> {
        Ok(match &net {
            Some(n) => n.command(program)?,
            None => Command::new(program),
        })
    };
    let before = net.as_ref().map(|n| n.arrived()).transpose()?;

    let mut cmd = new_cmd(&exe)?;
    base_args(&mut cmd);
    cmd.arg("--").arg(&exe).arg(PROBE_ARG);
    for (i, p) in probes.iter().enumerate() {
        if i > 0 {
            cmd.arg(";");
        }
        cmd.args(&p.args);
    }
    let out = cmd.output().context("running boundary with the probes")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut rows: Vec<Row> = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("#{i} ")))
            .unwrap_or("");
        let mut parts = line.splitn(4, ' ');
        let (_, _, word, detail) = (
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let outcome = if line.is_empty() {
            Outcome::Fail
        } else if p.informational {
            Outcome::Info
        } else if (p.check)(word, detail) {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        let shown = if line.is_empty() {
            format!(
                "no result (boundary exited {}; stderr: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        } else {
            format!("{word} {detail}")
        };
        rows.push(Row {
            name: p.name.to_string(),
            outcome,
            detail: shown,
        });
    }

    // HTTPS with a real client, if there is one.
    match which("curl") {
        Some(curl) => {
            let mut cmd = new_cmd(&exe)?;
            base_args(&mut cmd);
            cmd.arg("--").arg(&curl).args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\\n[status %{http_code}]\\n",
            ]);
            cmd.arg(format!("https://{HOST}:{https_port}/allowed"));
            cmd.arg(format!("https://{HOST}:{https_port}/denied"));
            let out = cmd.output().context("running curl in the jail")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let (first, second) = text.split_once("[status ").unwrap_or((&text, ""));
            rows.push(Row {
                name: "allowed HTTPS request passes (TLS through our CA)".into(),
                outcome: if first.contains(MARKER) && second.starts_with("200]") {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                },
                detail: one_line(&format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
            });
            rows.push(Row {
                name: "denied HTTPS request gets 403 with the text".into(),
                outcome: if second.contains(BLOCKED) && second.contains("[status 403]") {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                },
                detail: one_line(second),
            });
        }
        None => rows.push(Row {
            name: "HTTPS through our CA (curl)".into(),
            outcome: Outcome::Skipped,
            detail: "curl is not installed".into(),
        }),
    }

    if let (Some(n), Some(before)) = (&net, before) {
        let after = n.arrived()?;
        rows.push(Row {
            name: "the far host received nothing from the jail".into(),
            outcome: if after == before {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            detail: format!(
                "far host counted {} packets during the jailed runs",
                after - before
            ),
        });
        let target = (n.far_v4, 80);
        let _ = n.in_near(move || {
            std::net::TcpStream::connect_timeout(&target.into(), std::time::Duration::from_secs(2))
        })?;
        let control = n.arrived()?;
        rows.push(Row {
            name: "control: outside the jail, the far host is reachable".into(),
            outcome: if control > after {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            detail: format!("counter moved by {}", control - after),
        });
    }
    drop(rt);

    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    println!("boundary selftest ({jail_type})");
    for r in &rows {
        let mut detail = r.detail.clone();
        if detail.len() > 100 {
            let mut cut = 100;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        println!("  {:<6} {:<width$}  {}", r.outcome.label(), r.name, detail);
    }
    for n in &notes {
        println!("  note: {n}");
    }
    let failed = rows.iter().filter(|r| r.outcome == Outcome::Fail).count();
    if failed == 0 {
        println!("all enforcement checks hold");
        Ok(0)
    } else {
        println!("{failed} check(s) FAILED: this jail does not hold on this host");
        Ok(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Info,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Info => "info",
            Outcome::Skipped => "skip",
        }
    }
}

struct Row {
    name: String,
    outcome: Outcome,
    detail: String,
}

struct Probe {
    name: &'static str,
    args: Vec<String>,
    check: fn(&str, &str) -> bool,
    informational: bool,
}

impl Probe {
    fn new(name: &'static str, args: &[&str], check: fn(&str, &str) -> bool) -> Probe {
        Probe {
            name,
            args: args.iter().map(|s| s.to_string()).collect(),
            check,
            informational: false,
        }
    }
    fn informational(name: &'static str, args: &[&str]) -> Probe {
        Probe {
            informational: true,
            ..Probe::new(name, args, |_, _| true)
        }
    }
}

fn refused(word: &str, _: &str) -> bool {
    word == "refused"
}

fn intercepted(word: &str, detail: &str) -> bool {
    word == "connected" && detail.contains(" 403 ") && detail.contains(BLOCKED)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A DNS query for `selftest.example` type A, escaped for the probe's command line.
fn dns_query() -> String {
    let mut q: Vec<u8> = vec![0xbd, 0x01, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["selftest", "example"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// Answers one HTTP/1.1 request with the marker and the path, then closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = format!("{MARKER} {path}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Variables the jailed runs do not inherit: the selftest sets these things itself.
const CLEARED_ENV: &[&str] = &[
    "BOUNDARY_ALLOW",
    "BOUNDARY_CONFIG",
    "BOUNDARY_RESOLVE",
    "BOUNDARY_UPSTREAM_PROXY",
];

/// The user's selftest flags, resolved by `config::resolve` exactly as the jailed runs will
/// resolve them (same flags, same environment, an empty config file), so the selftest and its
/// runs agree on the jail type and port, and a bad value is refused before anything starts.
struct UserSettings {
    flags: Flags,
    cfg: Config,
    /// The proxy port if the user chose one (flag or environment).
    proxy_port: Option<u16>,
}

fn user_settings(args: &[OsString]) -> Result<UserSettings> {
    let cmd = Flags::augment_args(
        clap::Command::new("boundary selftest")
            .no_binary_name(true)
            .about("Prove the jail holds on this host; takes the flags of a run"),
    );
    // Like the other subcommands: --help prints and exits 0, a bad flag prints and exits 2.
    let matches = cmd.get_matches_from(args);
    let flags = Flags::from_arg_matches(&matches)?;
    let mut as_run = flags.clone();
    as_run.set("config", vec!["/dev/null".into()]);
    let env = |name: &str| {
        if CLEARED_ENV.contains(&name) {
            None
        } else {
            config::process_env(name)
        }
    };
    let cfg = config::resolve(&as_run, &env)?;
    let chosen = cfg
        .sources
        .iter()
        .any(|(k, _, s)| *k == "proxy_port" && *s != Source::Default);
    Ok(UserSettings {
        proxy_port: chosen.then_some(cfg.proxy_port),
        flags,
        cfg,
    })
}

/// A port free on loopback right now, so landjail's proxy does not collide with a service on
/// the default 8080.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(8080)
}

pub(crate) fn is_root() -> bool {
    config::values::running_as_root()
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let p = std::env::temp_dir().join(format!("boundary-selftest-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
