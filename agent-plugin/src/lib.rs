//! The configuration layer of the `boundary` binary, as a library so fuzz targets and tests can
//! drive the exact parser a run uses, the built-in presets (`presets`), and the names the binary answers to (`alias`), shared
//! with the `agent-firewall` and `boundary-run` programs. Everything else of the binary lives in
//! `main.rs`'s modules.

#![forbid(unsafe_code)]

pub mod alias;
pub mod config;
pub mod presets;
