//! The agent audit socket's framing (docs/interop.md §5): a 4-byte big-endian header
//! `(tag << 24) | payload_length`, then `payload_length` bytes of protobuf.
//!
//! The decoder is incremental: feed it whatever bytes arrived and it returns complete frames,
//! `None` when more bytes are needed, or an error for an unknown tag or an oversized length as
//! soon as the header shows it (the agent closes the connection on those). It never panics on
//! any input; the fuzz target `frame` checks that.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::pb::{BoundaryMessage, ReportBoundaryLogsRequest};

/// Largest payload the agent accepts, inclusive.
pub const MAX_PAYLOAD: usize = 32768;
/// Size of the frame header.
pub const HEADER_LEN: usize = 4;

/// What the payload of a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// A bare `coder.agent.v2.ReportBoundaryLogsRequest`; every agent with the socket accepts it.
    V1 = 1,
    /// A `coder.boundarylogproxy.codec.v1.BoundaryMessage`; newer agents only.
    V2 = 2,
}

impl Tag {
    /// The tag for a header byte, `None` for tags the agent does not know.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Tag::V1),
            2 => Some(Tag::V2),
            _ => None,
        }
    }
}

/// Why bytes are not a valid frame stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header names a tag other than 1 or 2.
    #[error("unknown frame tag {0} (expected 1 or 2)")]
    UnknownTag(u8),
    /// The header (or a payload to encode) is larger than the agent accepts.
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    Oversized(usize),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes of an incomplete frame)")]
    Truncated(usize),
    /// The payload is not the protobuf message its tag announces.
    #[error("frame payload is not a valid {message}: {reason}")]
    BadPayload {
        /// The message type the tag announced.
        message: &'static str,
        /// The protobuf decoder's complaint.
        reason: String,
    },
}

/// One complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: Tag,
    pub payload: Bytes,
}

/// What a frame carries, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Tag 1.
    V1(ReportBoundaryLogsRequest),
    /// Tag 2.
    V2(BoundaryMessage),
}

impl Frame {
    /// Decodes the payload as the message its tag announces.
    pub fn decode_payload(&self) -> Result<Payload, FrameError> {
        match self.tag {
            Tag::V1 => ReportBoundaryLogsRequest::decode(self.payload.clone())
                .map(Payload::V1)
                .map_err(|e| FrameError::BadPayload {
                    message: "coder.agent.v2.ReportBoundaryLogsRequest",
                    reason: e.to_string(),
                }),
            Tag::V2 => BoundaryMessage::decode(self.payload.clone())
                .map(Payload::V2)
                .map_err(|e| FrameError::BadPayload {
                    message: "coder.boundarylogproxy.codec.v1.BoundaryMessage",
                    reason: e.to_string(),
                }),
        }
    }
}

/// Appends header and payload to `out`; refuses payloads over [`MAX_PAYLOAD`] so we never send
/// a frame the agent would close the connection on.
pub fn encode(tag: Tag, payload: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::Oversized(payload.len()));
    }
    out.reserve(HEADER_LEN + payload.len());
    out.put_u32(((tag as u32) << 24) | payload.len() as u32);
    out.put_slice(payload);
    Ok(())
}

/// Encodes a message as a complete frame (header included).
pub fn encode_message(tag: Tag, msg: &impl Message) -> Result<Bytes, FrameError> {
    let len = msg.encoded_len();
    if len > MAX_PAYLOAD {
        return Err(FrameError::Oversized(len));
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    out.put_u32(((tag as u32) << 24) | len as u32);
    msg.encode(&mut out)
        .expect("BytesMut grows, encoding cannot run out of space");
    Ok(out.freeze())
}

/// Size of a frame's payload carrying an encoded `ReportBoundaryLogsRequest` of `req_len`
/// bytes: the request itself for tag 1, wrapped as `BoundaryMessage.logs` (field 1) for tag 2.
/// Tag 2 is the larger, so a batch sized for it also fits when resent as tag 1.
pub fn logs_payload_len(tag: Tag, req_len: usize) -> usize {
    match tag {
        Tag::V1 => req_len,
        Tag::V2 => 1 + prost::encoding::encoded_len_varint(req_len as u64) + req_len,
    }
}

/// Frames an already encoded `ReportBoundaryLogsRequest` without decoding it again: as is for
/// tag 1, as the `logs` field of a `BoundaryMessage` for tag 2.
pub fn encode_logs(tag: Tag, req: &[u8]) -> Result<Bytes, FrameError> {
    let len = logs_payload_len(tag, req.len());
    if len > MAX_PAYLOAD {
        return Err(FrameError::Oversized(len));
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    out.put_u32(((tag as u32) << 24) | len as u32);
    if tag == Tag::V2 {
        out.put_u8(0x0a);
        prost::encoding::encode_varint(req.len() as u64, &mut out);
    }
    out.put_slice(req);
    Ok(out.freeze())
}

/// Parses a header: the tag and the payload length, or why it is unacceptable.
pub fn parse_header(header: [u8; HEADER_LEN]) -> Result<(Tag, usize), FrameError> {
    let tag = Tag::from_u8(header[0]).ok_or(FrameError::UnknownTag(header[0]))?;
    let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::Oversized(len));
    }
    Ok((tag, len))
}

/// Incremental decoder over a growing buffer.
#[derive(Debug, Default)]
pub struct Decoder {
    _private: (),
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one complete frame off the front of `buf`, or returns `Ok(None)` when `buf` holds
    /// only part of one. Errors are final: the stream is not a valid frame stream any more.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let (tag, len) = parse_header([buf[0], buf[1], buf[2], buf[3]])?;
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        Ok(Some(Frame { tag, payload }))
    }

    /// Call at end of stream: an error if a partial frame was left behind.
    pub fn finish(&mut self, buf: &BytesMut) -> Result<(), FrameError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(buf.len()))
        }
    }
}

/// Decodes a complete byte string into frames; for tests and tools.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let mut dec = Decoder::new();
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf)? {
        frames.push(f);
    }
    dec.finish(&buf)?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_tag_then_24_bit_big_endian_length() {
        let mut out = BytesMut::new();
        encode(Tag::V2, &[7u8; 0x0102], &mut out).unwrap();
        assert_eq!(&out[..4], &[2, 0x00, 0x01, 0x02]);
        assert_eq!(out.len(), 4 + 0x0102);
    }

    #[test]
    fn framed_logs_decode_to_the_same_request_in_both_tags() {
        let req = ReportBoundaryLogsRequest {
            session_id: "s".repeat(300),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        for tag in [Tag::V1, Tag::V2] {
            let f = encode_logs(tag, &bytes).unwrap();
            assert_eq!(f.len(), HEADER_LEN + logs_payload_len(tag, bytes.len()));
            let frame = decode_all(&f).unwrap().remove(0);
            let got = match frame.decode_payload().unwrap() {
                Payload::V1(r) => r,
                Payload::V2(m) => match m.msg {
                    Some(crate::pb::boundary_message::Msg::Logs(r)) => r,
                    other => panic!("{other:?}"),
                },
            };
            assert_eq!(got, req);
        }
        let big = vec![0u8; MAX_PAYLOAD - 2];
        assert!(encode_logs(Tag::V1, &big).is_ok());
        assert!(encode_logs(Tag::V2, &big).is_err());
    }

    #[test]
    fn limit_is_inclusive() {
        let mut out = BytesMut::new();
        encode(Tag::V1, &vec![0u8; MAX_PAYLOAD], &mut out).unwrap();
        assert_eq!(decode_all(&out).unwrap()[0].payload.len(), MAX_PAYLOAD);
        assert_eq!(
            encode(Tag::V1, &vec![0u8; MAX_PAYLOAD + 1], &mut out),
            Err(FrameError::Oversized(MAX_PAYLOAD + 1))
        );
    }
}
