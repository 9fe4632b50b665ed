//! Fuzz the HTTP query and form decoder `http::percent_decode`: it must accept any bytes,
//! never grow its input, and leave input without `%` or `+` unchanged.

#![no_main]

use confluent::http::percent_decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = percent_decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if !text.contains(['%', '+']) {
            assert_eq!(decoded, text, "input without escapes must be kept as it is");
        }
        assert!(
            decoded.len() <= text.len(),
            "decoding valid UTF-8 never makes it longer"
        );
    }
});
