//! Fuzz the TLV framing of the socket API (`proto::tlv`) and the socket's frame reader.
//!
//! The input is a byte stream as a peer would send it. It is read twice: by a pure loop over
//! `decode_header` (take the payload, parse JSON frames) and by the real
//! `api::socket::read_frame` over an in-memory stream. Neither may panic, the two must agree
//! frame by frame, and every header that decodes must re-encode to the same four bytes. A
//! well-framed JSON frame whose payload is not JSON is a frame of its own (the daemon answers
//! it with a 400), not the end of the stream.

#![no_main]

use std::sync::OnceLock;

use confluent::api::socket::{self, Frame};
use confluent::proto::tlv::{self, FrameType};
use libfuzzer_sys::fuzz_target;

/// What one frame decoded to, in a form both readers can be compared on.
#[derive(Debug, PartialEq)]
enum Decoded {
    Text(Vec<u8>),
    Json(serde_json::Value),
    /// A JSON frame whose payload does not parse, with the parser's message.
    BadJson(String),
}

/// Why reading stopped.
#[derive(Debug, PartialEq)]
enum End {
    /// Fewer than four bytes were left: a clean end of stream between frames.
    Clean,
    /// A bad header or a truncated payload.
    Error,
}

/// The frame reader loop written directly over `decode_header`.
fn read_all_pure(mut input: &[u8]) -> (Vec<Decoded>, End) {
    let mut frames = Vec::new();
    loop {
        let Some((header, rest)) = input.split_first_chunk::<4>() else {
            return (frames, End::Clean);
        };
        let Ok((frame_type, length)) = tlv::decode_header(*header) else {
            return (frames, End::Error);
        };
        assert!(length <= tlv::MAX_LENGTH, "decoded length above the limit");
        assert_eq!(
            tlv::encode_header(frame_type, length).ok(),
            Some(*header),
            "a decoded header must re-encode to the same bytes"
        );
        let Some((payload, rest)) = rest.split_at_checked(length) else {
            return (frames, End::Error);
        };
        frames.push(match frame_type {
            FrameType::Json => match serde_json::from_slice(payload) {
                Ok(value) => Decoded::Json(value),
                Err(error) => Decoded::BadJson(error.to_string()),
            },
            FrameType::Text | FrameType::FileDescriptor => Decoded::Text(payload.to_vec()),
        });
        input = rest;
    }
}

/// The same stream through the daemon's own async reader.
fn read_all_socket(input: &[u8]) -> (Vec<Decoded>, End) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        // The time driver serves read_frame's payload timeout; an in-memory stream never waits.
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime with only the time driver always builds")
    });
    runtime.block_on(async {
        let mut stream = input;
        let mut frames = Vec::new();
        loop {
            match socket::read_frame(&mut stream).await {
                Ok(Some(Frame::Json(value))) => frames.push(Decoded::Json(value)),
                Ok(Some(Frame::Text(payload))) => frames.push(Decoded::Text(payload)),
                Ok(Some(Frame::BadJson(message))) => frames.push(Decoded::BadJson(message)),
                Ok(None) => return (frames, End::Clean),
                Err(_) => return (frames, End::Error),
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<4>() {
        let _ = tlv::decode_header(*header);
    }
    let pure = read_all_pure(data);
    let real = read_all_socket(data);
    assert_eq!(pure, real, "the pure loop and read_frame disagree");
});
