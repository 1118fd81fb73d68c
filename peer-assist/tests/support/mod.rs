//! What every transport's tests share: building frames, and the conformance check that a pair of
//! links carries frames both ways in order and refuses frames that are not one valid frame.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use peer_assist::transport::{LinkError, PeerLink, FRAME_HEADER_LEN, MAX_FRAME_LEN};

/// One frame: `kind`, the payload length, the payload.
pub fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    Bytes::from(f)
}

/// A frame whose payload starts with `seq` and is filled with a pattern derived from it.
pub fn seq_frame(seq: u32, payload_len: usize) -> Bytes {
    let mut payload = vec![0u8; payload_len];
    let seq_bytes = seq.to_be_bytes();
    for (i, b) in payload.iter_mut().enumerate() {
        *b = if i < 4 {
            seq_bytes[i]
        } else {
            (seq as usize).wrapping_mul(31).wrapping_add(i) as u8
        };
    }
    frame(7, &payload)
}

/// Both links send the same 1,002 frames (small ones, with a max-size one in the middle and one
/// at the end) at once, and each receives the other's, in order and intact. Then a frame one byte
/// over the limit and one whose header disagrees with its length are refused locally, and the
/// link stays open. Drops both links at the end.
pub async fn exchange_in_order_and_refuse_bad_frames(link_a: PeerLink, link_b: PeerLink) {
    let frames: Vec<Bytes> = (0..1_002u32)
        .map(|seq| match seq {
            500 | 1_001 => seq_frame(seq, MAX_FRAME_LEN),
            _ => seq_frame(seq, 4 + (seq as usize % 300)),
        })
        .collect();
    assert_eq!(frames[500].len(), FRAME_HEADER_LEN + 70_000);
    let run = |link: PeerLink, frames: Vec<Bytes>| async move {
        let PeerLink {
            sender,
            mut receiver,
            ..
        } = link;
        let to_send = frames.clone();
        let sending = tokio::spawn(async move {
            for f in to_send {
                sender.send(f).await.unwrap();
            }
            sender
        });
        for (i, expected) in frames.iter().enumerate() {
            let got = receiver.recv().await.unwrap();
            assert_eq!(&got, expected, "frame {i} differs");
        }
        (sending.await.unwrap(), receiver)
    };
    let (side_a, side_b) = tokio::join!(run(link_a, frames.clone()), run(link_b, frames));
    assert!(!side_a.0.is_closed());
    let too_big = frame(1, &vec![0u8; MAX_FRAME_LEN + 1]);
    assert!(matches!(
        side_a.0.send(too_big).await,
        Err(LinkError::FrameTooLarge(n)) if n == MAX_FRAME_LEN + 1
    ));
    let inconsistent = Bytes::from_static(&[1, 0, 0, 0, 9, 1, 2]);
    assert!(matches!(
        side_a.0.send(inconsistent).await,
        Err(LinkError::InvalidFrame(_))
    ));
    assert!(
        !side_a.0.is_closed(),
        "a refused frame does not close the link"
    );
    drop(side_b);
}
