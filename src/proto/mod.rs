//! Pure protocol codecs: no I/O, no tokio, never panic on bytes.

pub mod dhcp;
pub mod tftp;
pub mod tlv;
