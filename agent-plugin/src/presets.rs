//! Presets: named, versioned allowlists for common clients (agents, package registries, git
//! hosts), kept as YAML files in `agent-plugin/presets/` and built into the binary.
//!
//! A run names them with `--preset NAME` (or `NAME@VERSION` to insist on a version),
//! `BOUNDARY_PRESETS` or the file's `presets:`; their rules join the policy after the user's
//! own rules, each rule remembering its preset (`preset npm@1`) so that `boundary config` and
//! `boundary check` can say where it came from. `boundary presets` lists them.
//!
//! Each file has a `name` (the file's name), a `version` (raised whenever its rules change),
//! a one-line `description` and `rules` in the config file's allowlist syntax, each rule under
//! a comment saying why the client needs it. The agent presets are the lists the agents suite
//! proves sufficient; the registry presets are checked by running the real client in the jail
//! (`integration/tests/presets.rs`).

use std::fmt;
use std::sync::OnceLock;

use boundary_proxy::rules::{Policy, Rule};

/// The preset files, by name, in `boundary presets` order.
const FILES: &[(&str, &str)] = &[
    ("claude-code", include_str!("../presets/claude-code.yaml")),
    ("codex", include_str!("../presets/codex.yaml")),
    ("github", include_str!("../presets/github.yaml")),
    ("npm", include_str!("../presets/npm.yaml")),
    ("pypi", include_str!("../presets/pypi.yaml")),
    ("crates", include_str!("../presets/crates.yaml")),
    ("go", include_str!("../presets/go.yaml")),
    ("docker-hub", include_str!("../presets/docker-hub.yaml")),
    ("ubuntu-apt", include_str!("../presets/ubuntu-apt.yaml")),
    ("debian-apt", include_str!("../presets/debian-apt.yaml")),
];

/// One built-in preset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    /// Raised whenever the rules change, so `NAME@VERSION` pins what a policy was written for.
    pub version: u32,
    /// One line for `boundary presets`.
    pub description: String,
    /// Allow rules, in the config file's syntax.
    pub rules: Vec<String>,
}

impl Preset {
    /// `name@version`, as `boundary config` and `boundary check` name it.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// `preset name@version`: the origin its rules carry.
    pub fn origin(&self) -> String {
        format!("preset {}", self.label())
    }

    /// The preset's rules compiled, each with the preset as its origin.
    pub fn policy(&self) -> Policy {
        Policy::from_rules(
            self.rules
                .iter()
                .map(|r| {
                    Rule::parse(r)
                        .expect("built-in preset rules parse (unit-tested)")
                        .with_origin(self.origin())
                })
                .collect(),
        )
    }
}

impl fmt::Display for Preset {
    /// `name@version  description`, then one rule a line, indented.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}  {}", self.label(), self.description)?;
        for r in &self.rules {
            writeln!(f, "    {r}")?;
        }
        Ok(())
    }
}

/// Every built-in preset, parsed once.
pub fn all() -> &'static [Preset] {
    static PARSED: OnceLock<Vec<Preset>> = OnceLock::new();
    PARSED.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, text)| {
                serde_yaml::from_str(text)
                    .unwrap_or_else(|e| panic!("built-in preset {name} (unit-tested): {e}"))
            })
            .collect()
    })
}

/// The preset a user named: `NAME` or `NAME@VERSION` (the version must be the built-in one).
/// The error lists the known names, or says which version this boundary has.
pub fn find(spec: &str) -> Result<&'static Preset, String> {
    let spec = spec.trim();
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let Some(preset) = all().iter().find(|p| p.name == name) else {
        let known: Vec<&str> = all().iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "no preset is named {name:?}; the presets are {} (`boundary presets` shows their \
             rules)",
            known.join(", ")
        ));
    };
    if let Some(v) = version {
        if v.parse::<u32>().ok() != Some(preset.version) {
            return Err(format!(
                "{spec:?}: this boundary has {} (its rules: `boundary presets {name}`); write \
                 {name:?} for the built-in version, or {:?} to pin it",
                preset.label(),
                preset.label()
            ));
        }
    }
    Ok(preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_preset_parses_and_explains_each_rule() {
        let names: Vec<&str> = all().iter().map(|p| p.name.as_str()).collect();
        for want in [
            "claude-code",
            "codex",
            "github",
            "npm",
            "pypi",
            "crates",
            "go",
            "docker-hub",
            "ubuntu-apt",
            "debian-apt",
        ] {
            assert!(names.contains(&want), "no preset {want}");
        }
        for ((file, text), p) in FILES.iter().zip(all()) {
            assert_eq!(&p.name, file, "a preset's name is its file's name");
            assert!(p.version >= 1, "{file}: versions start at 1");
            assert!(
                !p.description.is_empty() && !p.description.contains('\n'),
                "{file}: the description is one line"
            );
            assert!(!p.rules.is_empty(), "{file}: a preset has rules");
            for r in &p.rules {
                Rule::parse(r).unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            // Every rule line has a comment above it (or is in a run of rules under one).
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            for (i, line) in lines.iter().enumerate() {
                if line.starts_with("- ") {
                    let above = lines[..i]
                        .iter()
                        .rev()
                        .find(|l| !l.starts_with("- "))
                        .unwrap();
                    assert!(above.starts_with('#'), "{file}: no comment above {line:?}");
                }
            }
            let _ = p.policy();
        }
    }

    #[test]
    fn names_and_versions_are_checked() {
        assert_eq!(find("npm").unwrap().name, "npm");
        assert_eq!(find(" npm@1 ").unwrap().name, "npm");
        let e = find("npn").unwrap_err();
        assert!(e.contains("\"npn\"") && e.contains("npm, pypi"), "{e}");
        let e = find("npm@9").unwrap_err();
        assert!(e.contains("this boundary has npm@1"), "{e}");
        assert!(find("npm@x").is_err());
    }

    #[test]
    fn preset_rules_carry_their_origin() {
        let p = find("pypi").unwrap();
        let policy = p.policy();
        let rule = policy
            .first_match("GET", "files.pythonhosted.org", "/packages/x.whl")
            .unwrap();
        assert_eq!(rule.origin.as_deref(), Some("preset pypi@1"));
        assert!(policy.first_match("GET", "example.com", "/").is_none());
    }
}
