//! The YAML config file: the same keys as Coder's boundary, and ours. Unknown keys are errors,
//! because a misspelt `alowlist:` silently dropping the policy is worse than refusing to start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A scalar as YAML writers produce it: booleans and numbers may arrive as strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl Scalar {
    /// The text a flag or variable would carry, so one parser serves every source.
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// Every key the file may have.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub allowlist: Option<Vec<String>>,
    pub log_level: Option<Scalar>,
    pub log_dir: Option<PathBuf>,
    pub proxy_port: Option<Scalar>,
    pub pprof_enabled: Option<Scalar>,
    pub pprof_port: Option<Scalar>,
    pub jail_type: Option<Scalar>,
    pub use_real_dns: Option<Scalar>,
    pub no_user_namespace: Option<Scalar>,
    pub disable_audit_logs: Option<Scalar>,
    pub session_correlation_enabled: Option<Scalar>,
    pub session_id_inject_targets: Option<Vec<String>>,
    pub upstream_proxy: Option<Scalar>,
    pub resolve: Option<BTreeMap<String, String>>,
    pub upstream_ca_file: Option<PathBuf>,
    pub workspace_id: Option<Scalar>,
    pub workspace_name: Option<Scalar>,
    pub workspace_owner: Option<Scalar>,
    pub template_id: Option<Scalar>,
    pub template_version_id: Option<Scalar>,
    pub agent_name: Option<Scalar>,
    pub audit_log: Option<PathBuf>,
    pub audit_protocol: Option<Scalar>,
    pub audit_flush_interval: Option<Scalar>,
    pub audit_queue_size: Option<Scalar>,
    pub audit_shutdown_timeout: Option<Scalar>,
    pub landjail_deny_bind: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
}

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

/// Parses file text; the error names the offending key and where it is.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str::<Option<FileConfig>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            let msg = e.to_string();
            match msg.strip_prefix("unknown field ") {
                Some(rest) => format!(
                    "unknown key {}; remove it or fix its spelling",
                    rest.replace('`', "\"")
                ),
                None => msg,
            }
        })
}
