//! Packets: the data of all frames with one (stream id, message id), up to the frame with
//! "done" set. Ids never go backwards on a connection; a new id abandons a partial packet.

use bytes::{Bytes, BytesMut};

use super::wire::{self, Frame, Kind};
use super::DrpcError;

/// Frames carry at most this much data when we split a packet.
pub const SPLIT_SIZE: usize = 64 * 1024;

/// One complete DRPC packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: Kind,
    pub stream_id: u64,
    pub message_id: u64,
    pub data: Bytes,
}

impl Packet {
    /// Appends the packet as frames of at most [`SPLIT_SIZE`] data bytes; an empty packet is
    /// one empty frame.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut rest = self.data.clone();
        loop {
            let chunk = rest.split_to(rest.len().min(SPLIT_SIZE));
            let done = rest.is_empty();
            wire::encode(
                &Frame {
                    kind: self.kind,
                    control: false,
                    done,
                    stream_id: self.stream_id,
                    message_id: self.message_id,
                    data: chunk,
                },
                out,
            );
            if done {
                break;
            }
        }
    }
}

/// Joins frames into packets for one direction of a connection.
#[derive(Debug)]
pub struct PacketAssembler {
    id: (u64, u64),
    kind: Option<Kind>,
    buf: BytesMut,
    max_packet: usize,
}

impl PacketAssembler {
    /// An assembler that refuses packets larger than `max_packet` bytes.
    pub fn new(max_packet: usize) -> Self {
        Self {
            id: (0, 0),
            kind: None,
            buf: BytesMut::new(),
            max_packet,
        }
    }

    /// True when a packet is partly assembled (so end of stream now would truncate it).
    pub fn in_progress(&self) -> bool {
        self.kind.is_some()
    }

    /// Adds a frame; returns the packet it completes, if any.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Packet>, DrpcError> {
        if let Kind::Other(k) = frame.kind {
            if frame.control {
                return Ok(None);
            }
            return Err(DrpcError::UnknownKind(k));
        }
        let id = (frame.stream_id, frame.message_id);
        if id < self.id {
            return Err(DrpcError::Protocol(format!(
                "frame id {id:?} is older than the current {:?}",
                self.id
            )));
        }
        if id > self.id {
            self.id = id;
            self.kind = None;
            self.buf.clear();
        }
        match self.kind {
            Some(k) if k != frame.kind => {
                return Err(DrpcError::Protocol(format!(
                    "packet {id:?} changed kind from {k:?} to {:?}",
                    frame.kind
                )))
            }
            _ => self.kind = Some(frame.kind),
        }
        let size = self.buf.len() + frame.data.len();
        if size > self.max_packet {
            return Err(DrpcError::TooLarge {
                size: size as u64,
                limit: self.max_packet,
            });
        }
        self.buf.extend_from_slice(&frame.data);
        if !frame.done {
            return Ok(None);
        }
        let kind = self.kind.take().expect("kind set above");
        Ok(Some(Packet {
            kind,
            stream_id: id.0,
            message_id: id.1,
            data: self.buf.split().freeze(),
        }))
    }
}

/// Decodes a complete byte string into packets; for tests, tools and fuzzing.
pub fn decode_all(bytes: &[u8], max_packet: usize) -> Result<Vec<Packet>, DrpcError> {
    let mut buf = BytesMut::from(bytes);
    let mut asm = PacketAssembler::new(max_packet);
    let mut out = Vec::new();
    while let Some(frame) = wire::decode(&mut buf, max_packet)? {
        if let Some(p) = asm.push(frame)? {
            out.push(p);
        }
    }
    if !buf.is_empty() || asm.in_progress() {
        return Err(DrpcError::Truncated);
    }
    Ok(out)
}
