//! Data frames: `decode` and `decode_exact` on arbitrary bytes never panic, agree with each other, and
//! anything accepted re-encodes to the same bytes and decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_assist::protocol::frame::{decode, decode_exact, FrameError, HEADER_LEN, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let exact = decode_exact(data);
    match decode(data) {
        Ok((frame, used)) => {
            assert!(used >= HEADER_LEN && used <= data.len());
            if used == data.len() {
                assert_eq!(exact.as_ref(), Ok(&frame));
            } else {
                assert_eq!(exact, Err(FrameError::TrailingBytes));
            }
            assert_eq!(frame.validate(), Ok(()));
            let bytes = frame.encode();
            assert_eq!(&bytes[..], &data[..used], "encoding is canonical");
            assert_eq!(decode_exact(&bytes), Ok(frame.clone()));
            assert_eq!(decode(&bytes), Ok((frame, bytes.len())));
        }
        Err(FrameError::Incomplete { needed }) => {
            assert!(needed >= 1 && data.len() + needed <= HEADER_LEN + MAX_FRAME_LEN);
            assert_eq!(exact, Err(FrameError::Incomplete { needed }));
        }
        Err(e) => assert_eq!(exact, Err(e)),
    }
});
