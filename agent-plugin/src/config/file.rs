//! The YAML config file: the same keys as Coder's boundary, and ours, taken from the settings
//! table. Unknown keys are errors, because a misspelt `alowlist:` silently dropping the policy
//! is worse than refusing to start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::settings::{Shape, SETTINGS};

/// The file's values by setting key, as text a flag or variable would carry, so one parser
/// serves every source. Lists (and maps, as `NAME=VALUE`) keep their order.
pub type FileConfig = BTreeMap<&'static str, Vec<String>>;

/// Why the file could not be used; each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("config file {path}: cannot read it: {source}; check the path given to --config or BOUNDARY_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} does not exist; create it or drop --config/BOUNDARY_CONFIG to run without one")]
    Missing { path: PathBuf },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads and validates one file. An empty file is an empty config.
pub fn load(path: &Path) -> Result<FileConfig, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FileError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            FileError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    parse(&text).map_err(|message| FileError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses file text; the error names the offending key and, when it can, its line.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let mut out = FileConfig::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let map = match doc {
        Value::Null => return Ok(out),
        Value::Mapping(m) => m,
        _ => {
            return Err(
                "the file must be a mapping of keys to values, e.g. proxy_port: 8080".into(),
            )
        }
    };
    for (k, v) in map {
        let key = scalar(&k).ok_or("every key must be a plain name, e.g. proxy_port")?;
        let Some(row) = SETTINGS.iter().find(|s| s.yaml == Some(key.as_str())) else {
            return Err(unknown_key(text, &key));
        };
        let values = shaped(&key, &v, row.shape).map_err(|e| format!("{e}{}", at(text, &key)))?;
        if !matches!(v, Value::Null) {
            out.insert(row.key, values);
        }
    }
    Ok(out)
}

/// One key's value as the texts its shape takes (none for an empty value), or what to write
/// instead.
fn shaped(key: &str, v: &Value, shape: Shape) -> Result<Vec<String>, String> {
    Ok(match (v, shape) {
        (Value::Null, _) => Vec::new(),
        (Value::Mapping(m), Shape::Map) => m
            .iter()
            .map(|(n, a)| Some(format!("{}={}", scalar(n)?, scalar(a)?)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("key {key:?}: write a map of NAME: VALUE"))?,
        (Value::Sequence(items), Shape::List { .. }) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("key {key:?}: write a list of strings"))?,
        (v, Shape::One | Shape::Switch) => {
            vec![scalar(v).ok_or_else(|| format!("key {key:?}: write a single value"))?]
        }
        (_, Shape::Map) => return Err(format!("key {key:?}: write a map of NAME: VALUE")),
        (_, Shape::List { .. }) => return Err(format!("key {key:?}: write a list")),
    })
}

/// A YAML scalar as the text a flag would carry (booleans and numbers may arrive unquoted).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// ` at line N`: the line where `key` starts a line (empty if none does).
fn at(text: &str, key: &str) -> String {
    let line = text.lines().position(|l| {
        let l = l.trim_start_matches(['"', '\'']);
        l.strip_prefix(key).is_some_and(|r| {
            r.trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
        })
    });
    line.map(|n| format!(" at line {}", n + 1))
        .unwrap_or_default()
}

/// `unknown key "x" at line N`, with the keys the file may have.
fn unknown_key(text: &str, key: &str) -> String {
    let known: Vec<&str> = SETTINGS.iter().filter_map(|s| s.yaml).collect();
    format!(
        "unknown key {key:?}{}; remove it or fix its spelling (known keys: {})",
        at(text, key),
        known.join(", ")
    )
}

/// The first line (from 1) of the file at `path` that holds `value`, for errors about a value
/// the file gave (the file is read again: values carry no position).
pub fn line_of(path: &Path, value: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    text.lines().position(|l| l.contains(value)).map(|n| n + 1)
}
