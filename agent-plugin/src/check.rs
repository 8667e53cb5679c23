//! `boundary check`: decide one request against the effective policy without running anything,
//! so a policy author can see what a rule set means before an agent meets it.

use std::fmt::Write;

use boundary::config::{self, cli::CheckCli};
use boundary::presets::{self, Preset};

/// Exit 0 allowed, 1 denied, 2 bad input.
pub fn main(cli: CheckCli) -> u8 {
    let cfg = match config::resolve(&cli.flags, &config::process_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("boundary check: {e}");
            return 2;
        }
    };
    let (host, path) = match split_url(&cli.url) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("boundary check: {e}");
            return 2;
        }
    };
    // Methods are case-sensitive (RFC 9110, and Go's rules compare them exactly): `get` is
    // decided as the method `get`, which `method=GET` does not allow.
    let method = cli.method.clone();
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        eprintln!("boundary check: {:?} is not an HTTP method", cli.method);
        return 2;
    }
    let mut out = String::new();
    let code = if let Some(rule) = cfg.policy.first_match(&method, &host, &path) {
        let _ = writeln!(out, "allow {method} {}", cli.url);
        let _ = write!(out, "matched rule: {}", rule.raw());
        if let Some(origin) = &rule.origin {
            let _ = write!(out, " ({origin})");
        }
        out.push('\n');
        0
    } else {
        let _ = writeln!(out, "deny {method} {}", cli.url);
        if cfg.policy.is_empty() {
            let _ = writeln!(
                out,
                "no allow rules are configured, so every request is denied"
            );
        }
        let _ = writeln!(out, "rules that would allow it:");
        for s in cfg.policy.suggest(&method, &host, &path) {
            let _ = writeln!(out, "  --allow '{s}'");
        }
        for p in presets_allowing(&cfg, &method, &host, &path) {
            let _ = writeln!(out, "  --preset {}  ({})", p.name, p.description);
        }
        1
    };
    if crate::emit(&out) {
        code
    } else {
        2
    }
}

/// The built-in presets not in use that would allow this request.
pub(crate) fn presets_allowing(
    cfg: &config::Config,
    method: &str,
    host: &str,
    path: &str,
) -> Vec<&'static Preset> {
    presets::all()
        .iter()
        .filter(|p| !cfg.presets.contains(p))
        .filter(|p| p.policy().decide(method, host, path).allowed)
        .collect()
}

/// `scheme://host[:port]/path?query` → (host without port, path with query).
pub(crate) fn split_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("{url:?} is not a full URL; write e.g. https://api.github.com/repos")
    })?;
    if !matches!(
        scheme.to_ascii_lowercase().as_str(),
        "http" | "https" | "ws" | "wss"
    ) {
        return Err(format!(
            "{url:?}: scheme {scheme:?} is not http, https, ws or wss"
        ));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let mut path = rest[end..].to_string();
    if let Some(i) = path.find('#') {
        path.truncate(i);
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')
            .map(|x| x.0)
            .ok_or_else(|| format!("{url:?}: unclosed [ in host"))?
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) => {
                port.parse::<u16>()
                    .map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
                h
            }
            None => authority,
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((host.to_string(), path))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("https://GitHub.com:8080/a?b=1#f").unwrap(),
            ("GitHub.com".into(), "/a?b=1".into())
        );
        assert_eq!(
            split_url("http://[::1]:80").unwrap(),
            ("::1".into(), "/".into())
        );
        assert_eq!(
            split_url("https://u:p@x.com?q").unwrap(),
            ("x.com".into(), "/?q".into())
        );
        assert!(split_url("github.com/x").is_err());
        assert!(split_url("ftp://x.com/").is_err());
        assert!(split_url("https://x.com:99999/").is_err());
        assert!(split_url("https:///x").is_err());
    }
}
