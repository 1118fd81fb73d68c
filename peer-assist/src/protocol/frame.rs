//! Binary data frames exchanged between peers, identical over every transport (docs/PROTOCOL.md §5).
//!
//! A frame is `type: u8`, `length: u32` (payload length), `payload`. Integers are big-endian; strings
//! are UTF-8 with a `u16` byte-length prefix. Decoding never panics and never allocates more than the
//! limits below allow, whatever the input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Version carried in [`Frame::Handshake`]; any other value is [`FrameError::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 1;
/// First four bytes of a handshake payload.
pub const MAGIC: [u8; 4] = *b"P2PA";
/// Bytes before the payload: type (1) + length (4).
pub const HEADER_LEN: usize = 5;
/// Longest segment id, in UTF-8 bytes.
pub const MAX_SEGMENT_ID_LEN: usize = 1024;
/// Longest chunk of segment data in one [`Frame::Chunk`].
pub const MAX_CHUNK_LEN: usize = 64 * 1024;
/// Most segment ids in one [`Frame::Have`].
pub const MAX_HAVE_IDS: usize = 512;
/// Largest declared payload length; a longer frame is rejected before its payload is read.
pub const MAX_FRAME_LEN: usize = 70_000;
/// Recommended chunk size for senders.
pub const RECOMMENDED_CHUNK_LEN: usize = 16 * 1024;

/// One data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `0x01`: first frame in each direction. Payload: MAGIC(4) version(u16) peer_id(str).
    Handshake { version: u16, peer_id: String },
    /// `0x02`: the segment ids the sender holds (replaces the previous list). Payload: count(u16), str × count.
    Have { segments: Vec<String> },
    /// `0x03`: ask for `segment` from byte `offset`. Payload: request_id(u32) offset(u64) segment(str).
    Request {
        request_id: u32,
        segment: String,
        offset: u64,
    },
    /// `0x04`: header sent before the chunks: total size, first offset, the SHA-256 the sender claims.
    /// Payload: request_id(u32) size(u64) offset(u64) digest(32).
    Response {
        request_id: u32,
        size: u64,
        offset: u64,
        digest: [u8; 32],
    },
    /// `0x05`: segment bytes at `offset`. Payload: request_id(u32) offset(u64) data(rest, ≤ MAX_CHUNK_LEN).
    Chunk {
        request_id: u32,
        offset: u64,
        data: Bytes,
    },
    /// `0x06`: the requester no longer wants `request_id`. Payload: request_id(u32).
    Cancel { request_id: u32 },
    /// `0x07`: the sender does not have the segment, or refuses to upload it. Payload: request_id(u32).
    Absent { request_id: u32 },
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The buffer ends before the frame does; at least `needed` more bytes are required.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("declared payload length {len} exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("payload shorter than its fields")]
    Truncated,
    #[error("trailing bytes after the frame's fields")]
    TrailingBytes,
    #[error("bad handshake magic")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("invalid segment id: {0}")]
    InvalidSegmentId(String),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("too many segment ids: {0}")]
    TooManyIds(usize),
    #[error("chunk of {0} bytes exceeds the limit")]
    ChunkTooLarge(usize),
    /// Transport error or end of stream in the middle of a frame ([`read_frame`] only).
    #[error("i/o: {0}")]
    Io(String),
}

impl FrameError {
    /// The variant name, as used in the test vectors and suitable as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Incomplete { .. } => "Incomplete",
            FrameError::UnknownType(_) => "UnknownType",
            FrameError::TooLarge { .. } => "TooLarge",
            FrameError::Truncated => "Truncated",
            FrameError::TrailingBytes => "TrailingBytes",
            FrameError::BadMagic => "BadMagic",
            FrameError::UnsupportedVersion(_) => "UnsupportedVersion",
            FrameError::InvalidSegmentId(_) => "InvalidSegmentId",
            FrameError::InvalidUtf8 => "InvalidUtf8",
            FrameError::TooManyIds(_) => "TooManyIds",
            FrameError::ChunkTooLarge(_) => "ChunkTooLarge",
            FrameError::Io(_) => "Io",
        }
    }
}

/// Checks a segment id: starts with '/', no NUL, at most [`MAX_SEGMENT_ID_LEN`] bytes.
pub fn validate_segment_id(id: &str) -> Result<(), FrameError> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_SEGMENT_ID_LEN {
        "too long"
    } else if !id.starts_with('/') {
        "does not start with '/'"
    } else if id.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(FrameError::InvalidSegmentId(reason.to_string()))
}

impl Frame {
    pub const TYPE_HANDSHAKE: u8 = 0x01;
    pub const TYPE_HAVE: u8 = 0x02;
    pub const TYPE_REQUEST: u8 = 0x03;
    pub const TYPE_RESPONSE: u8 = 0x04;
    pub const TYPE_CHUNK: u8 = 0x05;
    pub const TYPE_CANCEL: u8 = 0x06;
    pub const TYPE_ABSENT: u8 = 0x07;

    /// The type byte of this frame.
    pub fn type_code(&self) -> u8 {
        match self {
            Frame::Handshake { .. } => Self::TYPE_HANDSHAKE,
            Frame::Have { .. } => Self::TYPE_HAVE,
            Frame::Request { .. } => Self::TYPE_REQUEST,
            Frame::Response { .. } => Self::TYPE_RESPONSE,
            Frame::Chunk { .. } => Self::TYPE_CHUNK,
            Frame::Cancel { .. } => Self::TYPE_CANCEL,
            Frame::Absent { .. } => Self::TYPE_ABSENT,
        }
    }

    /// Checks the limits a receiver enforces, so a sender can refuse to send what would be rejected.
    pub fn validate(&self) -> Result<(), FrameError> {
        match self {
            Frame::Handshake { version, .. } if *version != PROTOCOL_VERSION => {
                return Err(FrameError::UnsupportedVersion(*version));
            }
            Frame::Have { segments } => {
                if segments.len() > MAX_HAVE_IDS {
                    return Err(FrameError::TooManyIds(segments.len()));
                }
                segments.iter().try_for_each(|s| validate_segment_id(s))?;
            }
            Frame::Request { segment, .. } => validate_segment_id(segment)?,
            Frame::Chunk { data, .. } if data.len() > MAX_CHUNK_LEN => {
                return Err(FrameError::ChunkTooLarge(data.len()));
            }
            _ => {}
        }
        let len = self.payload_len();
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(())
    }

    /// Length of the encoded payload (without the 5-byte header).
    pub fn payload_len(&self) -> usize {
        fn str_len(s: &str) -> usize {
            2 + s.len().min(u16::MAX as usize)
        }
        match self {
            Frame::Handshake { peer_id, .. } => 4 + 2 + str_len(peer_id),
            Frame::Have { segments } => {
                2 + segments
                    .iter()
                    .take(u16::MAX as usize)
                    .map(|s| str_len(s))
                    .sum::<usize>()
            }
            Frame::Request { segment, .. } => 4 + 8 + str_len(segment),
            Frame::Response { .. } => 4 + 8 + 8 + 32,
            Frame::Chunk { data, .. } => 4 + 8 + data.len().min(u32::MAX as usize - 12),
            Frame::Cancel { .. } | Frame::Absent { .. } => 4,
        }
    }

    /// Length of the encoded frame, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Encodes the frame (header + payload).
    ///
    /// The frame should satisfy [`Frame::validate`]. One that does not is still encoded with a
    /// consistent length (strings longer than 65535 bytes, more than 65535 ids or more than 4 GiB of
    /// chunk data are cut), so a stream never loses framing; the receiver rejects it.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + self.payload_len());
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the encoded frame to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        let len = self.payload_len();
        buf.reserve(HEADER_LEN + len);
        buf.put_u8(self.type_code());
        // payload_len() caps every part so the sum fits in u32 for any realistic frame.
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        match self {
            Frame::Handshake { version, peer_id } => {
                buf.put_slice(&MAGIC);
                buf.put_u16(*version);
                put_str(buf, peer_id);
            }
            Frame::Have { segments } => {
                let n = segments.len().min(u16::MAX as usize);
                buf.put_u16(n as u16);
                for s in &segments[..n] {
                    put_str(buf, s);
                }
            }
            Frame::Request {
                request_id,
                segment,
                offset,
            } => {
                buf.put_u32(*request_id);
                buf.put_u64(*offset);
                put_str(buf, segment);
            }
            Frame::Response {
                request_id,
                size,
                offset,
                digest,
            } => {
                buf.put_u32(*request_id);
                buf.put_u64(*size);
                buf.put_u64(*offset);
                buf.put_slice(digest);
            }
            Frame::Chunk {
                request_id,
                offset,
                data,
            } => {
                buf.put_u32(*request_id);
                buf.put_u64(*offset);
                buf.put_slice(&data[..data.len().min(u32::MAX as usize - 12)]);
            }
            Frame::Cancel { request_id } | Frame::Absent { request_id } => {
                buf.put_u32(*request_id);
            }
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

/// Decodes one frame from the start of `buf`, which may hold a partial frame or several frames.
///
/// Returns the frame and the number of bytes it occupied, or [`FrameError::Incomplete`] when `buf`
/// is a proper prefix of a frame that is valid so far (read more and call again). Checks, in order:
/// the type byte (as soon as one byte is present), the declared length against [`MAX_FRAME_LEN`],
/// completeness, then the payload's fields in wire order.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
    let Some(&ty) = buf.first() else {
        return Err(FrameError::Incomplete { needed: HEADER_LEN });
    };
    if !(Frame::TYPE_HANDSHAKE..=Frame::TYPE_ABSENT).contains(&ty) {
        return Err(FrameError::UnknownType(ty));
    }
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let frame = decode_payload(ty, &buf[HEADER_LEN..total])?;
    Ok((frame, total))
}

/// Decodes a buffer that holds exactly one frame (one data-channel message): like [`decode`], and
/// bytes after the frame are [`FrameError::TrailingBytes`].
pub fn decode_exact(buf: &[u8]) -> Result<Frame, FrameError> {
    let (frame, used) = decode(buf)?;
    if used != buf.len() {
        return Err(FrameError::TrailingBytes);
    }
    Ok(frame)
}

/// A cursor over one payload; every read fails with `Truncated` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let mut b = self.take(4)?;
        Ok(b.get_u32())
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut b = self.take(8)?;
        Ok(b.get_u64())
    }

    /// A `u16`-prefixed UTF-8 string, borrowed.
    fn str(&mut self) -> Result<&'a str, FrameError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| FrameError::InvalidUtf8)
    }

    fn segment(&mut self) -> Result<String, FrameError> {
        let s = self.str()?;
        validate_segment_id(s)?;
        Ok(s.to_owned())
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes)
        }
    }
}

fn decode_payload(ty: u8, payload: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader { buf: payload };
    let frame = match ty {
        Frame::TYPE_HANDSHAKE => {
            if r.take(4)? != MAGIC {
                return Err(FrameError::BadMagic);
            }
            let version = r.u16()?;
            // Checked before the rest: a later version may lay out the rest differently.
            if version != PROTOCOL_VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            let peer_id = r.str()?.to_owned();
            Frame::Handshake { version, peer_id }
        }
        Frame::TYPE_HAVE => {
            let count = r.u16()? as usize;
            if count > MAX_HAVE_IDS {
                return Err(FrameError::TooManyIds(count));
            }
            // Each id takes at least 2 bytes, so the payload bounds the allocation as well.
            let mut segments = Vec::with_capacity(count.min(r.buf.len() / 2));
            for _ in 0..count {
                segments.push(r.segment()?);
            }
            Frame::Have { segments }
        }
        Frame::TYPE_REQUEST => {
            let request_id = r.u32()?;
            let offset = r.u64()?;
            let segment = r.segment()?;
            Frame::Request {
                request_id,
                segment,
                offset,
            }
        }
        Frame::TYPE_RESPONSE => {
            let request_id = r.u32()?;
            let size = r.u64()?;
            let offset = r.u64()?;
            let mut digest = [0u8; 32];
            digest.copy_from_slice(r.take(32)?);
            Frame::Response {
                request_id,
                size,
                offset,
                digest,
            }
        }
        Frame::TYPE_CHUNK => {
            let request_id = r.u32()?;
            let offset = r.u64()?;
            let data = r.rest();
            if data.len() > MAX_CHUNK_LEN {
                return Err(FrameError::ChunkTooLarge(data.len()));
            }
            Frame::Chunk {
                request_id,
                offset,
                data: Bytes::copy_from_slice(data),
            }
        }
        Frame::TYPE_CANCEL => Frame::Cancel {
            request_id: r.u32()?,
        },
        Frame::TYPE_ABSENT => Frame::Absent {
            request_id: r.u32()?,
        },
        other => return Err(FrameError::UnknownType(other)),
    };
    r.finish()?;
    Ok(frame)
}

/// Reads one frame from a stream transport (a QUIC stream), buffering in `buf`.
///
/// Bytes after the frame stay in `buf` for the next call, so use the same `buf` for every call on
/// one stream. Returns `Ok(None)` on end of stream at a frame boundary; end of stream inside a frame
/// and transport errors are [`FrameError::Io`]. Never buffers more than one maximal frame.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, FrameError> {
    use tokio::io::AsyncReadExt;
    loop {
        match decode(buf) {
            Ok((frame, used)) => {
                buf.advance(used);
                return Ok(Some(frame));
            }
            Err(FrameError::Incomplete { needed }) => {
                // `needed` is bounded by HEADER_LEN + MAX_FRAME_LEN: the length was checked.
                buf.reserve(needed);
                let n = r
                    .read_buf(buf)
                    .await
                    .map_err(|e| FrameError::Io(e.to_string()))?;
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(FrameError::Io(format!(
                            "end of stream inside a frame ({} bytes buffered)",
                            buf.len()
                        )))
                    };
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Handshake {
                version: 1,
                peer_id: "pé-1".into(),
            },
            Frame::Have { segments: vec![] },
            Frame::Have {
                segments: vec!["/a/1.ts".into(), "/a/init.mp4".into()],
            },
            Frame::Request {
                request_id: 7,
                segment: "/a/1.ts".into(),
                offset: 1 << 40,
            },
            Frame::Response {
                request_id: u32::MAX,
                size: 1234,
                offset: 0,
                digest: [0xab; 32],
            },
            Frame::Chunk {
                request_id: 1,
                offset: 16384,
                data: Bytes::from(vec![9u8; MAX_CHUNK_LEN]),
            },
            Frame::Chunk {
                request_id: 1,
                offset: 0,
                data: Bytes::new(),
            },
            Frame::Cancel { request_id: 3 },
            Frame::Absent { request_id: 0 },
        ]
    }

    #[test]
    fn round_trip_and_split() {
        for f in samples() {
            f.validate().unwrap();
            let bytes = f.encode();
            assert_eq!(bytes.len(), HEADER_LEN + f.payload_len());
            assert_eq!(decode_exact(&bytes).unwrap(), f);
            for cut in 0..bytes.len() {
                match decode(&bytes[..cut]) {
                    Err(FrameError::Incomplete { needed }) => {
                        assert!(needed >= 1 && cut + needed <= bytes.len())
                    }
                    other => panic!("{f:?} cut at {cut}: {other:?}"),
                }
            }
            // Two frames back to back: decode consumes only the first.
            let mut two = BytesMut::new();
            f.encode_into(&mut two);
            f.encode_into(&mut two);
            let (g, used) = decode(&two).unwrap();
            assert_eq!((g, used), (f.clone(), bytes.len()));
            assert_eq!(decode_exact(&two), Err(FrameError::TrailingBytes));
        }
    }

    #[test]
    fn limits() {
        let too_many = Frame::Have {
            segments: vec!["/x".into(); MAX_HAVE_IDS + 1],
        };
        assert_eq!(
            too_many.validate(),
            Err(FrameError::TooManyIds(MAX_HAVE_IDS + 1))
        );
        assert_eq!(
            decode_exact(&too_many.encode()),
            Err(FrameError::TooManyIds(MAX_HAVE_IDS + 1))
        );
        let max_have = Frame::Have {
            segments: vec!["/x".into(); MAX_HAVE_IDS],
        };
        assert_eq!(decode_exact(&max_have.encode()).unwrap(), max_have);

        let big = Frame::Chunk {
            request_id: 1,
            offset: 0,
            data: Bytes::from(vec![0u8; MAX_CHUNK_LEN + 1]),
        };
        assert_eq!(
            decode_exact(&big.encode()),
            Err(FrameError::ChunkTooLarge(MAX_CHUNK_LEN + 1))
        );

        let long_id = format!("/{}", "a".repeat(MAX_SEGMENT_ID_LEN - 1));
        let ok = Frame::Request {
            request_id: 1,
            segment: long_id.clone(),
            offset: 0,
        };
        assert_eq!(decode_exact(&ok.encode()).unwrap(), ok);
        let too_long = Frame::Request {
            request_id: 1,
            segment: format!("{long_id}a"),
            offset: 0,
        };
        assert!(matches!(
            decode_exact(&too_long.encode()),
            Err(FrameError::InvalidSegmentId(_))
        ));
        for bad in ["", "a/1.ts", "/a\0b"] {
            let f = Frame::Request {
                request_id: 1,
                segment: bad.into(),
                offset: 0,
            };
            assert!(matches!(
                decode_exact(&f.encode()),
                Err(FrameError::InvalidSegmentId(_))
            ));
        }

        // Declared length over the limit is rejected from the header alone.
        let mut hdr = vec![Frame::TYPE_CHUNK];
        hdr.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
        assert_eq!(
            decode(&hdr),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
        hdr[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&hdr), Err(FrameError::TooLarge { .. })));

        assert_eq!(decode(&[0x00]), Err(FrameError::UnknownType(0)));
        assert_eq!(decode(&[0x08, 0, 0]), Err(FrameError::UnknownType(8)));
        assert_eq!(
            decode(&[]),
            Err(FrameError::Incomplete { needed: HEADER_LEN })
        );
        assert_eq!(
            decode_exact(&[0x06, 0, 0, 0, 5, 0, 0, 0, 1, 0]),
            Err(FrameError::TrailingBytes)
        );
        assert_eq!(
            decode_exact(&[0x06, 0, 0, 0, 3, 0, 0, 1]),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn handshake_errors() {
        let mut b = BytesMut::from(
            &Frame::Handshake {
                version: 1,
                peer_id: "p".into(),
            }
            .encode()[..],
        );
        b[5] = b'X';
        assert_eq!(decode_exact(&b), Err(FrameError::BadMagic));
        b[5] = b'P';
        b[10] = 2;
        assert_eq!(decode_exact(&b), Err(FrameError::UnsupportedVersion(2)));
        assert_eq!(
            Frame::Handshake {
                version: 2,
                peer_id: "p".into()
            }
            .validate(),
            Err(FrameError::UnsupportedVersion(2))
        );
        let bad_utf8 = [0x01, 0, 0, 0, 9, b'P', b'2', b'P', b'A', 0, 1, 0, 1, 0xff];
        assert_eq!(decode_exact(&bad_utf8), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn oversize_frames_encode_consistently() {
        // Invalid frames still keep the stream in sync: the length field matches the bytes written.
        let long = Frame::Handshake {
            version: 1,
            peer_id: "x".repeat(70_000),
        };
        let b = long.encode();
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + HEADER_LEN, b.len());
        assert_eq!(len, 4 + 2 + 2 + u16::MAX as usize);
        // Many long ids: each is valid, together they exceed the frame limit.
        let f = Frame::Have {
            segments: vec![format!("/{}", "a".repeat(999)); 100],
        };
        let b = f.encode();
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + HEADER_LEN, b.len());
        assert!(matches!(f.validate(), Err(FrameError::TooLarge { .. })));
        assert!(matches!(decode(&b), Err(FrameError::TooLarge { .. })));
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Bytes> = samples().iter().map(Frame::encode).collect();
        for i in 0..40_000 {
            let mut b: Vec<u8> = if i % 2 == 0 {
                let n = rng.below(64);
                let mut v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                if let Some(t) = v.first_mut() {
                    *t = 1 + (*t % 8); // mostly known types, sometimes 0x08
                }
                v
            } else {
                seeds[rng.below(seeds.len())].to_vec()
            };
            for _ in 0..rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let at = rng.below(b.len());
                match rng.below(3) {
                    0 => b[at] = rng.next() as u8,
                    1 => b.truncate(at),
                    _ => b.insert(at, rng.next() as u8),
                }
            }
            if let Ok((f, used)) = decode(&b) {
                f.validate().unwrap();
                assert_eq!(&f.encode()[..], &b[..used]);
            }
            let _ = decode_exact(&b);
        }
    }

    #[tokio::test]
    async fn read_frame_stream() {
        let frames = samples();
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        let wire = wire.freeze();
        // A reader that yields small pieces exercises partial reads.
        let (mut tx, mut rx) = tokio::io::duplex(7);
        let w = wire.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&w).await.unwrap();
        });
        let mut buf = BytesMut::new();
        for f in &frames {
            assert_eq!(
                read_frame(&mut rx, &mut buf).await.unwrap().as_ref(),
                Some(f)
            );
        }
        writer.await.unwrap();
        assert_eq!(read_frame(&mut rx, &mut buf).await.unwrap(), None);

        // End of stream inside a frame is an error, not a clean end.
        let mut cut = &wire[..wire.len() - 1];
        let mut buf = BytesMut::new();
        let mut got = 0;
        let err = loop {
            match read_frame(&mut cut, &mut buf).await {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("clean end after a cut frame"),
                Err(e) => break e,
            }
        };
        assert_eq!(got, frames.len() - 1);
        assert_eq!(err.kind(), "Io");

        // A bad frame is reported without reading its payload.
        let mut bad: &[u8] = &[0x05, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut bad, &mut BytesMut::new()).await,
            Err(FrameError::TooLarge { .. })
        ));
    }
}
