//! Parsers for setting values: the text of a flag, a variable or a YAML scalar in, a typed
//! value or a message saying what is accepted out. Every source goes through the same parser.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use boundary_audit::{AuditProtocol, LogLevel};

use super::settings::Lookup;
use super::JailType;

/// `true/false/1/0` in any case, as Coder's boundary accepts.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use true, false, 1 or 0")),
    }
}

/// A Unix socket rule: an absolute path (a trailing `/` means every socket under it).
pub fn parse_socket_rule(s: &str) -> Result<std::path::PathBuf, String> {
    let s = s.trim();
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} is not an absolute path; Unix socket rules name sockets by absolute path \
             (a trailing / for a directory)"
        ));
    }
    Ok(std::path::PathBuf::from(s))
}

/// An absolute path; `what` names the setting in the message.
pub fn parse_abs_path(s: &str, what: &str) -> Result<PathBuf, String> {
    let s = s.trim();
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} is not an absolute path; {what} are absolute paths"
        ));
    }
    Ok(PathBuf::from(s))
}

/// A TCP port from 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is not a TCP port; use a number from 1 to 65535"
        )),
        Ok(p) => Ok(p),
    }
}

/// A count above zero; `what` names the unit in the message.
pub fn parse_positive(s: &str, what: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number of {what}")),
    }
}

/// `250ms`, `1s`, `5m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 500ms, 1s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?}; use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs > 86_400.0 * 365.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration above zero; `what` names the setting in the message.
pub fn parse_nonzero_duration(s: &str, what: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: {what} must be more than 0")),
        d => Ok(d),
    }
}

/// The audit batch interval: more than 0 and at most 1 s.
pub fn parse_flush_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(1) {
        return Err(format!("{s:?}: the flush interval must be more than 0 and at most 1s, so records reach the agent promptly"));
    }
    Ok(d)
}

/// A duration as `boundary config` shows it: whole seconds as `5s`, otherwise milliseconds.
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// `error`, `warn`, `info` or `debug`, in any case.
pub fn parse_level(s: &str) -> Result<LogLevel, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a log level; use error, warn, info or debug"))
}

/// Lowercase name, as written in flags and files.
pub fn level_name(l: &LogLevel) -> String {
    format!("{l:?}").to_ascii_lowercase()
}

/// `nsjail` or `landjail`.
pub fn parse_jail(s: &str) -> Result<JailType, String> {
    match s {
        "nsjail" => Ok(JailType::Nsjail),
        "landjail" => Ok(JailType::Landjail),
        _ => Err(format!(
            "{s:?} is not a jail type; use nsjail (namespaces) or landjail (Landlock)"
        )),
    }
}

/// `auto`, `v1` or `v2`.
pub fn parse_protocol(s: &str) -> Result<AuditProtocol, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an audit protocol; use auto, v1 or v2"))
}

/// Lowercase name of an audit protocol.
pub fn protocol_name(p: &AuditProtocol) -> String {
    format!("{p:?}").to_ascii_lowercase()
}

/// A UUID in any case, stored lowercase and hyphenated as Coder writes them.
pub fn parse_uuid(s: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{s:?} is not a UUID; pass the id from data.coder_workspace.me (e.g. f2bd4e9f-7e27-49fc-961e-be4d1c2aa987)"))
}

/// An upstream proxy URL, checked by the proxy's own parser so nothing it would refuse later
/// gets past the configuration. Messages show it with its password hidden.
pub fn parse_upstream_proxy(s: &str) -> Result<UpstreamProxy, String> {
    // The proxy's messages already hide the password.
    let (host, port) = boundary_proxy::check_upstream_proxy(s)
        .map_err(|e| format!("{e}; write e.g. http://proxy.corp:3128"))?;
    Ok(UpstreamProxy {
        url: s.to_string(),
        host,
        port,
    })
}

/// A checked `--upstream-proxy`: the URL as given (passed to the proxy) and where it points.
#[derive(Clone)]
pub struct UpstreamProxy {
    pub url: String,
    pub host: String,
    pub port: u16,
}

/// Never shows the password, also not in `{:?}` of the whole configuration.
impl fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", hide_password(&self.url))
    }
}

impl UpstreamProxy {
    /// Whether the URL carries credentials (`user:password@`, or a user name alone, which
    /// some proxies take as a token).
    pub fn has_credentials(&self) -> bool {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority.contains('@')
    }

    /// Whether it names boundary's own proxy listener: the proxy port on a loopback or
    /// unspecified address (or `localhost`), which would send every request back to itself.
    pub fn is_own_listener(&self, proxy_port: u16) -> bool {
        let host = self.host.trim_end_matches('.').to_ascii_lowercase();
        let local = match host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip.is_unspecified() || is_mapped_local(ip),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        local && self.port == proxy_port
    }
}

/// `::ffff:127.0.0.1` and `::ffff:0.0.0.0` reach the same listener as their IPv4 forms.
fn is_mapped_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified()),
        IpAddr::V4(_) => false,
    }
}

/// The one redaction of URL credentials, shared with the proxy.
pub use boundary_proxy::hide_password;

/// One `NAME=ADDR` pair of `--resolve`.
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=ADDR; write e.g. api.example.com=127.0.0.1"))?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(format!("{s:?} has an empty name"));
    }
    let addr_t = addr.trim().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr_t
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address; --resolve takes NAME=IP"))?;
    Ok((name, ip))
}

/// The agent's audit socket: `$TMPDIR/boundary-audit.sock`, or `/tmp/...` without TMPDIR.
pub fn default_socket(env: &Lookup) -> String {
    let dir = env("TMPDIR")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    Path::new(&dir)
        .join("boundary-audit.sock")
        .display()
        .to_string()
}

/// Whether this process runs as root (owner of `/proc/self`); decides root-only defaults.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Where audit records wait for the agent across runs when `--audit-spool-dir` is not given:
/// boundary's state directory: `$XDG_STATE_HOME/coder_boundary`, else
/// `/var/lib/coder_boundary` for root, else `~/.local/state/coder_boundary`. The audit spool and
/// the log file of interactive runs live there.
pub fn state_dir(env: &Lookup) -> PathBuf {
    let base = match env("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None if running_as_root() => PathBuf::from("/var/lib"),
        None => PathBuf::from(
            env("HOME")
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "/tmp".into()),
        )
        .join(".local/state"),
    };
    base.join("coder_boundary")
}

/// `spool` in the [`state_dir`].
pub fn default_spool_dir(env: &Lookup) -> String {
    state_dir(env).join("spool").display().to_string()
}

/// Host of `CODER_AGENT_URL`, for the derived correlation target.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let auth = auth.rsplit_once('@').map(|x| x.1).unwrap_or(auth);
    let host = match auth.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|x| x.0)?,
        None => auth.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}
