//! What the user asked of the selftest (its flags, resolved like a run's) and the small host
//! facts it needs: a free port, a tool on PATH, a private temporary directory.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use boundary::config::{self, cli::Flags, Config, Source};
use clap::{Args, FromArgMatches};

/// Variables the jailed runs do not inherit: the selftest sets these things itself.
pub(super) const CLEARED_ENV: &[&str] = &[
    "BOUNDARY_ALLOW",
    "BOUNDARY_CONFIG",
    "BOUNDARY_RESOLVE",
    "BOUNDARY_UPSTREAM_PROXY",
];

/// The user's selftest flags, resolved by `config::resolve` exactly as the jailed runs will
/// resolve them (same flags, same environment, an empty config file), so the selftest and its
/// runs agree on the jail type and port, and a bad value is refused before anything starts.
pub(super) struct UserSettings {
    pub flags: Flags,
    pub cfg: Config,
    /// The proxy port if the user chose one (flag or environment).
    pub proxy_port: Option<u16>,
}

pub(super) fn user_settings(args: &[OsString]) -> Result<UserSettings> {
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
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(8080)
}

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A private temporary directory, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let p = std::env::temp_dir().join(format!("boundary-selftest-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
