//! Wire formats shared by boundary and the Coder side: the protobuf messages Coder's agent
//! and coderd exchange, the length-prefixed frame codec of the agent's audit socket, and DRPC.
//!
//! This crate knows nothing of policy, sockets or jails; it turns bytes into messages and back.
//!
//! - [`pb`]: generated prost types (`coder.agent.v2`, `coder.boundarylogproxy.codec.v1`),
//!   compiled at build time with protox so no system `protoc` is needed.
//! - [`frame`]: the agent socket's `[tag][len:24]` framing (docs/interop.md §5).
//! - [`drpc`]: storj DRPC framing, packet assembly and a unary client and server over any
//!   async byte stream (docs/interop.md §9).

#![forbid(unsafe_code)]

pub mod drpc;
pub mod frame;

/// Generated protobuf types. Field numbers below 1000 are Coder's; 1000 and up are ours.
pub mod pb {
    /// Package `coder.*`.
    pub mod coder {
        /// Package `coder.agent.*`.
        pub mod agent {
            /// Package `coder.agent.v2`: the records and the agent RPC request.
            #[allow(missing_docs, clippy::all)]
            pub mod v2 {
                include!(concat!(env!("OUT_DIR"), "/coder.agent.v2.rs"));
            }
        }
        /// Package `coder.boundarylogproxy.*`.
        pub mod boundarylogproxy {
            /// Package `coder.boundarylogproxy.codec.*`.
            pub mod codec {
                /// Package `coder.boundarylogproxy.codec.v1`: the tag-2 socket payload.
                #[allow(missing_docs, clippy::all)]
                pub mod v1 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/coder.boundarylogproxy.codec.v1.rs"
                    ));
                }
            }
        }
    }

    pub use coder::agent::v2::{
        boundary_log, BoundaryLog, ReportBoundaryLogsRequest, ReportBoundaryLogsResponse,
    };
    pub use coder::boundarylogproxy::codec::v1::{
        boundary_message, BoundaryMessage, BoundaryStatus,
    };
}

/// The DRPC method name of the one agent RPC boundary's records travel in.
pub const REPORT_BOUNDARY_LOGS_RPC: &str = "/coder.agent.v2.Agent/ReportBoundaryLogs";
