//! Request paths as the matcher sees them.
//!
//! Origins disagree about what a path means: nginx and Python's `http.server` percent-decode
//! the whole path first, so `%2F` separates segments; IIS and many Windows-hosted frameworks
//! also split on `\` and `%5C`; Tomcat and Spring drop `;parameters` from each segment (so
//! `/..;/` is `/../`); a server behind a decoding front end decodes twice (`%252F`); a few cut
//! the path at a decoded `?`, `#` or NUL; IIS's best-fit mapping and frameworks that
//! NFKC-normalise read look-alikes (`／` U+FF0F, `∕` U+2215, `＼`, `¥`, `．`, `‥`) and overlong
//! UTF-8 (`%C0%AF`) as `/`, `\` and `.`, and Windows drops trailing dots and spaces from a
//! file name (`.. ` is `..`). A rule decides on *every* one of these readings
//! ([`path_readings`]) and allows only when each reading is allowed, so no encoding can make
//! an origin serve a path the rules forbid.
//!
//! Segments are what Go's boundary compares: the path split on `/` after its leading slash, so
//! `/` is one empty segment and `/api/` ends with one. Every reading cuts the query and
//! fragment and removes dot segments as RFC 3986 does (`/api/v1/../../admin` is `/admin`,
//! `/api/v1/..` is `/api/`); readings with and without merging repeated slashes (`/a//b`)
//! are both decided, since some origins merge them and some do not.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

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
    /// Look-alikes and overlong UTF-8 read as their ASCII form, trailing dots and spaces
    /// dropped from each segment ([`fold_segment`]); only after decoding.
    fold: bool,
}

/// The reading Go's boundary applies, without dot segments.
const PLAIN: Reading = Reading {
    decode: Decode::Segments,
    backslash: false,
    params: false,
    cut: false,
    merge: false,
    fold: false,
};

/// The segments of the plainest reading: split on `/`, each segment decoded (an encoded slash
/// stays `%2F`), dot segments removed. Used to print a path in a suggested rule.
pub fn normalize_path(raw: &str) -> Vec<String> {
    read(raw, PLAIN)
}

/// Every distinct reading of `raw` that common origins apply, each as its segments. A path
/// without `%`, `\\`, `;`, `//` or a segment ending in `.` has exactly one reading.
pub fn path_readings(raw: &str) -> Vec<Vec<String>> {
    let path = strip_query(raw);
    if !path.contains(['%', '\\', ';']) && !path.contains("//") && !trailing_dot(path) {
        return vec![normalize_path(path)];
    }
    let folds = may_fold(path);
    let mut out: Vec<Vec<String>> = Vec::new();
    for decode in [Decode::Segments, Decode::Once, Decode::Repeated] {
        for bits in 0u8..32 {
            let fold = bits & 16 != 0;
            if fold && (!folds || decode == Decode::Segments) {
                // Folding is read after a whole-path decode (without escapes the two agree).
                continue;
            }
            let reading = Reading {
                decode,
                backslash: bits & 1 != 0,
                params: bits & 2 != 0,
                cut: bits & 4 != 0,
                merge: bits & 8 != 0,
                fold,
            };
            let segs = read(path, reading);
            if !out.contains(&segs) {
                out.push(segs);
            }
        }
    }
    out
}

/// Whether a segment of `path` other than `.` and `..` ends in a dot (Windows drops it).
fn trailing_dot(path: &str) -> bool {
    path.split('/')
        .any(|seg| seg.ends_with('.') && seg != "." && seg != "..")
}

/// Whether folding can change a reading of `path`: an escaped non-ASCII byte, space, dot or
/// `%` (a double encoding of those), or a segment ending in a dot. Keeps the common escaped
/// paths (`/@scope%2Fname`) at the readings without folding.
fn may_fold(path: &str) -> bool {
    let b = path.as_bytes();
    trailing_dot(path)
        || b.windows(3).any(|w| {
            w[0] == b'%'
                && (matches!(w[1], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
                    || (w[1] == b'2' && matches!(w[2], b'0' | b'5' | b'e' | b'E')))
        })
}

/// A segment as Windows and normalising origins read it: NFKC plus best-fit look-alikes
/// (`∕` U+2215 and `⁄` U+2044 as `/`, `¥` and `₩` as `\\`, as Windows' code pages map them),
/// then trailing dots and spaces dropped, a segment of only dots and spaces being `.` or `..`
/// by its dots. The parser refuses pattern segments this changes; the readings apply it.
pub(crate) fn fold_segment(seg: &str) -> Cow<'_, str> {
    let plain = seg.is_ascii() && !seg.ends_with(['.', ' ']);
    if plain {
        return Cow::Borrowed(seg);
    }
    let mut out: String = fold_chars(seg);
    if out != "." && out != ".." && out.ends_with(['.', ' ']) {
        let kept = out.trim_end_matches(['.', ' ']).len();
        if kept == 0 {
            out = if out.matches('.').count() >= 2 {
                ".."
            } else {
                "."
            }
            .to_string();
        } else {
            out.truncate(kept);
        }
    }
    Cow::Owned(out)
}

/// NFKC with the best-fit separators NFKC leaves alone.
fn fold_chars(s: &str) -> String {
    s.nfkc()
        .map(|c| match c {
            '\u{2215}' | '\u{2044}' | '\u{29F8}' => '/',
            '\u{00A5}' | '\u{20A9}' | '\u{2216}' | '\u{29F5}' | '\u{29F9}' => '\\',
            c => c,
        })
        .collect()
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
            decoded = percent_decode(path, r.fold);
            decoded.as_str()
        }
        Decode::Repeated => {
            let mut cur = path.to_string();
            loop {
                let next = percent_decode(&cur, r.fold);
                if next == cur {
                    break;
                }
                cur = next;
            }
            decoded = cur;
            decoded.as_str()
        }
    };
    let folded;
    let text = if r.fold && !text.is_ascii() {
        folded = fold_chars(text);
        folded.as_str()
    } else {
        text
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
            if r.fold {
                if let Cow::Owned(f) = fold_segment(&seg) {
                    seg = f;
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

/// Decodes every valid `%XX` escape once; invalid escapes stay as written. `overlong` reads
/// overlong UTF-8 (`%C0%AF`) as the character it spells, as old IIS did; otherwise invalid
/// UTF-8 becomes U+FFFD.
fn percent_decode(s: &str, overlong: bool) -> String {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    if !overlong {
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let (c, used) = overlong_char(bad);
                out.push(c);
                rest = &bad[used..];
            }
        }
    }
    out
}

/// The character an overlong (or otherwise invalid) UTF-8 sequence at the start of `b` spells,
/// and how many bytes it takes: 2-, 3- and 4-byte forms decoded by their bits, anything else
/// one U+FFFD per byte.
fn overlong_char(b: &[u8]) -> (char, usize) {
    let cont = |i: usize| {
        b.get(i)
            .filter(|x| *x & 0xC0 == 0x80)
            .map(|x| u32::from(x & 0x3F))
    };
    let lead = u32::from(b[0]);
    let spelled = match b[0] {
        0xC0..=0xDF => cont(1).map(|c1| (((lead & 0x1F) << 6) | c1, 2)),
        0xE0..=0xEF => cont(1)
            .zip(cont(2))
            .map(|(c1, c2)| (((lead & 0x0F) << 12) | (c1 << 6) | c2, 3)),
        0xF0..=0xF7 => cont(1)
            .zip(cont(2))
            .zip(cont(3))
            .map(|((c1, c2), c3)| (((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4)),
        _ => None,
    };
    match spelled.and_then(|(v, n)| char::from_u32(v).map(|c| (c, n))) {
        Some(found) => found,
        None => (char::REPLACEMENT_CHARACTER, 1),
    }
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
        // Folding: look-alikes, overlong UTF-8, trailing dots and spaces.
        for raw in [
            "/public/..%EF%BC%8Fprivate%EF%BC%8Fsecret.txt",
            "/public/..%E2%88%95private/secret.txt",
            "/public/..%C2%A5private/secret.txt",
            "/public/%EF%BC%8E%EF%BC%8E/private/secret.txt",
            "/public/%E2%80%A5/private/secret.txt",
            "/public/..%C0%AFprivate%C0%AFsecret.txt",
            "/public/%C0%AE%C0%AE/private/secret.txt",
            "/public/..%F0%80%80%AFprivate/secret.txt",
            "/public/..%20/private/secret.txt",
            "/public/..%2520/private/secret.txt",
            "/private./secret.txt",
            "/private%20%20./secret.txt.",
        ] {
            assert!(read_as(raw, &secret), "{raw}: {:?}", path_readings(raw));
        }
        // The common escaped path keeps its 48-or-fewer readings without folding.
        assert!(path_readings("/@scope%2Fname").len() <= 48);
        assert!(!read_as("/public/caf%C3%A9", &["public", "cafe"]));
        // The plain reading keeps an encoded slash inside its segment.
        assert!(read_as("/api%2Fadmin", &["api%2Fadmin"]));
        assert!(read_as("/api%2Fadmin", &["api", "admin"]));
        assert_eq!(normalize_path("/%75sers"), vec!["users"]);
    }
}
