//! Fuzz the TFTP codec (`proto::tftp::decode`) and what the server does with a request before
//! touching the filesystem: name normalization (`tftp::root::normalize`) and option
//! negotiation (`tftp::transfer::negotiate`).
//!
//! The input is one datagram as a client would send it to port 69 or to a transfer port.
//! Nothing may panic; a decoded packet re-encodes to bytes that decode to the same packet; a
//! normalized name has no `..`, empty or `.` component and is at most 255 bytes; a negotiated
//! plan stays within the limits whatever the client asked.

#![no_main]

use confluent::proto::tftp::{self as wire, Packet};
use confluent::tftp::{TftpLimits, root, transfer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = wire::decode(data) else {
        return;
    };
    let mut again = Vec::new();
    wire::encode(&packet, &mut again);
    assert_eq!(wire::decode(&again), Ok(packet), "re-encoding changed the packet");
    if let Packet::Rrq(request) | Packet::Wrq(request) = packet {
        if let Ok(name) = root::normalize(request.filename) {
            assert!(name.len() <= root::MAX_NAME_LEN);
            assert!(!name.starts_with('/'));
            assert!(
                name.split('/').all(|part| !part.is_empty() && part != "." && part != ".."),
                "normalized name {name:?} has a bad component"
            );
        }
        let limits = TftpLimits::default();
        let size = u64::from(data.len() as u32) * 1_000_003;
        for cap in [512u16, 1468, 9000, wire::MAX_BLKSIZE] {
            let plan = transfer::negotiate(&request.options, size, cap, &limits);
            assert!(plan.blksize >= wire::DEFAULT_BLKSIZE && plan.blksize <= cap.max(512));
            assert!((1..=transfer::MAX_WINDOWSIZE).contains(&plan.windowsize));
            assert!(usize::from(plan.windowsize) * usize::from(plan.blksize) <= limits.max_window_bytes.max(usize::from(plan.blksize)));
            if let Some(oack) = plan.oack {
                assert_eq!(oack.tsize.is_some(), request.options.tsize.is_some());
                if oack.tsize.is_some() {
                    assert_eq!(oack.tsize, Some(size));
                }
            }
        }
    }
});
