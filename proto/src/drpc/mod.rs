//! DRPC (storj.io/drpc), the RPC protocol between Coder's agent and coderd (docs/interop.md §9).
//!
//! Layers, each usable on its own:
//! - [`wire`]: one frame = control byte, three LEB128 varints (stream id, message id, data
//!   length), data. Encoder and incremental decoder that reject garbage with an error.
//! - [`packet`]: joins the frames of one (stream, message) id into a packet and splits packets
//!   into frames.
//! - [`rpc`]: a unary client and a unary server over any `AsyncRead + AsyncWrite`, one stream
//!   at a time as Coder uses it. Coder carries DRPC over yamux over a WebSocket; that transport
//!   is out of scope here, our peers speak plain DRPC over TCP or a Unix socket.

pub mod packet;
pub mod rpc;
pub mod wire;

pub use packet::{Packet, PacketAssembler};
pub use rpc::{serve, Client, RpcError};
pub use wire::{Frame, Kind};

/// Largest frame data and packet we accept by default: far above any boundary batch, small
/// enough that a hostile peer cannot make us allocate without bound.
pub const DEFAULT_MAX_PACKET: usize = 4 << 20;

/// Why a DRPC byte stream or call failed.
#[derive(Debug, thiserror::Error)]
pub enum DrpcError {
    /// A varint ran past 10 bytes or past 64 bits.
    #[error("invalid varint in DRPC frame header")]
    BadVarint,
    /// A frame of an unknown kind without the control flag.
    #[error("unknown DRPC frame kind {0}")]
    UnknownKind(u8),
    /// A frame or packet larger than we accept.
    #[error("DRPC frame or packet of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Announced or accumulated size.
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// Frame ids went backwards, or a packet changed kind midway.
    #[error("DRPC protocol violation: {0}")]
    Protocol(String),
    /// The stream ended inside a frame or packet.
    #[error("DRPC stream ended inside a frame or packet")]
    Truncated,
    /// The peer closed the connection before the call completed.
    #[error("DRPC peer closed the connection before the call completed")]
    Closed,
    /// The server answered the call with an error.
    #[error("DRPC call failed remotely: {0}")]
    Remote(RpcError),
    /// The message could not be decoded as the expected protobuf type.
    #[error("DRPC message is not valid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Reading or writing the transport failed.
    #[error("DRPC transport I/O failed: {0}")]
    Io(#[from] std::io::Error),
}
