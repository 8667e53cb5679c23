//! Part of deciding: method and path override headers. Some frameworks run the method or path
//! named in a header instead of the request line's (`X-HTTP-Method-Override: DELETE` on a
//! `POST`, `X-Original-URL: /admin` on `GET /`), so a rule limiting methods or paths must also
//! allow what the header asks for, or the request is refused. An origin may honour one header
//! and not the other (Express reads the method header, not `X-Original-URL`), so every pair of
//! a method (the request's own or a header's) and a path (likewise) must be allowed. WebDAV's
//! `Destination` (`MOVE`, `COPY`) names a second path the origin writes to: it is decided as a
//! path of the same host, and one naming another host is refused.

use http::header::HeaderName;
use http::{HeaderMap, Uri};

use crate::rules::Policy;

/// Headers that replace the method, as honoured by common frameworks (Express
/// method-override, Rack, Symfony, ASP.NET, OData, Google APIs).
/// Names, not text: a lookup by text parses the name first, for every request.
static METHOD_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];
/// Headers that replace the path (Symfony and Zend read them from IIS rewrites), and WebDAV's
/// `Destination`, the path a `MOVE` or `COPY` writes to.
static PATH_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("destination"),
];

/// Why the override headers of an otherwise allowed request are refused, if they are.
pub(super) fn refusal(
    policy: &Policy,
    headers: &HeaderMap,
    method: &str,
    host: &str,
    path: &str,
) -> Option<(String, Vec<String>)> {
    let mut methods = values(headers, &METHOD_HEADERS, |v| Some(v.to_string()));
    // Rules compare methods exactly, but frameworks upper-case the header's value before
    // running it (Express, Rack, Symfony), so `delete` must be allowed as `DELETE` too.
    let upper: Named = methods
        .iter()
        .filter_map(|(h, m)| {
            let m = m.as_ref()?;
            (m.to_ascii_uppercase() != *m).then(|| (h.clone(), Some(m.to_ascii_uppercase())))
        })
        .collect();
    methods.extend(upper);
    let paths = values(headers, &PATH_HEADERS, path_of);
    if methods.is_empty() && paths.is_empty() {
        return None;
    }
    if let Some(other) = other_host(headers, host) {
        let reason = format!(
            "the destination header names another host ({other}) for the origin to write to"
        );
        return Some((reason, Vec::new()));
    }
    let methods = with_own(methods, method);
    let paths = with_own(paths, path);
    for (mh, m) in &methods {
        for (ph, p) in &paths {
            if mh.is_empty() && ph.is_empty() {
                // The request line itself: already allowed.
                continue;
            }
            let Some(m) = m else {
                return Some((unreadable(mh), Vec::new()));
            };
            let Some(p) = p else {
                return Some((unreadable(ph), Vec::new()));
            };
            if !policy.decide(m, host, p).allowed {
                let by: Vec<&str> = [mh, ph]
                    .into_iter()
                    .filter(|h| !h.is_empty())
                    .map(String::as_str)
                    .collect();
                let reason = format!(
                    "the {} header asks the origin for {m} {p}, which no allow rule allows",
                    by.join(" and ")
                );
                return Some((reason, policy.suggest(m, host, p)));
            }
        }
    }
    None
}

/// (header name, value) pairs; the value is `None` when it cannot be read.
type Named = Vec<(String, Option<String>)>;

fn values(headers: &HeaderMap, names: &[HeaderName], read: fn(&str) -> Option<String>) -> Named {
    let mut out = Vec::new();
    for name in names {
        for v in headers.get_all(name) {
            let value = v.to_str().ok().map(str::trim).and_then(read);
            out.push((name.as_str().to_string(), value));
        }
    }
    out
}

/// The request's own value (named by no header) and the headers' values: an origin that
/// ignores a header runs the request's own.
fn with_own(mut named: Named, own: &str) -> Named {
    named.insert(0, (String::new(), Some(own.to_string())));
    named
}

/// The host of an absolute-form `Destination` that is not the request's own.
fn other_host(headers: &HeaderMap, host: &str) -> Option<String> {
    for v in headers.get_all("destination") {
        let Ok(uri) = v.to_str().unwrap_or("").trim().parse::<Uri>() else {
            continue;
        };
        let Some(named) = uri.host() else { continue };
        if crate::host::normal_form(named) != crate::host::normal_form(host) {
            return Some(named.to_string());
        }
    }
    None
}

/// The path an override value names: origin-form as is, absolute-form's path and query.
fn path_of(value: &str) -> Option<String> {
    if value.starts_with('/') {
        return Some(value.to_string());
    }
    let uri: Uri = value.parse().ok()?;
    uri.scheme()?;
    Some(
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
    )
}

fn unreadable(header: &str) -> String {
    format!("the {header} header cannot be read as a method or path")
}
