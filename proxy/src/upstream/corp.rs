//! The corporate upstream proxy (`--upstream-proxy`): its URL, and reading its reply to
//! CONNECT.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ConnectError, ConnectErrorKind};

/// A parsed `--upstream-proxy` URL. Its `Debug` hides the credentials.
#[derive(Clone)]
pub(crate) struct UpstreamProxy {
    pub(super) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(super) authorization: Option<String>,
}

impl std::fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProxy")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "Basic ***"),
            )
            .finish()
    }
}

/// The URL (or bare authority, `user:pass@host`) with the password of its user info replaced
/// by `***` (`http://user:***@host`): the one way credentials in a URL are shown, in
/// `boundary config`, `Debug` output, logs and errors.
pub fn hide_password(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |u| u.0);
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}{user}{hidden}@{host}{}", &rest[end..])
        }
        None => url.to_string(),
    }
}

impl UpstreamProxy {
    /// Parses `http://[user:pass@]host[:port]` or `https://...`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        // Errors name the URL with its password hidden.
        let shown = hide_password(url);
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "upstream proxy {shown:?} must start with http:// or https://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!(
                "upstream proxy {shown:?} must not have a path; use scheme://host:port"
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let authority: http::uri::Authority = hostport
            .parse()
            .map_err(|e| format!("upstream proxy {shown:?} has a bad host: {e}"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(format!("upstream proxy {shown:?} has no host"));
        }
        // A written port (a ':' after the host, outside IPv6 brackets) must be 1 to 65535;
        // only an absent one means the scheme's default.
        let port_written = authority
            .as_str()
            .rsplit(']')
            .next()
            .unwrap_or_default()
            .contains(':');
        let port = match (authority.port_u16(), port_written) {
            (Some(p), _) if p > 0 => p,
            (None, false) if tls => 443,
            (None, false) => 80,
            _ => {
                return Err(format!(
                    "upstream proxy {shown:?} has a bad port; use 1 to 65535"
                ))
            }
        };
        let authorization = userinfo.map(|u| {
            let decoded = percent_encoding::percent_decode_str(u).decode_utf8_lossy();
            format!("Basic {}", base64(decoded.as_bytes()))
        });
        Ok(Self {
            tls,
            host,
            port,
            authorization,
        })
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Asks the corporate proxy `up`, on `conn` (already connected to it), for a tunnel to
/// `host:port`, within `timeout`; `Ok` once it answered 2xx.
pub(super) async fn connect_through<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    up: &UpstreamProxy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &up.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let exchange = async {
        conn.write_all(head.as_bytes()).await?;
        conn.flush().await?;
        read_connect_reply(&mut *conn).await
    };
    let (kind, message) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
        Ok(Ok(status)) => (
            ConnectErrorKind::UpstreamProxy,
            format!("answered {status} to CONNECT {authority}"),
        ),
        Ok(Err(e)) => (
            ConnectErrorKind::UpstreamProxy,
            format!("failed the CONNECT: {e}"),
        ),
        Err(_) => (
            ConnectErrorKind::HandshakeTimeout,
            "did not answer the CONNECT in time".to_string(),
        ),
    };
    Err(ConnectError {
        kind,
        message: format!("upstream proxy {}:{} {message}", up.host, up.port),
    })
}

/// Reads the reply head of a CONNECT byte by byte (so no tunnel byte is consumed) and returns
/// the status code.
async fn read_connect_reply<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<u16> {
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply head too long",
            ));
        }
        let b = s.read_u8().await?;
        head.push(b);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP reply: {}", line.trim()),
        ));
    }
    parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "reply without a status code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn upstream_proxy_urls() {
        let p = UpstreamProxy::parse("http://u:p%40ss@corp.example:3128").unwrap();
        assert!(!p.tls);
        assert_eq!((p.host.as_str(), p.port), ("corp.example", 3128));
        assert_eq!(p.authorization.as_deref(), Some("Basic dTpwQHNz"));
        let p = UpstreamProxy::parse("https://[::1]/").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.tls), ("::1", 443, true));
        assert!(UpstreamProxy::parse("socks5://x:1").is_err());
        assert!(UpstreamProxy::parse("http://x:1/path").is_err());
        assert!(UpstreamProxy::parse("http://").is_err());
    }

    #[test]
    fn credentials_are_hidden_in_debug_errors_and_shown_urls() {
        for (url, shown) in [
            ("http://joe:s3cret@proxy:3128", "http://joe:***@proxy:3128"),
            ("http://joe@proxy:3128/x?a@b", "http://joe@proxy:3128/x?a@b"),
            ("joe:s3cret@host:80", "joe:***@host:80"),
            ("http://proxy:3128", "http://proxy:3128"),
            ("http://a:b@c:s3cret@proxy/", "http://a:***@proxy/"),
        ] {
            assert_eq!(hide_password(url), shown);
        }
        let p = UpstreamProxy::parse("http://joe:s3cret@corp.example:3128").unwrap();
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("am9l"),
            "{debug}"
        );
        let mut config = crate::ProxyConfig::new(std::sync::Arc::new(
            crate::rules::Policy::from_rules(vec![]),
        ));
        config.upstream_proxy = Some("http://joe:s3cret@corp.example:3128".into());
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("joe:***@"),
            "{debug}"
        );
        for bad in [
            "socks5://joe:s3cret@corp:1",
            "http://joe:s3cret@corp:1/path",
            "http://joe:s3cret@corp:99999",
            "http://joe:s3cret@",
        ] {
            let err = UpstreamProxy::parse(bad).unwrap_err();
            assert!(!err.contains("s3cret") && err.contains("joe:***@"), "{err}");
        }
    }
}
