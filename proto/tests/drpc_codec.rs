//! DRPC: frame and packet round trips, garbage handling, and unary calls between our client
//! and server over an in-memory duplex stream.

use boundary_proto::drpc::packet::{self, SPLIT_SIZE};
use boundary_proto::drpc::{self, wire, DrpcError, Frame, Kind, Packet, PacketAssembler, RpcError};
use boundary_proto::pb::{ReportBoundaryLogsRequest, ReportBoundaryLogsResponse};
use boundary_proto::REPORT_BOUNDARY_LOGS_RPC;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    (1u8..=7).prop_map(Kind::from_u8)
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        kind(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..500),
    )
        .prop_map(|(kind, control, done, stream_id, message_id, data)| Frame {
            kind,
            control,
            done,
            stream_id,
            message_id,
            data: Bytes::from(data),
        })
}

proptest! {
    #[test]
    fn frames_round_trip_under_any_chunking(
        frames in prop::collection::vec(frame(), 0..10),
        chunk in 1usize..700,
    ) {
        let mut bytes = BytesMut::new();
        for f in &frames {
            wire::encode(f, &mut bytes);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(f) = wire::decode(&mut buf, 1 << 20).unwrap() {
                got.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn packets_split_and_reassemble(
        sizes in prop::collection::vec(0usize..(3 * SPLIT_SIZE), 1..4),
        k in kind(),
    ) {
        let mut bytes = BytesMut::new();
        let mut want = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let p = Packet {
                kind: k,
                stream_id: 1,
                message_id: i as u64 + 1,
                data: Bytes::from((0..*n).map(|b| b as u8).collect::<Vec<_>>()),
            };
            p.encode(&mut bytes);
            want.push(p);
        }
        prop_assert_eq!(packet::decode_all(&bytes, 1 << 20).unwrap(), want);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4000)) {
        let _ = packet::decode_all(&bytes, 1 << 16);
    }

    #[test]
    fn truncated_packets_are_errors(n in 1usize..2000, cut in any::<prop::sample::Index>()) {
        let mut bytes = BytesMut::new();
        Packet { kind: Kind::Message, stream_id: 3, message_id: 9, data: Bytes::from(vec![1u8; n]) }
            .encode(&mut bytes);
        let cut = cut.index(bytes.len());
        prop_assert!(matches!(packet::decode_all(&bytes[..cut], 1 << 20), Err(DrpcError::Truncated)) || cut == 0);
    }
}

#[test]
fn oversized_frame_is_rejected_from_its_header() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0x05, 1, 1]);
    wire::put_varint(&mut buf, 10_000_000);
    assert!(matches!(
        wire::decode(&mut buf, drpc::DEFAULT_MAX_PACKET),
        Err(DrpcError::TooLarge {
            size: 10_000_000,
            ..
        })
    ));
}

#[test]
fn packet_larger_than_the_limit_is_rejected() {
    let mut asm = PacketAssembler::new(100);
    let f = |done| Frame {
        kind: Kind::Message,
        control: false,
        done,
        stream_id: 1,
        message_id: 1,
        data: Bytes::from(vec![0u8; 60]),
    };
    assert!(asm.push(f(false)).unwrap().is_none());
    assert!(matches!(asm.push(f(true)), Err(DrpcError::TooLarge { .. })));
}

#[test]
fn unknown_kinds_are_ignored_only_with_the_control_flag() {
    let mut asm = PacketAssembler::new(100);
    let f = |control| Frame {
        kind: Kind::Other(42),
        control,
        done: true,
        stream_id: 1,
        message_id: 1,
        data: Bytes::new(),
    };
    assert!(asm.push(f(true)).unwrap().is_none());
    assert!(matches!(
        asm.push(f(false)),
        Err(DrpcError::UnknownKind(42))
    ));
}

#[test]
fn ids_going_backwards_is_a_protocol_error() {
    let mut asm = PacketAssembler::new(100);
    let f = |s, m| Frame {
        kind: Kind::Message,
        control: false,
        done: true,
        stream_id: s,
        message_id: m,
        data: Bytes::new(),
    };
    asm.push(f(2, 2)).unwrap().unwrap();
    assert!(matches!(asm.push(f(2, 1)), Err(DrpcError::Protocol(_))));
}

#[test]
fn error_data_is_code_then_text() {
    let e = RpcError {
        code: 0x0102,
        message: "nope".into(),
    };
    assert_eq!(&e.encode()[..], b"\0\0\0\0\0\0\x01\x02nope");
    assert_eq!(RpcError::decode(&e.encode()), e);
    assert_eq!(RpcError::decode(b"ab").message, "ab");
}

#[tokio::test]
async fn unary_calls_between_client_and_server() {
    let (c, s) = tokio::io::duplex(1024);
    let server = tokio::spawn(drpc::serve(s, |rpc, req: Bytes| async move {
        if rpc != REPORT_BOUNDARY_LOGS_RPC {
            return Err(RpcError {
                code: 5,
                message: format!("unknown rpc {rpc}"),
            });
        }
        let req: ReportBoundaryLogsRequest =
            prost::Message::decode(req).map_err(|e| RpcError::new(e.to_string()))?;
        if req.session_id == "fail" {
            return Err(RpcError {
                code: 7,
                message: "rejected".into(),
            });
        }
        Ok(Bytes::from(prost::Message::encode_to_vec(
            &ReportBoundaryLogsResponse {},
        )))
    }));
    let mut client = drpc::Client::new(c);
    for i in 0..5 {
        let req = ReportBoundaryLogsRequest {
            session_id: format!("s{i}"),
            // Bigger than a frame split, so packet assembly is exercised both ways.
            confined_process_name: "x".repeat(SPLIT_SIZE + 10),
            ..Default::default()
        };
        let _: ReportBoundaryLogsResponse =
            client.call(REPORT_BOUNDARY_LOGS_RPC, &req).await.unwrap();
    }
    let err = client
        .call::<_, ReportBoundaryLogsResponse>(
            REPORT_BOUNDARY_LOGS_RPC,
            &ReportBoundaryLogsRequest {
                session_id: "fail".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DrpcError::Remote(RpcError { code: 7, .. })),
        "{err}"
    );
    let err = client.unary("/nope", Bytes::new()).await.unwrap_err();
    assert!(
        matches!(err, DrpcError::Remote(RpcError { code: 5, .. })),
        "{err}"
    );
    // Still usable after errors.
    let _: ReportBoundaryLogsResponse = client
        .call(
            REPORT_BOUNDARY_LOGS_RPC,
            &ReportBoundaryLogsRequest::default(),
        )
        .await
        .unwrap();
    drop(client);
    server.await.unwrap().unwrap();
}

/// The exact bytes our client puts on the wire for a unary call.
#[tokio::test]
async fn client_wire_bytes_for_a_unary_call() {
    let (c, mut s) = tokio::io::duplex(4096);
    let call = tokio::spawn(async move {
        let mut client = drpc::Client::new(c);
        client.unary("/a/B", Bytes::from_static(b"req")).await
    });
    let mut buf = BytesMut::new();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while buf.len() < 6 + 4 + 3 + 3 + 3 {
        s.read_buf(&mut buf).await.unwrap();
    }
    assert_eq!(
        &buf[..],
        &[
            0x03, 1, 1, 4, b'/', b'a', b'/', b'B', // Invoke, done
            0x05, 1, 2, 3, b'r', b'e', b'q', // Message, done
            0x0d, 1, 3, 0, // CloseSend, done
        ]
    );
    // Answer: Message "ok" then CloseSend.
    s.write_all(&[0x05, 1, 1, 2, b'o', b'k', 0x0d, 1, 2, 0])
        .await
        .unwrap();
    assert_eq!(&call.await.unwrap().unwrap()[..], b"ok");
    let mut close = [0u8; 4];
    s.read_exact(&mut close).await.unwrap();
    assert_eq!(close, [0x0b, 1, 4, 0]);
}

#[tokio::test]
async fn server_closing_mid_call_is_an_error_not_a_hang() {
    let (c, s) = tokio::io::duplex(1024);
    drop(s);
    let mut client = drpc::Client::new(c);
    assert!(client.unary("/x/Y", Bytes::new()).await.is_err());
}
