//! The denied requests recorded in a file, for `boundary suggest --from`: an `--audit-log`
//! file (one JSON object a line) or a local log (`boundary_request` lines with `key=value`
//! fields, values escaped by the audit crate's one rule). Other log lines of boundary are
//! passed over; a line that is neither is an error naming it.

use std::path::Path;

use boundary_audit::escape::unescape_text;
use boundary_audit::fields::MESSAGE;

use super::propose::Denied;

/// Every denied request in the file at `path`, in file order.
pub fn read(path: &Path) -> Result<Vec<Denied>, String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; give the file written by --audit-log or the log written by \
             --log-dir",
            path.display()
        )
    })?;
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("{} line {}: {why}", path.display(), n + 1);
        let line = strip_ansi(line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = if line.starts_with('{') {
            json_line(line)
        } else {
            log_line(line)
        };
        if let Some(d) = parsed.map_err(at)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// One `--audit-log` line: the denied request, or `None` for an allowed one.
fn json_line(line: &str) -> Result<Option<Denied>, String> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("not a JSON audit record ({e}); is this an --audit-log file?"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str());
    let (Some(decision), Some(method), Some(url)) =
        (field("decision"), field("http_method"), field("http_url"))
    else {
        return Err(
            "a JSON object without decision, http_method and http_url is not an audit record"
                .into(),
        );
    };
    Ok((decision == "deny").then(|| Denied {
        method: method.into(),
        url: url.into(),
    }))
}

/// One local log line: a denied `boundary_request`, `None` for an allowed one or another log
/// line of boundary (a timestamp, then a level).
fn log_line(line: &str) -> Result<Option<Denied>, String> {
    let mut words = line.split_whitespace();
    let stamp = words.next().unwrap_or_default();
    let level = words.next().unwrap_or_default();
    let is_log = chrono::DateTime::parse_from_rfc3339(stamp).is_ok()
        && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level);
    let has_message = line.split_whitespace().any(|w| w == MESSAGE);
    if !has_message {
        return if is_log {
            Ok(None)
        } else {
            Err(format!(
                "neither a log line of boundary nor a {MESSAGE} record; give the file written by \
                 --audit-log or the log written by --log-dir"
            ))
        };
    }
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
    };
    let (Some(decision), Some(method), Some(url)) =
        (field("decision"), field("http_method"), field("http_url"))
    else {
        return Err(format!(
            "a {MESSAGE} line without decision, http_method and http_url"
        ));
    };
    // `decision` is written as a quoted string (`decision="deny"`).
    if decision.trim_matches('"') != "deny" {
        return Ok(None);
    }
    let unescape = |s: &str| unescape_text(s).ok_or_else(|| format!("bad escape in {s:?}"));
    Ok(Some(Denied {
        method: unescape(method)?,
        url: unescape(url)?,
    }))
}

/// The line without terminal colour sequences (a copy of a coloured terminal log).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(text: &str) -> Result<Vec<Denied>, String> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        read(f.path()).map_err(|e| e.replace(&f.path().display().to_string(), "F"))
    }

    fn d(method: &str, url: &str) -> Denied {
        Denied {
            method: method.into(),
            url: url.into(),
        }
    }

    #[test]
    fn audit_log_lines() {
        let text = r#"{"ts":"x","level":"warn","msg":"boundary_request","decision":"deny","http_method":"GET","http_url":"https://a.test/\u2028x"}
{"decision":"allow","http_method":"GET","http_url":"https://ok.test/","matched_rule":"domain=ok.test"}

{"decision":"deny","http_method":"CONNECT","http_url":"https://b.test:443"}
"#;
        assert_eq!(
            from(text).unwrap(),
            [
                d("GET", "https://a.test/\u{2028}x"),
                d("CONNECT", "https://b.test:443")
            ]
        );
        let e = from("{\"decision\":\"deny\"}\n").unwrap_err();
        assert_eq!(
            e,
            "F line 1: a JSON object without decision, http_method and http_url is not an audit record"
        );
        let e = from("{\"decision\":\n").unwrap_err();
        assert!(e.starts_with("F line 1: not a JSON audit record"), "{e}");
    }

    #[test]
    fn local_log_lines() {
        let text = "\u{1b}[2m2026-12-03T07:01:27.123456Z\u{1b}[0m  INFO boundary: policy loaded rules=0\n\
2026-12-03T07:01:28.1Z  WARN boundary::audit: boundary_request owner= decision=\"deny\" session_id=s http_method=POST http_url=https://a.test/x\\u{2028}y event_time=t trace=0 span=0\n\
2026-12-03T07:01:28.2Z  INFO boundary::audit: boundary_request decision=\"allow\" http_method=GET http_url=https://ok.test/ matched_rule=domain=ok.test\n";
        assert_eq!(
            from(text).unwrap(),
            [d("POST", "https://a.test/x\u{2028}y")]
        );
        let e = from("2026-12-03T07:01:27Z  INFO boundary: ok\nhello there\n").unwrap_err();
        assert_eq!(
            e,
            "F line 2: neither a log line of boundary nor a boundary_request record; give the \
             file written by --audit-log or the log written by --log-dir"
        );
        let e = from("x boundary_request decision=deny http_url=https://a/\n").unwrap_err();
        assert_eq!(
            e,
            "F line 1: a boundary_request line without decision, http_method and http_url"
        );
    }

    /// The requesting process's fields come after coderd's, and the jailed process chooses
    /// its own command line: one imitating `decision` or `http_url` changes nothing learned.
    #[test]
    fn a_command_line_imitating_fields_changes_nothing() {
        let text = "2026-12-03T07:01:28.2Z  INFO boundary::audit: boundary_request decision=\"allow\" http_method=GET http_url=https://ok.test/ matched_rule=domain=ok.test trace=0 span=0 process_pid=7 process_name=\"curl\" process_exe=\"/usr/bin/curl\" process_args=\"curl decision=deny http_method=PUT http_url=https://forged.test/\" process_parent_name=\"sh\"\n\
2026-12-03T07:01:28.3Z  WARN boundary::audit: boundary_request decision=\"deny\" http_method=GET http_url=https://real.test/ trace=0 span=0 process_pid=8 process_name=\"curl\" process_exe=\"/usr/bin/curl\" process_args=\"curl http_method=PUT http_url=https://forged.test/\" process_parent_name=\"sh\"\n";
        assert_eq!(from(text).unwrap(), [d("GET", "https://real.test/")]);
        let json = r#"{"decision":"allow","http_method":"GET","http_url":"https://ok.test/","process_args":"curl \"decision\":\"deny\""}
"#;
        assert_eq!(from(json).unwrap(), []);
    }

    #[test]
    fn a_missing_file_says_what_to_give() {
        let e = read(Path::new("/nonexistent/audit.jsonl")).unwrap_err();
        assert!(
            e.starts_with("cannot read /nonexistent/audit.jsonl: "),
            "{e}"
        );
        assert!(e.contains("--audit-log"), "{e}");
    }
}
