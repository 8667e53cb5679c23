//! Adding rules to a config file's text: the allowlist is extended where it is (or created at
//! the end), every other byte stays, so the user's comments and order survive. The result is
//! read back with the real config parser and must hold exactly the old rules plus the new
//! ones before anything is written; the write is atomic (temporary file, then rename).

use std::io::Write;
use std::path::Path;

use boundary::config::file;

/// YAML key of the allowlist, from the settings table.
fn allow_key() -> &'static str {
    boundary::config::settings::setting("allow")
        .and_then(|s| s.yaml)
        .expect("the allow row has a YAML key")
}

/// `text` with `rules` appended to its allowlist, checked by parsing it back.
pub fn add_rules(text: &str, rules: &[String]) -> Result<String, String> {
    let before = file::parse(text)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let key = allow_key();
    let items: Vec<String> = rules.iter().map(|r| quote(r)).collect();
    match lines.iter().position(|l| key_line(l, key)) {
        None => {
            lines.push(format!("{key}:"));
            lines.extend(items.iter().map(|i| format!("  - {i}")));
        }
        Some(at) => {
            let value = value_of(&lines[at]);
            if value.is_empty() {
                let (end, indent) = block_end(&lines, at);
                let new = items.iter().map(|i| format!("{indent}- {i}"));
                lines.splice(end..end, new);
            } else if value == "[]" || value == "~" || value == "null" {
                lines[at] = format!("{key}:");
                let new = items.iter().map(|i| format!("  - {i}"));
                lines.splice(at + 1..at + 1, new);
            } else if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                let sep = if inner.trim().is_empty() { "" } else { ", " };
                lines[at] = format!("{key}: [{inner}{sep}{}]", items.join(", "));
            } else {
                return Err(format!(
                    "the {key:?} value is written in a form boundary cannot extend; write it as a \
                     list, one \"- rule\" a line"
                ));
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    let after = file::parse(&out)?;
    let mut expected = before.get("allow").cloned().unwrap_or_default();
    expected.extend(rules.iter().cloned());
    if after.get("allow").cloned().unwrap_or_default() != expected {
        return Err(format!(
            "the edited file would not hold the old rules plus the new ones; add them to {key:?} \
             by hand"
        ));
    }
    Ok(out)
}

/// Single-quoted YAML scalar: nothing in it is special but the quote itself.
fn quote(rule: &str) -> String {
    format!("'{}'", rule.replace('\'', "''"))
}

/// `allowlist:` at the start of a line (a top-level key), quoted or not.
fn key_line(line: &str, key: &str) -> bool {
    let rest = ["", "\"", "'"]
        .iter()
        .find_map(|q| line.strip_prefix(&format!("{q}{key}{q}")));
    rest.is_some_and(|r| r.trim_start().starts_with(':'))
}

/// The value after the key's colon, without a trailing comment.
fn value_of(line: &str) -> &str {
    let after = line.split_once(':').map_or("", |x| x.1);
    let value = match after.find(" #") {
        Some(i) => &after[..i],
        None => after,
    };
    value.trim()
}

/// Where a block list that starts after line `at` ends (the line after its last item or
/// continuation; trailing comments and blank lines belong to what follows), and its items'
/// indentation.
fn block_end(lines: &[String], at: usize) -> (usize, String) {
    let mut end = at + 1;
    let mut indent = None;
    for (i, line) in lines.iter().enumerate().skip(at + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let top_level_item = line.starts_with("- ") || line == "-";
        if !line.starts_with([' ', '\t']) && !top_level_item {
            break;
        }
        if indent.is_none() && trimmed.starts_with('-') {
            indent = Some(line[..line.len() - trimmed.len()].to_string());
        }
        end = i + 1;
    }
    (end, indent.unwrap_or_else(|| "  ".into()))
}

/// Writes `text` to `path` atomically: a temporary file beside it, the old file's permissions,
/// then a rename, so a reader never sees half a config.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".boundary-config-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A unified diff of two texts that differ in one region (what [`add_rules`] makes), with
/// three lines of context.
pub fn diff(old: &str, new: &str, name: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    if prefix == a.len() && prefix == b.len() {
        return String::new();
    }
    let start = prefix.saturating_sub(3);
    let a_end = (a.len() - suffix + 3).min(a.len());
    let b_end = (b.len() - suffix + 3).min(b.len());
    // A range of no lines is numbered by the line before it (`-0,0` for an empty file).
    let range = |count: usize| format!("{},{count}", if count == 0 { start } else { start + 1 });
    let mut out = format!(
        "--- {name}\n+++ {name} (proposed)\n@@ -{} +{} @@\n",
        range(a_end - start),
        range(b_end - start)
    );
    for l in &a[start..prefix] {
        out.push_str(&format!(" {l}\n"));
    }
    for l in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("-{l}\n"));
    }
    for l in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("+{l}\n"));
    }
    for l in &a[a.len() - suffix..a_end] {
        out.push_str(&format!(" {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(text: &str, rules: &[&str]) -> Result<String, String> {
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        add_rules(text, &rules)
    }

    #[test]
    fn appends_to_the_list_keeping_comments_and_order() {
        let text = "# my policy\nproxy_port: 8087\nallowlist:\n    # GitHub\n    - domain=github.com  # code\n    - 'domain=*.github.com'\n\n# logging\nlog_level: warn\n";
        let out = add(text, &["domain=a.test", "method=GET domain=b.test path=/x"]).unwrap();
        assert_eq!(
            out,
            "# my policy\nproxy_port: 8087\nallowlist:\n    # GitHub\n    - domain=github.com  # code\n    - 'domain=*.github.com'\n    - 'domain=a.test'\n    - 'method=GET domain=b.test path=/x'\n\n# logging\nlog_level: warn\n"
        );
        let d = diff(text, &out, "config.yaml");
        assert!(d.contains("\n+    - 'domain=a.test'\n"), "{d}");
        assert!(d.contains("\n     - 'domain=*.github.com'\n"), "{d}");
        assert!(!d.contains("\n-"), "{d}");
        assert!(d.contains("\n@@ -4,6 +4,8 @@\n"), "{d}");
        let d = diff("", "allowlist:\n  - 'domain=a.test'\n", "c");
        assert_eq!(
            d,
            "--- c\n+++ c (proposed)\n@@ -0,0 +1,2 @@\n+allowlist:\n+  - 'domain=a.test'\n"
        );
    }

    #[test]
    fn creates_the_list_or_fills_an_empty_one() {
        assert_eq!(
            add("log_level: warn", &["domain=a.test"]).unwrap(),
            "log_level: warn\nallowlist:\n  - 'domain=a.test'\n"
        );
        assert_eq!(
            add("", &["domain=a.test"]).unwrap(),
            "allowlist:\n  - 'domain=a.test'\n"
        );
        assert_eq!(
            add(
                "allowlist: []  # none yet\nlog_level: warn\n",
                &["domain=a.test"]
            )
            .unwrap(),
            "allowlist:\n  - 'domain=a.test'\nlog_level: warn\n"
        );
        assert_eq!(
            add("allowlist: [domain=x.test]\n", &["domain=a.test"]).unwrap(),
            "allowlist: [domain=x.test, 'domain=a.test']\n"
        );
        assert_eq!(
            add(
                "allowlist:\n- domain=x.test\nlog_level: warn\n",
                &["domain=a.test"]
            )
            .unwrap(),
            "allowlist:\n- domain=x.test\n- 'domain=a.test'\nlog_level: warn\n"
        );
    }

    #[test]
    fn a_file_it_cannot_extend_or_parse_is_an_error() {
        let e = add("allowlist: [\n  domain=x.test]\n", &["domain=a.test"]).unwrap_err();
        assert!(e.contains("one \"- rule\" a line"), "{e}");
        let e = add("alowlist: []\n", &["domain=a.test"]).unwrap_err();
        assert!(e.contains("unknown key \"alowlist\""), "{e}");
    }

    #[test]
    fn atomic_write_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "a").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, "allowlist: []\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "allowlist: []\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
