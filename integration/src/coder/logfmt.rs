//! logfmt: the `key=value` format of coderd's human log lines. Values are bare (up to the
//! next space; `=` inside is part of the value, as in `matched_rule=domain=dev.coder.com`) or
//! double-quoted with Go escapes when they are empty or contain spaces, quotes, backslashes,
//! control, line-separator or bidi characters (never raw: a URL from the jail must not forge a
//! line).

use std::fmt::Write as _;

use boundary_audit::escape::is_unsafe;

/// The fields of coderd's `boundary_request` line in order (docs/interop.md §7), written out
/// here from the spec rather than taken from the audit crate, so the tests that check our
/// output against it are an independent oracle. `matched_rule` appears only on allows.
pub const SECTION7_FIELDS: [&str; 16] = [
    "owner",
    "workspace_name",
    "agent_name",
    "decision",
    "session_id",
    "sequence_number",
    "workspace_id",
    "template_id",
    "template_version_id",
    "http_method",
    "http_url",
    "event_time",
    "matched_rule",
    "request_id",
    "trace",
    "span",
];

/// Writes `value` bare when it can be, else quoted Go-style.
pub fn quote(value: &str) -> String {
    let needs = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '\\' || is_unsafe(c) || c.is_whitespace());
    if !needs {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // The audit crate's one rule: controls, separators and bidi characters.
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats pairs as `k=v k=v`.
pub fn format_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&quote(v));
    }
    out
}

/// Parses `k=v k="quoted v" ...` into pairs, in order. Errors name the byte offset.
pub fn parse(s: &str) -> Result<Vec<(String, String)>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &s[ks..i];
        if key.is_empty() {
            return Err(format!("empty key at byte {ks}"));
        }
        if i >= b.len() || b[i] != b'=' {
            // A bare key: logfmt treats it as true; coderd never writes one.
            out.push((key.to_string(), String::new()));
            continue;
        }
        i += 1;
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            let mut chars = s[i..].char_indices();
            while let Some((off, c)) = chars.next() {
                match c {
                    '"' => {
                        i += off + 1;
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, 'r')) => v.push('\r'),
                        Some((_, 't')) => v.push('\t'),
                        Some((_, '"')) => v.push('"'),
                        Some((_, '\\')) => v.push('\\'),
                        Some((uo, 'u')) => {
                            let start = i + uo + 1;
                            let hex = s
                                .get(start..start + 4)
                                .ok_or_else(|| format!("short \\u escape at byte {start}"))?;
                            let n = u32::from_str_radix(hex, 16)
                                .map_err(|_| format!("bad \\u escape at byte {start}"))?;
                            v.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                            for _ in 0..4 {
                                chars.next();
                            }
                        }
                        other => {
                            return Err(format!("bad escape {other:?} in value of {key}"));
                        }
                    },
                    c => v.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated quoted value of {key}"));
            }
            out.push((key.to_string(), v));
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            out.push((key.to_string(), s[vs..i].to_string()));
        }
    }
    Ok(out)
}

/// One human-format slog line: `2026-01-16 00:11:40.564 [info] coderd.agentrpc: msg k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanLine {
    pub time: String,
    pub level: String,
    pub logger: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl HumanLine {
    /// The value of a field, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Field names in order.
    pub fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Parses a human-format line.
pub fn parse_human(line: &str) -> Result<HumanLine, String> {
    let mut rest = line.trim_end_matches(['\n', '\r']);
    let mut take = |what: &str| -> Result<String, String> {
        let (tok, r) = rest
            .split_once(' ')
            .ok_or_else(|| format!("line ends before the {what}: {line:?}"))?;
        rest = r;
        Ok(tok.to_string())
    };
    let date = take("date")?;
    let time = take("time")?;
    let level = take("level")?;
    let logger = take("logger")?;
    let (message, fields) = match rest.split_once(' ') {
        Some((m, f)) => (m.to_string(), f),
        None => (rest.to_string(), ""),
    };
    let level = level
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .ok_or_else(|| format!("level not in brackets: {line:?}"))?
        .to_string();
    let logger = logger
        .strip_suffix(':')
        .ok_or_else(|| format!("logger not followed by ':': {line:?}"))?
        .to_string();
    Ok(HumanLine {
        time: format!("{date} {time}"),
        level,
        logger,
        message,
        fields: parse(fields)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_interop_example() {
        let l = parse_human("2026-01-16 00:11:40.564 [info] coderd.agentrpc: boundary_request owner=joe workspace_name=some-task-c88d agent_name=dev decision=allow workspace_id=f2bd4e9f-7e27-49fc-961e-be4d1c2aa987 http_method=GET http_url=https://dev.coder.com event_time=2026-01-16T00:11:39.388607657Z matched_rule=domain=dev.coder.com request_id=9f30d667-1fc9-47ba-b9e5-8eac46e0abef trace=478b2b45577307c4fd1bcfc64fad6ffb span=9ece4bc70c311edb").unwrap();
        assert_eq!(l.level, "info");
        assert_eq!(l.logger, "coderd.agentrpc");
        assert_eq!(l.message, "boundary_request");
        assert_eq!(l.get("matched_rule"), Some("domain=dev.coder.com"));
        assert_eq!(l.get("span"), Some("9ece4bc70c311edb"));
        assert_eq!(l.fields.len(), 12);
    }

    #[test]
    fn quoting_round_trips() {
        for v in [
            "",
            "a b",
            "q\"uote",
            "back\\slash",
            "new\nline",
            "tab\t",
            "ctl\u{1}",
            "plain=x",
            "ünï",
        ] {
            let line = format_pairs([("k", v), ("z", "1")]);
            assert_eq!(
                parse(&line).unwrap(),
                vec![
                    ("k".to_string(), v.to_string()),
                    ("z".to_string(), "1".to_string())
                ],
                "{line}"
            );
        }
    }

    #[test]
    fn separators_and_bidi_characters_are_quoted_never_raw() {
        for c in [
            '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{61c}',
        ] {
            let v = format!("https://h/a{c}b");
            let line = format_pairs([("http_url", v.as_str())]);
            assert!(!line.chars().any(is_unsafe), "{line:?}");
            assert_eq!(parse(&line).unwrap(), vec![("http_url".to_string(), v)]);
        }
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(parse("k=\"abc").is_err());
    }
}
