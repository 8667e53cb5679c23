//! Request paths as the matcher sees them: query and fragment cut, each segment
//! percent-decoded (an encoded slash stays `%2F`), dot segments removed, empty segments dropped.
//!
//! Deciding on the normalised form is what makes `/api/v1/../../admin` count as `/admin`:
//! the origin server will resolve it that way, so the policy must too.

use super::parse::decode_segment;

/// Splits a request target's path into the segments rules are matched against.
pub fn normalize_path(raw: &str) -> Vec<String> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    let mut out: Vec<String> = Vec::new();
    for seg in path.split('/') {
        if seg.is_empty() {
            continue;
        }
        let decoded = decode_segment(seg);
        match decoded.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(decoded),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn removes_dot_segments_and_query() {
        assert_eq!(normalize_path("/api/v1/../../admin?x=1"), vec!["admin"]);
        assert_eq!(normalize_path("/a/./b/"), vec!["a", "b"]);
        assert_eq!(normalize_path("/../../etc"), vec!["etc"]);
        assert_eq!(normalize_path("/a/%2e%2E/b"), vec!["b"]);
        assert!(normalize_path("/").is_empty());
        assert!(normalize_path("").is_empty());
    }

    #[test]
    fn encoded_slash_is_not_a_separator() {
        assert_eq!(normalize_path("/api%2Fadmin"), vec!["api%2Fadmin"]);
        assert_eq!(normalize_path("/api%2fadmin/x"), vec!["api%2Fadmin", "x"]);
        assert_eq!(normalize_path("/%75sers"), vec!["users"]);
    }
}
