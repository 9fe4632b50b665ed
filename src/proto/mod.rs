//! Pure protocol codecs: no I/O, no tokio, never panic on bytes.
//!
//! The lints below make "never panic" a compile-time rule for the codecs: no `unwrap`, `expect`,
//! `panic!` or unchecked indexing outside the test modules (which allow them for their
//! assertions). Use `get`, `?`, `split_first`, `try_from` and friends instead.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod dhcp;
pub mod tftp;
pub mod tlv;
