//! The Coder-side peers of boundary's audit stream, as libraries behind the two binaries
//! `boundary-agent-log-proxy` and `boundary-coderd-sink`, plus the logfmt parser tests use
//! to read coderd-style lines.
//!
//! Transport note: real Coder carries DRPC over yamux over a WebSocket
//! (`/api/v2/workspaceagents/me/rpc`). That transport is out of scope; our agent log proxy
//! and sink speak plain DRPC over TCP, byte-for-byte the same DRPC frames.

pub mod coderd;
pub mod logfmt;
pub mod logproxy;
pub mod peers;
