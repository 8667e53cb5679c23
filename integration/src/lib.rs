//! End-to-end tests and the Coder-side peers that speak the real wire formats.

pub mod coder;
pub mod farhost;
