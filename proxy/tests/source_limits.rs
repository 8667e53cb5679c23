//! The project's size limits for this crate (issue 13): no file in `proxy/src/` over 400 lines
//! and no function over 80 lines, tests left out (`tests.rs` files and `#[cfg(test)]` items).
//! Fails naming every file and function over its limit, so the limits stay true.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 80;

#[test]
fn no_file_over_400_lines_and_no_function_over_80() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {files:?} under {src:?}");
    let mut over = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(&src).unwrap().display().to_string();
        let source = Source::new(&text);
        let code = source.without_tests();
        let lines = code.iter().filter(|l| l.is_some()).count();
        if lines > MAX_FILE_LINES {
            over.push(format!(
                "proxy/src/{name}: {lines} lines outside tests (limit {MAX_FILE_LINES})"
            ));
        }
        for (func, line, len) in functions(&code) {
            if len > MAX_FN_LINES {
                over.push(format!(
                    "proxy/src/{name}:{line}: fn {func} is {len} lines (limit {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "split these (one concern per file, one step per function):\n{}",
        over.join("\n")
    );
}

/// Every `.rs` file under `dir` except test-only modules (`tests.rs`).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// A file's lines with comments, string and character literals blanked out (so braces in
/// them do not count), keeping line numbers.
struct Source {
    lines: Vec<String>,
}

impl Source {
    fn new(text: &str) -> Self {
        let mut out = String::with_capacity(text.len());
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let (c, next) = (chars[i], chars.get(i + 1).copied());
            let skip = match (c, next) {
                ('/', Some('/')) => until(&chars, i, |cs, j| cs[j] == '\n'),
                ('/', Some('*')) => {
                    until(&chars, i + 2, |cs, j| cs[j - 1] == '*' && cs[j] == '/') + 1
                }
                ('"', _) => string_end(&chars, i + 1, 0),
                ('r', Some('"' | '#')) if raw_start(&chars, i).is_some() => {
                    let hashes = raw_start(&chars, i).unwrap();
                    string_end(&chars, i + 2 + hashes, hashes)
                }
                ('\'', _) => char_end(&chars, i).unwrap_or(i + 1),
                _ => i + 1,
            };
            for &skipped in &chars[i..skip.min(chars.len())] {
                out.push(if skipped == '\n' || skip == i + 1 {
                    skipped
                } else {
                    ' '
                });
            }
            i = skip.max(i + 1);
        }
        Self {
            lines: out.lines().map(str::to_string).collect(),
        }
    }

    /// The lines, with those of `#[cfg(test)]` items as `None`.
    fn without_tests(&self) -> Vec<Option<&str>> {
        let mut out: Vec<Option<&str>> = self.lines.iter().map(|l| Some(l.as_str())).collect();
        let mut i = 0;
        while i < self.lines.len() {
            if self.lines[i].trim_start().starts_with("#[cfg(test)]") {
                let end = block_end(&self.lines, i).unwrap_or(i);
                for line in &mut out[i..=end] {
                    *line = None;
                }
                i = end;
            }
            i += 1;
        }
        out
    }
}

/// The first position from `from` where `stop` holds (or the end).
fn until(chars: &[char], from: usize, stop: impl Fn(&[char], usize) -> bool) -> usize {
    (from..chars.len())
        .find(|&j| j > 0 && stop(chars, j))
        .unwrap_or(chars.len())
}

/// The number of `#` of a raw string starting at `i` (`r"`, `r#"`...), if it is one.
fn raw_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
    (chars.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// Just past the end of a string whose content starts at `from` (`hashes` > 0: raw).
fn string_end(chars: &[char], from: usize, hashes: usize) -> usize {
    let mut j = from;
    while j < chars.len() {
        match chars[j] {
            '\\' if hashes == 0 => j += 2,
            '"' if chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|c| **c == '#')
                .count()
                == hashes =>
            {
                return j + 1 + hashes
            }
            _ => j += 1,
        }
    }
    chars.len()
}

/// Just past a character literal at `i` (`'{'`, `'\n'`, `'\u{7b}'`); `None` for a lifetime.
fn char_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        return (i + 3..chars.len())
            .find(|&j| chars[j] == '\'')
            .map(|j| j + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}

/// The line where the item starting at line `start` ends: its braces balance, or a `;` ends
/// it before any brace opens.
fn block_end<S: AsRef<str>>(lines: &[S], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut brackets = 0usize;
    let mut opened = false;
    for (n, line) in lines.iter().enumerate().skip(start) {
        for c in line.as_ref().chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth = depth.saturating_sub(1),
                '(' | '[' => brackets += 1,
                ')' | ']' => brackets = brackets.saturating_sub(1),
                ';' if !opened && brackets == 0 => return Some(n),
                _ => {}
            }
            if opened && depth == 0 {
                return Some(n);
            }
        }
    }
    None
}

/// Every function with a body: (name, first line number, lines from `fn` to closing brace).
fn functions(code: &[Option<&str>]) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.iter().map(|l| l.unwrap_or("")).collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if code[n].is_none() {
            continue;
        }
        let Some(at) = find_fn(line) else { continue };
        let name: String = line[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if let Some(end) = block_end(&lines, n) {
            if lines[n..=end].iter().any(|l| l.contains('{')) {
                out.push((name, n + 1, end - n + 1));
            }
        }
    }
    out
}

/// Where `fn ` starts on a line declaring a function.
fn find_fn(line: &str) -> Option<usize> {
    let t = line.trim_start();
    let words = [
        "pub",
        "pub(crate)",
        "pub(super)",
        "async",
        "const",
        "unsafe",
        "extern",
    ];
    let mut rest = t;
    loop {
        if rest.starts_with("fn ") {
            return Some(line.len() - rest.len());
        }
        let word = words
            .iter()
            .find(|w| rest.strip_prefix(**w).is_some_and(|r| r.starts_with(' ')))?;
        rest = rest[word.len()..].trim_start();
    }
}

#[test]
fn the_scanner_sees_functions_through_braces_in_strings_and_skips_tests() {
    let text = "fn a() {\n    let s = \"}}{\";\n    let c = '}';\n    // }\n}\n\
                #[cfg(test)]\nmod tests {\n    fn b() {\n    }\n}\n\
                pub(crate) async fn c<'a>(x: &'a str) {\n    let r = r#\"}\"#;\n}\n";
    let source = Source::new(text);
    let code = source.without_tests();
    let found = functions(&code);
    assert_eq!(
        found,
        vec![("a".to_string(), 1, 5), ("c".to_string(), 11, 3)],
        "{:?}",
        source.lines
    );
    assert_eq!(code.iter().filter(|l| l.is_some()).count(), 8);
}
