//! Part of deciding: method and path override headers. Some frameworks run the method or path
//! named in a header instead of the request line's (`X-HTTP-Method-Override: DELETE` on a
//! `POST`, `X-Original-URL: /admin` on `GET /`), so a rule limiting methods or paths must also
//! allow what the header asks for, or the request is refused. An origin may honour one header
//! and not the other (Express reads the method header, not `X-Original-URL`), so every pair of
//! a method (the request's own or a header's) and a path (likewise) must be allowed. WebDAV's
//! `Destination` (`MOVE`, `COPY`) names a second path the origin writes to: it is decided as a
//! path of the same host, and one naming another host is refused. Headers through which an
//! origin behind a proxy learns "the" host (`X-Forwarded-Host`, `Forwarded: host=`, ...) must
//! name the decided host, as a second `Host` must. Names are matched with `_`, `.` and any
//! other non-alphanumeric byte read as `-`: CGI and FastCGI front ends (PHP) turn them all into
//! the same `HTTP_X_HTTP_METHOD_OVERRIDE`.

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
/// Headers that replace the path (Symfony and Zend read them from IIS rewrites; Traefik and
/// Envoy pass the original one on), and WebDAV's `Destination`, the path a `MOVE` or `COPY`
/// writes to.
static PATH_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("destination"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-envoy-original-path"),
];
/// Headers naming the host the client asked for, which frameworks behind a proxy read instead
/// of `Host` (Express `trust proxy`, Django `USE_X_FORWARDED_HOST`, Rails, Symfony): each
/// value (comma lists too) must be the decided host. `Forwarded`'s `host=` likewise.
static HOST_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-host"),
];

/// Why the override headers of an otherwise allowed request are refused, if they are.
pub(super) fn refusal(
    policy: &Policy,
    headers: &HeaderMap,
    method: &str,
    host: &str,
    path: &str,
) -> Option<(String, Vec<String>)> {
    let headers = Headers::new(headers);
    if !headers.any_named() {
        // Most requests carry none of these headers: nothing to look up name by name.
        return None;
    }
    if let Some((name, other)) = other_host(&headers, host) {
        let reason =
            format!("the {name} header names another host ({other}) than the one decided ({host})");
        return Some((reason, Vec::new()));
    }
    let mut methods = values(&headers, &METHOD_HEADERS, |v| Some(v.to_string()));
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
    let paths = values(&headers, &PATH_HEADERS, path_of);
    if methods.is_empty() && paths.is_empty() {
        return None;
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

fn values(headers: &Headers, names: &[HeaderName], read: fn(&str) -> Option<String>) -> Named {
    let mut out = Vec::new();
    for (name, v) in headers.named(names) {
        let value = v.to_str().ok().map(str::trim).and_then(read);
        out.push((name.to_string(), value));
    }
    out
}

/// Every name this module reads, in the one spelling a [`HeaderMap`] keeps.
static ALL_NAMES: [&[HeaderName]; 5] = [
    &METHOD_HEADERS,
    &PATH_HEADERS,
    &HOST_HEADERS,
    &DESTINATION,
    &FORWARDED,
];
static DESTINATION: [HeaderName; 1] = [HeaderName::from_static("destination")];
static FORWARDED: [HeaderName; 1] = [http::header::FORWARDED];

/// A request's headers as this module reads them: the map, and (found in one pass, usually
/// none) the headers whose names have `_`, `.` or another non-alphanumeric byte, with that
/// name spelled with `-` (PHP turns `.` and spaces into `_` too).
struct Headers<'a> {
    map: &'a HeaderMap,
    odd: Vec<(String, &'a http::HeaderValue)>,
    /// One of [`ALL_NAMES`] is in the map as it is spelled there.
    exact: bool,
}

impl<'a> Headers<'a> {
    fn new(map: &'a HeaderMap) -> Self {
        // The same pass over the names (a handful) tells whether any of them is one this
        // module reads, so a request with none is not looked up fourteen times by hash.
        let exact = map
            .keys()
            .any(|k| ALL_NAMES.iter().any(|names| names.contains(k)));
        let odd = map
            .iter()
            .filter(|(k, _)| {
                k.as_str()
                    .bytes()
                    .any(|b| !(b.is_ascii_alphanumeric() || b == b'-'))
            })
            .map(|(k, v)| {
                let dashed = k
                    .as_str()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                (dashed, v)
            })
            .collect();
        Headers { map, odd, exact }
    }

    /// Whether any header this module reads is there, in either spelling: when none is,
    /// every [`Headers::named`] finds nothing.
    fn any_named(&self) -> bool {
        self.exact || !self.odd.is_empty()
    }

    /// The values of the headers `names`, in either spelling, with the name each is read as.
    fn named(
        &'a self,
        names: &'a [HeaderName],
    ) -> impl Iterator<Item = (&'a str, &'a http::HeaderValue)> + 'a {
        let exact = names
            .iter()
            .flat_map(move |n| self.map.get_all(n).iter().map(move |v| (n.as_str(), v)));
        let folded = self.odd.iter().filter_map(move |(dashed, v)| {
            let n = names.iter().find(|n| n.as_str() == dashed)?;
            Some((n.as_str(), *v))
        });
        exact.chain(folded)
    }
}

/// The request's own value (named by no header) and the headers' values: an origin that
/// ignores a header runs the request's own.
fn with_own(mut named: Named, own: &str) -> Named {
    named.insert(0, (String::new(), Some(own.to_string())));
    named
}

/// A header naming a host other than the decided one, and that host: an absolute-form
/// `Destination`, one of [`HOST_HEADERS`], or `Forwarded`'s `host=`.
fn other_host(headers: &Headers, host: &str) -> Option<(String, String)> {
    let own = crate::host::normal_form(host);
    let differs = |named: &str| {
        let bare = named.trim().trim_matches('"');
        let name = match bare.rsplit_once(':') {
            // `host:port`, not an IPv6 literal's last group.
            Some((h, port))
                if !h.is_empty() && !h.ends_with(':') && port.parse::<u16>().is_ok() =>
            {
                h
            }
            _ => bare,
        };
        crate::host::normal_form(name.trim_start_matches('[').trim_end_matches(']'))
            != own.trim_start_matches('[').trim_end_matches(']')
    };
    for (name, v) in headers.named(&DESTINATION) {
        let Ok(uri) = v.to_str().unwrap_or("").trim().parse::<Uri>() else {
            continue;
        };
        if let Some(h) = uri.host().filter(|h| differs(h)) {
            return Some((name.to_string(), h.to_string()));
        }
    }
    for (name, v) in headers.named(&HOST_HEADERS) {
        let Ok(text) = v.to_str() else {
            return Some((
                name.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            ));
        };
        if let Some(h) = text.split(',').find(|h| differs(h)) {
            return Some((name.to_string(), h.trim().to_string()));
        }
    }
    for (name, v) in headers.named(&FORWARDED) {
        let text = String::from_utf8_lossy(v.as_bytes());
        let hosts = text
            .split([',', ';'])
            .filter_map(|p| p.trim().split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("host"));
        for (_, h) in hosts {
            if differs(h) {
                return Some((name.to_string(), h.trim().to_string()));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &Policy, headers: &[(&str, &str)]) -> bool {
        let mut map = HeaderMap::new();
        map.insert(http::header::HOST, "a.example".parse().unwrap());
        map.insert(http::header::USER_AGENT, "test".parse().unwrap());
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        refusal(policy, &map, "GET", "a.example", "/ok").is_some()
    }

    #[test]
    fn every_header_read_here_is_read_when_it_is_the_only_one() {
        // The shortcut for requests without any of these headers must not skip one that is
        // there: each name, alone and in an odd spelling, still refuses what no rule allows.
        let policy = Policy::parse(&["method=GET domain=a.example path=/ok"]).unwrap();
        assert!(!refused(&policy, &[]));
        assert!(!refused(
            &policy,
            &[("accept", "*/*"), ("x-unrelated", "DELETE")]
        ));
        assert!(!refused(&policy, &[("x_unrelated", "/admin")]));
        let mut asked = 0;
        for names in ALL_NAMES {
            for name in names.iter().map(HeaderName::as_str) {
                let value = if METHOD_HEADERS.iter().any(|n| n == name) {
                    "DELETE"
                } else if PATH_HEADERS.iter().any(|n| n == name) {
                    "/admin"
                } else if name == "forwarded" {
                    "host=b.example"
                } else {
                    "b.example"
                };
                let odd = name.replace('-', "_");
                for spelling in [name, odd.as_str()] {
                    assert!(
                        refused(&policy, &[(spelling, value)]),
                        "{spelling}: {value}"
                    );
                    assert!(
                        refused(&policy, &[("accept", "*/*"), (spelling, value)]),
                        "{spelling}: {value}"
                    );
                }
                asked += 1;
            }
        }
        assert_eq!(asked, 14);
    }
}
