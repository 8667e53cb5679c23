//! DRPC frames: `[control][varint stream][varint message][varint len][data]`.
//!
//! Control byte: bit 7 is the control flag, bits 6..1 the kind, bit 0 "done" (last frame of
//! its packet).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::DrpcError;

/// What a frame's packet means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Data is the rpc name, e.g. `/coder.agent.v2.Agent/ReportBoundaryLogs`.
    Invoke,
    /// Data is a protobuf message.
    Message,
    /// Data is an 8-byte big-endian code, then the error text.
    Error,
    /// The stream is cancelled.
    Cancel,
    /// The stream is finished in both directions.
    Close,
    /// The sender will send nothing more on the stream.
    CloseSend,
    /// Metadata for the following Invoke.
    InvokeMetadata,
    /// A kind this implementation does not know (0 or 8..=63).
    Other(u8),
}

impl Kind {
    /// The 6-bit kind number.
    pub fn to_u8(self) -> u8 {
        match self {
            Kind::Invoke => 1,
            Kind::Message => 2,
            Kind::Error => 3,
            Kind::Cancel => 4,
            Kind::Close => 5,
            Kind::CloseSend => 6,
            Kind::InvokeMetadata => 7,
            Kind::Other(k) => k & 0x3f,
        }
    }

    /// The kind for a 6-bit number.
    pub fn from_u8(k: u8) -> Self {
        match k {
            1 => Kind::Invoke,
            2 => Kind::Message,
            3 => Kind::Error,
            4 => Kind::Cancel,
            5 => Kind::Close,
            6 => Kind::CloseSend,
            7 => Kind::InvokeMetadata,
            k => Kind::Other(k & 0x3f),
        }
    }
}

/// One DRPC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    /// Frames with this flag and an unknown kind are ignored by receivers.
    pub control: bool,
    /// Last frame of its packet.
    pub done: bool,
    pub stream_id: u64,
    pub message_id: u64,
    pub data: Bytes,
}

/// Appends the frame's bytes to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let mut control = frame.kind.to_u8() << 1;
    if frame.done {
        control |= 0x01;
    }
    if frame.control {
        control |= 0x80;
    }
    out.reserve(1 + 30 + frame.data.len());
    out.put_u8(control);
    put_varint(out, frame.stream_id);
    put_varint(out, frame.message_id);
    put_varint(out, frame.data.len() as u64);
    out.put_slice(&frame.data);
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads a varint at `buf[*pos..]`: `Ok(None)` when more bytes are needed.
fn get_varint(buf: &[u8], pos: &mut usize) -> Result<Option<u64>, DrpcError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos + i) else {
            return Ok(None);
        };
        let low = u64::from(b & 0x7f);
        if i == 9 && low > 1 {
            return Err(DrpcError::BadVarint);
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Ok(Some(value));
        }
    }
    Err(DrpcError::BadVarint)
}

/// Takes one complete frame off the front of `buf`: `Ok(None)` when it holds only part of
/// one. Data longer than `max_data` is an error as soon as the length is known.
pub fn decode(buf: &mut BytesMut, max_data: usize) -> Result<Option<Frame>, DrpcError> {
    let Some(&control) = buf.first() else {
        return Ok(None);
    };
    let mut pos = 1;
    let Some(stream_id) = get_varint(buf, &mut pos)? else {
        return Ok(None);
    };
    let Some(message_id) = get_varint(buf, &mut pos)? else {
        return Ok(None);
    };
    let Some(len) = get_varint(buf, &mut pos)? else {
        return Ok(None);
    };
    if len > max_data as u64 {
        return Err(DrpcError::TooLarge {
            size: len,
            limit: max_data,
        });
    }
    let len = len as usize;
    if buf.len() < pos + len {
        buf.reserve(pos + len - buf.len());
        return Ok(None);
    }
    buf.advance(pos);
    let data = buf.split_to(len).freeze();
    Ok(Some(Frame {
        kind: Kind::from_u8((control >> 1) & 0x3f),
        control: control & 0x80 != 0,
        done: control & 0x01 != 0,
        stream_id,
        message_id,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_byte_layout() {
        let mut out = BytesMut::new();
        encode(
            &Frame {
                kind: Kind::Message,
                control: false,
                done: true,
                stream_id: 1,
                message_id: 300,
                data: Bytes::from_static(b"hi"),
            },
            &mut out,
        );
        assert_eq!(&out[..], &[0b0000_0101, 1, 0xac, 0x02, 2, b'h', b'i']);
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let mut buf = BytesMut::from(
            &[
                4u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ][..],
        );
        assert!(matches!(decode(&mut buf, 100), Err(DrpcError::BadVarint)));
    }
}
