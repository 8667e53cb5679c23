//! Unary DRPC calls: a client and a server over any async byte stream, one active stream per
//! connection at a time (as Coder uses DRPC).
//!
//! Client: on a fresh stream id send Invoke (rpc name), Message (request), CloseSend; read one
//! Message (or Error); send Close. Server: on Invoke + Message call the handler, answer
//! Message + CloseSend, or Error (8-byte big-endian code, then text).

use std::fmt;
use std::future::Future;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::packet::{Packet, PacketAssembler};
use super::wire::{self, Kind};
use super::{DrpcError, DEFAULT_MAX_PACKET};

/// An error answer to a call: a numeric code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: u64,
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl RpcError {
    /// An error with code 0 (drpc's "no code").
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: 0,
            message: message.into(),
        }
    }

    /// Error packet data: 8-byte big-endian code, then the text.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(8 + self.message.len());
        b.put_u64(self.code);
        b.put_slice(self.message.as_bytes());
        b.freeze()
    }

    /// Parses error packet data; short data is a code-less error with the bytes as text.
    pub fn decode(data: &[u8]) -> Self {
        if data.len() < 8 {
            return Self::new(String::from_utf8_lossy(data));
        }
        let code = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        Self {
            code,
            message: String::from_utf8_lossy(&data[8..]).into_owned(),
        }
    }
}

/// Reads packets off a transport.
struct PacketReader {
    buf: BytesMut,
    asm: PacketAssembler,
    max_packet: usize,
}

impl PacketReader {
    fn new(max_packet: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(8192),
            asm: PacketAssembler::new(max_packet),
            max_packet,
        }
    }

    /// The next packet, or `None` at a clean end of stream.
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Packet>, DrpcError> {
        loop {
            while let Some(frame) = wire::decode(&mut self.buf, self.max_packet)? {
                if let Some(p) = self.asm.push(frame)? {
                    return Ok(Some(p));
                }
            }
            if io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() && !self.asm.in_progress() {
                    return Ok(None);
                }
                return Err(DrpcError::Truncated);
            }
        }
    }
}

fn packet(kind: Kind, stream_id: u64, message_id: u64, data: Bytes, out: &mut BytesMut) {
    Packet {
        kind,
        stream_id,
        message_id,
        data,
    }
    .encode(out);
}

/// A DRPC client connection making unary calls one after another.
pub struct Client<S> {
    io: S,
    reader: PacketReader,
    next_stream: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Wraps a connected transport.
    pub fn new(io: S) -> Self {
        Self {
            io,
            reader: PacketReader::new(DEFAULT_MAX_PACKET),
            next_stream: 1,
        }
    }

    /// Calls `rpc` with raw request bytes and returns the raw response bytes.
    pub async fn unary(&mut self, rpc: &str, request: Bytes) -> Result<Bytes, DrpcError> {
        let stream = self.next_stream;
        self.next_stream += 1;
        let mut out = BytesMut::with_capacity(request.len() + rpc.len() + 64);
        packet(
            Kind::Invoke,
            stream,
            1,
            Bytes::copy_from_slice(rpc.as_bytes()),
            &mut out,
        );
        packet(Kind::Message, stream, 2, request, &mut out);
        packet(Kind::CloseSend, stream, 3, Bytes::new(), &mut out);
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        loop {
            let Some(p) = self.reader.next(&mut self.io).await? else {
                return Err(DrpcError::Closed);
            };
            if p.stream_id < stream {
                // Trailing CloseSend/Close of an earlier call.
                continue;
            }
            if p.stream_id > stream {
                return Err(DrpcError::Protocol(format!(
                    "server answered on stream {} while stream {stream} is active",
                    p.stream_id
                )));
            }
            match p.kind {
                Kind::Message => {
                    let mut close = BytesMut::new();
                    packet(Kind::Close, stream, 4, Bytes::new(), &mut close);
                    self.io.write_all(&close).await?;
                    self.io.flush().await?;
                    return Ok(p.data);
                }
                Kind::Error => return Err(DrpcError::Remote(RpcError::decode(&p.data))),
                Kind::Close | Kind::Cancel | Kind::CloseSend => return Err(DrpcError::Closed),
                Kind::Invoke | Kind::InvokeMetadata | Kind::Other(_) => {
                    return Err(DrpcError::Protocol(format!(
                        "unexpected {:?} packet from the server",
                        p.kind
                    )))
                }
            }
        }
    }

    /// Calls `rpc` with a protobuf request and decodes the protobuf response.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &mut self,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, DrpcError> {
        let data = self
            .unary(rpc, Bytes::from(request.encode_to_vec()))
            .await?;
        Ok(Resp::decode(data)?)
    }

    /// The transport back, e.g. to shut it down.
    pub fn into_inner(self) -> S {
        self.io
    }
}

/// Serves unary calls on one connection until the client closes it. `handler` gets the rpc
/// name and the request bytes and returns the response bytes or an error to send back.
pub async fn serve<S, H, F>(mut io: S, mut handler: H) -> Result<(), DrpcError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(String, Bytes) -> F,
    F: Future<Output = Result<Bytes, RpcError>>,
{
    let mut reader = PacketReader::new(DEFAULT_MAX_PACKET);
    // (stream id, rpc name, answered) of the active stream.
    let mut active: Option<(u64, String, bool)> = None;
    let mut last_stream = 0u64;
    while let Some(p) = reader.next(&mut io).await? {
        match p.kind {
            Kind::InvokeMetadata => {}
            Kind::Invoke => {
                if p.stream_id <= last_stream {
                    return Err(DrpcError::Protocol(format!(
                        "invoke on old stream {} (last {last_stream})",
                        p.stream_id
                    )));
                }
                last_stream = p.stream_id;
                let rpc = String::from_utf8(p.data.to_vec())
                    .map_err(|_| DrpcError::Protocol("rpc name is not UTF-8".to_string()))?;
                active = Some((p.stream_id, rpc, false));
            }
            Kind::Message => {
                let Some((stream, rpc, answered)) = active.as_mut() else {
                    return Err(DrpcError::Protocol(format!(
                        "message on stream {} without invoke",
                        p.stream_id
                    )));
                };
                if *stream != p.stream_id || *answered {
                    return Err(DrpcError::Protocol(format!(
                        "unexpected message on stream {}",
                        p.stream_id
                    )));
                }
                *answered = true;
                let stream = *stream;
                let mut out = BytesMut::new();
                match handler(rpc.clone(), p.data).await {
                    Ok(resp) => {
                        packet(Kind::Message, stream, 1, resp, &mut out);
                        packet(Kind::CloseSend, stream, 2, Bytes::new(), &mut out);
                    }
                    Err(e) => packet(Kind::Error, stream, 1, e.encode(), &mut out),
                }
                io.write_all(&out).await?;
                io.flush().await?;
            }
            Kind::CloseSend => {}
            Kind::Close | Kind::Cancel => {
                if active.as_ref().is_some_and(|a| a.0 == p.stream_id) {
                    active = None;
                }
            }
            Kind::Error => {
                active = None;
            }
            Kind::Other(_) => {}
        }
    }
    Ok(())
}
