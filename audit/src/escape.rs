//! One rule for characters that must never reach a log or audit line raw: C0 and C1 controls,
//! DEL, and the line-separator and bidirectional-formatting characters a viewer would obey
//! (U+2028, U+2029, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069, U+061C). A jailed process
//! controls URLs; unescaped, such a URL can end a line early or reorder what a reader sees and
//! forge an "allow" line. Every sink uses [`is_unsafe`]; text sinks write [`escape_text`],
//! the JSON file [`escape_json`] (JSON's own `\uXXXX`), so a reader can recover every value.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for a character no log line may contain raw.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{061C}'
        )
}

/// Text lines: each unsafe character becomes `\u{XXXX}` and a backslash `\\`, so the original
/// is recoverable ([`unescape_text`]). Borrowed when there is nothing to escape.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:04X}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The inverse of [`escape_text`]; `None` on a malformed escape.
pub fn unescape_text(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '\\' => out.push('\\'),
            'u' => {
                if it.next()? != '{' {
                    return None;
                }
                let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A serialised JSON document with the unsafe characters serde_json leaves raw (DEL, C1, the
/// separators and bidi controls) written as `\uXXXX`. They can only occur inside strings, so
/// the document decodes to the same values.
pub fn escape_json(json: String) -> String {
    if !json.chars().any(is_unsafe) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character the rule names, plus the edges of the control ranges.
    pub(crate) const NASTY: &[char] = &[
        '\u{0}', '\n', '\r', '\u{1b}', '\u{1f}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}',
        '\u{2028}', '\u{2029}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}',
        '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{061C}',
    ];

    #[test]
    fn every_named_character_is_unsafe_and_ordinary_text_is_not() {
        for &c in NASTY {
            assert!(is_unsafe(c), "{:04x}", c as u32);
        }
        for c in [
            'a', ' ', '/', 'é', '日', '\u{2027}', '\u{202F}', '\u{2065}', '\u{206A}',
        ] {
            assert!(!is_unsafe(c), "{:04x}", c as u32);
        }
    }

    #[test]
    fn text_escape_leaves_nothing_raw_and_round_trips() {
        for &c in NASTY {
            let s = format!("https://h/a{c}b\\c?q={c}");
            let e = escape_text(&s);
            assert!(!e.chars().any(is_unsafe), "{e:?}");
            assert_eq!(unescape_text(&e).as_deref(), Some(s.as_str()));
        }
        assert!(matches!(escape_text("https://h/plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_escape_leaves_nothing_raw_and_decodes_to_the_same_value() {
        for &c in NASTY {
            let v = format!("x{c}y");
            let j = escape_json(serde_json::to_string(&v).unwrap());
            assert!(!j.chars().any(is_unsafe), "{j:?}");
            assert_eq!(serde_json::from_str::<String>(&j).unwrap(), v);
        }
    }
}
