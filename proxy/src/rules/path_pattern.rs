//! The `path=` value: a comma list of path patterns, `*` standing for segments, and how a
//! pattern's literal segments are decoded so they compare with a request's readings.

use super::parse::Parser;
use super::rule::{PathPattern, RuleError, Segment};

const DOT_SEGMENT: &str =
    "dot segments (. and ..) cannot appear in a path pattern; write the path they stand for";

impl Parser<'_> {
    pub(super) fn paths(&self, value: &str, vat: usize) -> Result<Vec<PathPattern>, RuleError> {
        let mut out = Vec::new();
        for (at, item) in self.items(value, vat, "path")? {
            if item == "*" {
                out.push(PathPattern::Any);
                continue;
            }
            if !item.starts_with('/') {
                return Err(self.err(
                    at,
                    format!("a path pattern starts with \"/\" (or is \"*\" for every path); write path=/{item}"),
                ));
            }
            if let Some(i) = item.find(['?', '#']) {
                return Err(self.err(
                    at + i,
                    "a path pattern cannot contain a query or fragment; they are ignored when matching, so leave them out",
                ));
            }
            if let Some(i) = item.find("//") {
                return Err(self.err(
                    at + i,
                    "\"//\" cannot appear in a path pattern (Go's boundary refuses it too); write single slashes",
                ));
            }
            out.push(self.path_pattern(item, at)?);
        }
        Ok(out)
    }

    /// One pattern starting with `/` and without `//`, at byte `at`. As in Go, one trailing
    /// slash is dropped (`/api/` is `/api`) and `/` alone has no segments, so it matches every
    /// path.
    fn path_pattern(&self, item: &str, at: usize) -> Result<PathPattern, RuleError> {
        let body = &item[1..];
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segs = Vec::new();
        if body.is_empty() {
            return Ok(PathPattern::Segments(segs));
        }
        let mut off = 1;
        for seg in body.split('/') {
            segs.push(self.path_segment(seg, at + off)?);
            off += seg.len() + 1;
        }
        Ok(PathPattern::Segments(segs))
    }

    /// One non-empty segment of a path pattern, starting at byte `at`.
    fn path_segment(&self, seg: &str, at: usize) -> Result<Segment, RuleError> {
        if seg == "*" {
            return Ok(Segment::Star);
        }
        if seg.contains('*') {
            return Err(self.err(
                at,
                format!("\"*\" must be a whole segment; {seg:?} mixes it with text (write /{}/* to match what follows)", seg.trim_matches('*')),
            ));
        }
        if seg == "." || seg == ".." {
            return Err(self.err(at, DOT_SEGMENT));
        }
        let decoded = decode_segment(seg);
        if decoded == "." || decoded == ".." {
            return Err(self.err(at, DOT_SEGMENT));
        }
        if let Some(c) = separator_in(&decoded) {
            return Err(self.err(
                at,
                format!("{c} cannot appear in a path pattern: origins read it as a separator or the end of the path, so the pattern could never match; write the path with \"/\" between segments"),
            ));
        }
        let folded = super::path::fold_segment(&decoded);
        if folded != decoded.as_str() {
            return Err(self.err(
                at,
                format!("{decoded:?} is read as {folded:?} by some origins (Unicode look-alikes, overlong forms and trailing dots or spaces are normalised), so the pattern could never match every reading; write {folded:?}"),
            ));
        }
        Ok(Segment::Literal(decoded))
    }
}

/// Decodes percent escapes in one path segment, except `%2F` (kept as the three characters
/// `%2F`, so an encoded slash can never become a separator). Invalid escapes stay literal.
pub(crate) fn decode_segment(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let v = (h * 16 + l) as u8;
                if v == b'/' {
                    out.extend_from_slice(b"%2F");
                } else {
                    out.push(v);
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A character (named for the message) that some origin reads as a segment separator or as
/// the end of the path; a pattern segment holding one would never match every reading.
fn separator_in(decoded: &str) -> Option<&'static str> {
    if decoded.contains("%2F") {
        Some("an encoded slash (%2F)")
    } else if decoded.contains('\\') {
        Some("a backslash (\\ or %5C)")
    } else if decoded.contains(';') {
        Some("\";\" (a path parameter)")
    } else if decoded.contains(['?', '#', '\0']) {
        Some("an encoded ?, # or NUL")
    } else if decoded
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    {
        Some("a double-encoded escape (%25 followed by two hex digits)")
    } else {
        None
    }
}
