//! End-to-end tests and the Coder-side peers that speak the real wire formats.

#![forbid(unsafe_code)]

pub mod coder;
pub mod farhost;
