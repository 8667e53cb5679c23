//! Request paths as the matcher sees them.
//!
//! Origins disagree about what a path means: nginx and Python's `http.server` percent-decode
//! the whole path first, so `%2F` separates segments; IIS and many Windows-hosted frameworks
//! also split on `\` and `%5C`; Tomcat and Spring drop `;parameters` from each segment (so
//! `/..;/` is `/../`); a server behind a decoding front end decodes twice (`%252F`); a few cut
//! the path at a decoded `?`, `#` or NUL. A rule decides on *every* one of these readings
//! ([`path_readings`]) and allows only when each reading is allowed, so no encoding can make
//! an origin serve a path the rules forbid.
//!
//! Segments are what Go's boundary compares: the path split on `/` after its leading slash, so
//! `/` is one empty segment and `/api/` ends with one. Every reading cuts the query and
//! fragment and removes dot segments as RFC 3986 does (`/api/v1/../../admin` is `/admin`,
//! `/api/v1/..` is `/api/`); readings with and without merging repeated slashes (`/a//b`)
//! are both decided, since some origins merge them and some do not.

use super::path_pattern::decode_segment;

/// How far a reading percent-decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Split on raw separators first, then decode each segment (an encoded slash stays `%2F`).
    Segments,
    /// Decode the whole path once, then split.
    Once,
    /// Decode until nothing changes (double and deeper encodings), then split.
    Repeated,
}

/// One way an origin may read a path.
#[derive(Debug, Clone, Copy)]
struct Reading {
    decode: Decode,
    /// `\` separates segments too.
    backslash: bool,
    /// `;` starts a parameter that is dropped from the segment.
    params: bool,
    /// A decoded `?`, `#` or NUL (and `;` when `params`) ends the path.
    cut: bool,
    /// Repeated separators are one (nginx's `merge_slashes`, Python's `normpath`).
    merge: bool,
}

/// The reading Go's boundary applies, without dot segments.
const PLAIN: Reading = Reading {
    decode: Decode::Segments,
    backslash: false,
    params: false,
    cut: false,
    merge: false,
};

/// The segments of the plainest reading: split on `/`, each segment decoded (an encoded slash
/// stays `%2F`), dot segments removed. Used to print a path in a suggested rule.
pub fn normalize_path(raw: &str) -> Vec<String> {
    read(raw, PLAIN)
}

/// Every distinct reading of `raw` that common origins apply, each as its segments. A path
/// without `%`, `\\`, `;` or `//` has exactly one reading.
pub fn path_readings(raw: &str) -> Vec<Vec<String>> {
    let path = strip_query(raw);
    if !path.contains(['%', '\\', ';']) && !path.contains("//") {
        return vec![normalize_path(path)];
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for decode in [Decode::Segments, Decode::Once, Decode::Repeated] {
        for bits in 0u8..16 {
            let reading = Reading {
                decode,
                backslash: bits & 1 != 0,
                params: bits & 2 != 0,
                cut: bits & 4 != 0,
                merge: bits & 8 != 0,
            };
            let segs = read(path, reading);
            if !out.contains(&segs) {
                out.push(segs);
            }
        }
    }
    out
}

fn strip_query(raw: &str) -> &str {
    &raw[..raw.find(['?', '#']).unwrap_or(raw.len())]
}

/// Segments of `raw` under one reading.
fn read(raw: &str, r: Reading) -> Vec<String> {
    let path = strip_query(raw);
    let decoded;
    let text = match r.decode {
        Decode::Segments => path,
        Decode::Once => {
            decoded = percent_decode(path);
            decoded.as_str()
        }
        Decode::Repeated => {
            let mut cur = path.to_string();
            loop {
                let next = percent_decode(&cur);
                if next == cur {
                    break;
                }
                cur = next;
            }
            decoded = cur;
            decoded.as_str()
        }
    };
    let text = match (r.cut, r.params) {
        (true, true) => &text[..text.find(['?', '#', '\0', ';']).unwrap_or(text.len())],
        (true, false) => &text[..text.find(['?', '#', '\0']).unwrap_or(text.len())],
        (false, _) => text,
    };
    let separators: &[char] = if r.backslash { &['/', '\\'] } else { &['/'] };
    let mut parts: Vec<String> = text
        .split(separators)
        .map(|seg| {
            let mut seg = match r.decode {
                Decode::Segments => decode_segment(seg),
                _ => seg.to_string(),
            };
            if r.params {
                if let Some(i) = seg.find(';') {
                    seg.truncate(i);
                }
            }
            seg
        })
        .collect();
    // The part before the leading separator is not a segment (Go drops it too).
    if parts.first().is_some_and(|p| p.is_empty()) {
        parts.remove(0);
    }
    remove_dot_segments(parts, r.merge)
}

/// RFC 3986 dot-segment removal over segments: a last `.` or `..` leaves an empty last
/// segment (`/a/b/..` is `/a/`). With `merge`, empty segments other than the last are dropped.
fn remove_dot_segments(parts: Vec<String>, merge: bool) -> Vec<String> {
    let n = parts.len();
    let mut out: Vec<String> = Vec::with_capacity(n);
    for (i, seg) in parts.into_iter().enumerate() {
        let last = i + 1 == n;
        match seg.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if merge && !last => continue,
            _ => {
                out.push(seg);
                continue;
            }
        }
        if last {
            out.push(String::new());
        }
    }
    out
}

/// Decodes every valid `%XX` escape once; invalid escapes stay as written.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::{normalize_path, path_readings};

    #[test]
    fn removes_dot_segments_and_query() {
        assert_eq!(normalize_path("/api/v1/../../admin?x=1"), vec!["admin"]);
        assert_eq!(normalize_path("/a/./b/"), vec!["a", "b", ""]);
        assert_eq!(normalize_path("/a/b/.."), vec!["a", ""]);
        assert_eq!(normalize_path("/../../etc"), vec!["etc"]);
        assert_eq!(normalize_path("/a/%2e%2E/b"), vec!["b"]);
        assert_eq!(normalize_path("/"), vec![""]);
        assert_eq!(normalize_path("/.."), vec![""]);
        assert!(normalize_path("").is_empty());
    }

    #[test]
    fn plain_paths_have_one_reading() {
        assert_eq!(path_readings("/a/b/./c?x=%2F"), vec![vec!["a", "b", "c"]]);
        // Repeated slashes: kept (as Go does) and merged (as nginx does).
        assert_eq!(
            path_readings("/a//b/"),
            vec![vec!["a", "", "b", ""], vec!["a", "b", ""]]
        );
    }

    /// Whether some reading of `raw` is exactly `want`.
    fn read_as(raw: &str, want: &[&str]) -> bool {
        path_readings(raw).iter().any(|r| r == want)
    }

    #[test]
    fn every_origin_reading_is_produced() {
        let secret = ["private", "secret.txt"];
        for raw in [
            "/public/..%2F..%2Fprivate%2Fsecret.txt",
            "/public/..%2f..%2fprivate/secret.txt",
            "/public/..%5C..%5Cprivate%5Csecret.txt",
            "/public\\..\\private\\secret.txt",
            "/public/%2E%2E/private/secret.txt",
            "/public/.%2e/private/secret.txt",
            "/public/..%252F..%252Fprivate/secret.txt",
            "/public/..%25252F..%25252Fprivate/secret.txt",
            "/public/..;/private/secret.txt",
            "/public/..%3B/private/secret.txt",
            "/private/secret.txt;/../../public/x",
            "/private/secret.txt%3F/../../public/x",
            "/private/secret.txt%00/../../public/x",
        ] {
            assert!(read_as(raw, &secret), "{raw}: {:?}", path_readings(raw));
        }
        // The plain reading keeps an encoded slash inside its segment.
        assert!(read_as("/api%2Fadmin", &["api%2Fadmin"]));
        assert!(read_as("/api%2Fadmin", &["api", "admin"]));
        assert_eq!(normalize_path("/%75sers"), vec!["users"]);
    }
}
