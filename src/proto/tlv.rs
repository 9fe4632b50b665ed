//! Confluent's TLV framing for the unix and TLS socket API (reference section 1.8).
//!
//! Every message is a 4-byte big-endian header then the payload. Bit 31 is reserved and must be
//! zero; bits 24-30 carry the type (0 text, 1 JSON, 2 file descriptor); bits 0-23 the length
//! (at most 16 MiB - 1). Zero-length payloads are never sent.

/// Largest payload a frame can carry.
pub const MAX_LENGTH: usize = (1 << 24) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Text,
    Json,
    FileDescriptor,
}

impl FrameType {
    fn code(self) -> u32 {
        match self {
            FrameType::Text => 0,
            FrameType::Json => 1,
            FrameType::FileDescriptor => 2,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlvError {
    #[error("reserved bit set in frame header")]
    Reserved,
    #[error("unknown frame type {0}")]
    UnknownType(u32),
    #[error("frame of {0} bytes exceeds the 16 MiB limit")]
    TooLong(usize),
}

/// Encode a header for a payload of `length` bytes.
pub fn encode_header(frame_type: FrameType, length: usize) -> Result<[u8; 4], TlvError> {
    if length > MAX_LENGTH {
        return Err(TlvError::TooLong(length));
    }
    let length = u32::try_from(length).map_err(|_| TlvError::TooLong(length))?;
    Ok(((frame_type.code() << 24) | length).to_be_bytes())
}

/// Decode a header into its type and payload length.
pub fn decode_header(header: [u8; 4]) -> Result<(FrameType, usize), TlvError> {
    let word = u32::from_be_bytes(header);
    if word & 0x8000_0000 != 0 {
        return Err(TlvError::Reserved);
    }
    let frame_type = match (word >> 24) & 0x7f {
        0 => FrameType::Text,
        1 => FrameType::Json,
        2 => FrameType::FileDescriptor,
        other => return Err(TlvError::UnknownType(other)),
    };
    let length = usize::try_from(word & 0x00ff_ffff).map_err(|_| TlvError::TooLong(usize::MAX))?;
    Ok((frame_type, length))
}

/// Encode a whole frame.
pub fn encode(frame_type: FrameType, payload: &[u8]) -> Result<Vec<u8>, TlvError> {
    let header = encode_header(frame_type, payload.len())?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    Ok(frame)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for (frame_type, length) in [(FrameType::Text, 1), (FrameType::Json, MAX_LENGTH)] {
            let header = encode_header(frame_type, length).unwrap();
            assert_eq!(decode_header(header).unwrap(), (frame_type, length));
        }
        assert_eq!(encode_header(FrameType::Json, 5).unwrap(), [1, 0, 0, 5]);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(decode_header([0x80, 0, 0, 1]), Err(TlvError::Reserved));
        assert_eq!(
            decode_header([0x05, 0, 0, 1]),
            Err(TlvError::UnknownType(5))
        );
        assert!(encode_header(FrameType::Text, MAX_LENGTH + 1).is_err());
    }
}
