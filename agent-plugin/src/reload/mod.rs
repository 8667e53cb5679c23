//! Live reload of the policy while a jailed run goes on: `SIGHUP` to boundary, or a change to
//! the config file it loaded.
//!
//! A reload resolves the whole configuration again through the loader the run started with
//! (`config::resolve`, same flags, same environment), so the new policy is built exactly as
//! the first was, from every source. Only then is anything replaced:
//! - a file that does not load (bad YAML, an unknown key, a rule that does not parse) changes
//!   nothing: the error (with the file and its line) is logged and the running generation stays;
//!   a later fix loads;
//! - new allow rules become the next policy generation, swapped in atomically
//!   (`boundary_proxy::rules::LivePolicy`): each request is decided wholly under one generation,
//!   and its audit record names it;
//! - a changed setting the run cannot apply while it runs (every row of the settings table not
//!   marked `live`: the jail type, the proxy port, ...) is logged as needing a restart, and its
//!   running value stays.
//!
//! In landjail the jailed command runs as boundary's own user and nothing can make one file
//! read-only to it, so it could rewrite the config file and have boundary load a wider policy.
//! There a reload is refused, loudly, unless the jail cannot write the file: the file and every
//! directory above it must be neither owned by nor writable for the jail's user (started by
//! root: outside the paths the jail may write). nsjail binds the config file read-only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod watch;

use boundary::config::{self, cli::Flags, settings::SETTINGS, Config, JailType};
use boundary_proxy::rules::LivePolicy;

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new generation with these rule counts added and removed.
    Loaded {
        generation: u64,
        added: usize,
        removed: usize,
    },
    /// The allow rules are the same; the generation stays.
    Unchanged { generation: u64 },
    /// The configuration did not load; the generation stays.
    Failed { generation: u64, error: String },
    /// The jail could have written the file; nothing was read.
    Refused { generation: u64, reason: String },
}

/// Everything a reload needs, kept from the start of the run.
pub struct Reloader {
    flags: Flags,
    env: fn(&str) -> Option<String>,
    /// The configuration the run started with: settings that need a restart keep these values.
    running: Config,
    /// The allow rules of the current generation.
    allow: Vec<String>,
    live: Arc<LivePolicy>,
    /// What the jail may write (see [`JailWrites`]).
    jail_writes: Option<JailWrites>,
    /// nsjail: a `--config` file outside boundary's protected directories, and its identity
    /// at start. nsjail binds that file read-only, and the bind stays with that file: an
    /// editor that saves by renaming puts a new file at the path, writable to the jail.
    bound_file: Option<(PathBuf, (u64, u64))>,
}

/// What a landjail target may write: the paths it may change (started by root), or everything
/// its user may (None).
#[derive(Debug, Clone)]
pub struct JailWrites(pub Option<Vec<PathBuf>>);

impl Reloader {
    /// A reloader for a run that started with `running`, deciding with `live`.
    pub fn new(
        flags: Flags,
        env: fn(&str) -> Option<String>,
        running: Config,
        live: Arc<LivePolicy>,
        jail_writes: Option<JailWrites>,
    ) -> Self {
        let bound_file = match (running.jail_type, &running.config_file) {
            (JailType::Nsjail, Some(f)) if !in_protected_dir(f, &running) => {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(f)
                    .ok()
                    .map(|m| (f.clone(), (m.dev(), m.ino())))
            }
            _ => None,
        };
        Self {
            flags,
            env,
            allow: running.allow.clone(),
            running,
            live,
            jail_writes,
            bound_file,
        }
    }

    /// The config file the run loaded, if any (the one a file watch follows).
    pub fn config_file(&self) -> Option<&Path> {
        self.running.config_file.as_deref()
    }

    /// Loads the configuration again and applies what may change; logs what happened.
    pub fn reload(&mut self, trigger: &str) -> Outcome {
        let generation = self.live.snapshot().generation;
        let file = self
            .running
            .config_file
            .as_ref()
            .map_or("(no config file)".to_string(), |p| p.display().to_string());
        if let Some(reason) = self.refusal() {
            tracing::error!(
                "{trigger}: live reload refused: {reason}; the policy stays generation {generation}"
            );
            return Outcome::Refused { generation, reason };
        }
        let new = match config::resolve(&self.flags, &self.env) {
            Ok(c) => c,
            Err(e) => {
                let error = e.to_string();
                tracing::error!(
                    "{trigger}: cannot reload the policy from {file}: {error}; the policy stays \
                     generation {generation} (fix the file; the next change or SIGHUP loads it)"
                );
                return Outcome::Failed { generation, error };
            }
        };
        for (key, was, now) in restart_needed(&self.running, &new) {
            tracing::warn!(
                "{trigger}: {key} changed in {file} ({was} -> {now}) but needs a restart to take \
                 effect; boundary keeps running with {was}"
            );
        }
        if new.allow == self.allow {
            tracing::info!(
                "{trigger}: allow rules unchanged; the policy stays generation {generation}"
            );
            return Outcome::Unchanged { generation };
        }
        let added = new.allow.iter().filter(|r| !self.allow.contains(r)).count();
        let removed = self.allow.iter().filter(|r| !new.allow.contains(r)).count();
        let generation = self.live.replace(new.policy.clone());
        self.allow = new.allow;
        tracing::info!(
            "policy generation {generation} loaded from {file} (+{added} rules, -{removed} rules)"
        );
        Outcome::Loaded {
            generation,
            added,
            removed,
        }
    }

    /// Why a reload must not read the file: the jail could have written it.
    fn refusal(&self) -> Option<String> {
        if self.running.jail_type == JailType::Nsjail {
            // The file bound read-only at start is safe to read; a file that replaced it (an
            // editor saving by rename) is not, if the jail can write it.
            let (path, id) = self.bound_file.as_ref()?;
            use std::os::unix::fs::MetadataExt;
            let now = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
            if now == Some(*id) {
                return None;
            }
            let JailWrites(roots) = self.jail_writes.as_ref()?;
            let writable = jail_could_write(path, roots.as_deref())?;
            return Some(format!(
                "{} was replaced by another file while the jail ran (editors that save by \
                 renaming do this), and the jailed command can change the new one ({} is \
                 writable to it): nsjail keeps only the file present at start read-only, so the \
                 jail could have widened its own policy; check the file's content (the jail may \
                 have changed it since), then restart boundary to load it, or keep the config \
                 in {} (its directory is read-only to the jail, so edits there reload)",
                path.display(),
                writable.display(),
                self.running.config_dir.display()
            ));
        }
        let JailWrites(roots) = self.jail_writes.as_ref()?;
        // The file a resolve would read now: the one given, or the default one if it exists.
        let path = self.running.config_file.clone().or_else(|| {
            (self.env)("HOME")
                .map(|h| config::default_config_file(&h))
                .filter(|p| p.exists())
        })?;
        let writable = jail_could_write(&path, roots.as_deref())?;
        Some(format!(
            "the jailed command (landjail) can change {} ({} is writable to it), so it could \
             widen its own policy; make the file and its directories read-only to the jail's \
             user (for example owned by root, mode 0644), or use --jail-type nsjail, and restart \
             boundary to apply the file",
            path.display(),
            writable.display()
        ))
    }
}

/// Whether `file` sits directly in a directory nsjail binds read-only whole
/// ([`Config::config_dirs`]), where a file saved by rename is protected too.
fn in_protected_dir(file: &Path, running: &Config) -> bool {
    let dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|f| f.parent().map(Path::to_path_buf));
    running
        .config_dirs()
        .iter()
        .any(|d| std::fs::canonicalize(d).ok() == dir)
}

/// The first of `path` (as given and resolved) or a directory above it through which a
/// landjail target could change the file: with `roots` (started by root) anything beneath one
/// of them; without, the file if its user owns or may write it, a directory it owns (it could
/// make it writable), or a writable directory in which it could replace the next component (a
/// sticky directory such as `/tmp` protects entries of other users).
pub fn jail_could_write(path: &Path, roots: Option<&[PathBuf]>) -> Option<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut candidates = vec![path.to_path_buf()];
    candidates.extend(std::fs::canonicalize(path).ok());
    let uid = nix::unistd::geteuid().as_raw();
    let owned = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == uid);
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    for p in &candidates {
        if let Some(roots) = roots {
            if roots.iter().any(|r| p.starts_with(r)) {
                return Some(p.clone());
            }
            continue;
        }
        if owned(p) || writable(p) {
            return Some(p.clone());
        }
        let mut child = p.as_path();
        while let Some(dir) = child.parent().filter(|d| !d.as_os_str().is_empty()) {
            let sticky = std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o1000 != 0);
            if owned(dir) || (writable(dir) && (!sticky || owned(child))) {
                return Some(dir.to_path_buf());
            }
            child = dir;
        }
    }
    None
}

/// Settings that changed but cannot while the run goes on: (key, running value, new value),
/// from every row of the settings table not marked `live`.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<(&'static str, String, String)> {
    let shown = |c: &Config, key: &str| {
        let v: Vec<&str> = c
            .sources
            .iter()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, v, _)| v.as_str())
            .collect();
        if v.is_empty() {
            "(unset)".to_string()
        } else {
            v.join(", ")
        }
    };
    SETTINGS
        .iter()
        .filter(|s| !s.live)
        .filter_map(|s| {
            let (was, now) = (shown(running, s.key), shown(new, s.key));
            (was != now).then_some((s.key, was, now))
        })
        .collect()
}

/// What the jail may write, for the reload guard: landjail refuses a file the jail could
/// change; nsjail, whose config file is bound read-only, one that replaced it and that the
/// jail could change.
pub fn jail_writes(spec: &boundary_jail::JailSpec) -> anyhow::Result<Option<JailWrites>> {
    Ok(Some(JailWrites(boundary_jail::target_writable_roots(
        spec,
    )?)))
}

#[cfg(test)]
mod tests;
