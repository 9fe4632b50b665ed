//! TFTP packets (RFC 1350) with option negotiation (RFC 2347) and the `blksize` (RFC 2348),
//! `timeout` and `tsize` (RFC 2349) and `windowsize` (RFC 7440) options.
//!
//! Pure: no I/O, no clocks. [`decode`] never panics on bytes and borrows from its input; the
//! `encode_*` functions append to a caller's buffer so that a sender reuses one allocation.
//! Which options a server accepts, and how far it caps them, is the server's business
//! (`crate::tftp`); this module only checks that a value is inside the range its RFC allows.

use std::fmt;

/// The well-known server port (RFC 1350 section 4).
pub const SERVER_PORT: u16 = 69;
/// The block size without a `blksize` option (RFC 1350 section 2).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest and largest `blksize` values (RFC 2348 section 1).
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// Largest `windowsize` value (RFC 7440 section 3).
pub const MAX_WINDOWSIZE: u16 = 65535;
/// Bytes before the payload of a DATA packet (opcode and block number).
pub const DATA_HEADER_LEN: usize = 4;

/// Packet opcodes (RFC 1350 section 5, RFC 2347 for OACK).
pub mod opcode {
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const OACK: u16 = 6;
}

/// ERROR packet codes (RFC 1350 appendix, RFC 2347 for code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    Undefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTransferId,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation refused (RFC 2347); UEFI firmware sends it after reading `tsize`.
    OptionRefused,
    /// Any other value.
    Other(u16),
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::Undefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            other => ErrorCode::Other(other),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Undefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(code) => code,
        }
    }
}

/// Transfer modes (RFC 1350 section 1; `mail` is obsolete and accepted only by the decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    Mail,
}

impl Mode {
    fn parse(text: &[u8]) -> Option<Mode> {
        if text.eq_ignore_ascii_case(b"octet") {
            Some(Mode::Octet)
        } else if text.eq_ignore_ascii_case(b"netascii") {
            Some(Mode::Netascii)
        } else if text.eq_ignore_ascii_case(b"mail") {
            Some(Mode::Mail)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        }
    }
}

/// The options of a request or of an OACK. A value outside the range its RFC allows, or one
/// that is not a decimal number, is treated as not requested (RFC 2347: a server ignores
/// options it does not accept); unknown options are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// RFC 2348: 8..=65464 bytes per DATA payload.
    pub blksize: Option<u16>,
    /// RFC 2349: seconds, 1..=255.
    pub timeout: Option<u8>,
    /// RFC 2349: the file size in bytes (0 in a read request, asking the server for it).
    pub tsize: Option<u64>,
    /// RFC 7440: DATA packets per acknowledgement, 1..=65535.
    pub windowsize: Option<u16>,
}

impl Options {
    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }
}

/// A read or write request (RFC 1350 section 5, options per RFC 2347 section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Raw bytes: the server decides what a valid name is (UTF-8, length, path rules).
    pub filename: &'a [u8],
    pub mode: Mode,
    pub options: Options,
}

/// One TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    /// `message` is what the peer sent, without its terminating NUL (not necessarily UTF-8).
    Error {
        code: ErrorCode,
        message: &'a [u8],
    },
    Oack(Options),
}

/// Why bytes are not a TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TftpDecodeError {
    #[error("packet shorter than its fixed fields")]
    Truncated,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("request without a NUL-terminated file name and mode")]
    UnterminatedRequest,
    #[error("empty file name")]
    EmptyFilename,
    #[error("unknown transfer mode")]
    UnknownMode,
}

impl fmt::Display for Mode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Decode one datagram.
pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, TftpDecodeError> {
    let (opcode, rest) = split_u16(bytes).ok_or(TftpDecodeError::Truncated)?;
    match opcode {
        opcode::RRQ => decode_request(rest).map(Packet::Rrq),
        opcode::WRQ => decode_request(rest).map(Packet::Wrq),
        opcode::DATA => {
            let (block, data) = split_u16(rest).ok_or(TftpDecodeError::Truncated)?;
            Ok(Packet::Data { block, data })
        }
        opcode::ACK => {
            // Trailing bytes after the block number are tolerated: some firmware pads.
            let (block, _) = split_u16(rest).ok_or(TftpDecodeError::Truncated)?;
            Ok(Packet::Ack { block })
        }
        opcode::ERROR => {
            let (code, message) = split_u16(rest).ok_or(TftpDecodeError::Truncated)?;
            // The message should end with a NUL (RFC 1350 section 5); take what is there.
            let message = match message.iter().position(|&byte| byte == 0) {
                Some(end) => message.get(..end).unwrap_or_default(),
                None => message,
            };
            Ok(Packet::Error {
                code: ErrorCode::from_u16(code),
                message,
            })
        }
        opcode::OACK => Ok(Packet::Oack(decode_options(rest))),
        other => Err(TftpDecodeError::UnknownOpcode(other)),
    }
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), rest))
}

/// Split off one NUL-terminated field.
fn split_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&byte| byte == 0)?;
    let field = bytes.get(..end)?;
    let rest = bytes.get(end + 1..)?;
    Some((field, rest))
}

fn decode_request(bytes: &[u8]) -> Result<Request<'_>, TftpDecodeError> {
    let (filename, rest) = split_field(bytes).ok_or(TftpDecodeError::UnterminatedRequest)?;
    let (mode, rest) = split_field(rest).ok_or(TftpDecodeError::UnterminatedRequest)?;
    if filename.is_empty() {
        return Err(TftpDecodeError::EmptyFilename);
    }
    let mode = Mode::parse(mode).ok_or(TftpDecodeError::UnknownMode)?;
    Ok(Request {
        filename,
        mode,
        options: decode_options(rest),
    })
}

/// Option name/value pairs (RFC 2347 section 2). Lenient, because boot firmware is: an empty
/// name ends the list (some clients pad requests with NULs), an unterminated pair is ignored,
/// names are case-insensitive, and a later duplicate replaces an earlier one.
fn decode_options(mut bytes: &[u8]) -> Options {
    let mut options = Options::default();
    while let Some((name, rest)) = split_field(bytes) {
        if name.is_empty() {
            break;
        }
        let Some((value, rest)) = split_field(rest) else {
            break;
        };
        bytes = rest;
        let number = parse_decimal(value);
        if name.eq_ignore_ascii_case(b"blksize") {
            options.blksize = number
                .and_then(|value| u16::try_from(value).ok())
                .filter(|value| (MIN_BLKSIZE..=MAX_BLKSIZE).contains(value));
        } else if name.eq_ignore_ascii_case(b"timeout") {
            options.timeout = number
                .and_then(|value| u8::try_from(value).ok())
                .filter(|value| *value >= 1);
        } else if name.eq_ignore_ascii_case(b"tsize") {
            options.tsize = number;
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            options.windowsize = number
                .and_then(|value| u16::try_from(value).ok())
                .filter(|value| *value >= 1);
        }
    }
    options
}

/// A non-empty decimal number of at most 20 digits that fits a `u64`.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    text.iter().try_fold(0u64, |value, &byte| {
        let digit = u64::from(byte.checked_sub(b'0').filter(|digit| *digit <= 9)?);
        value.checked_mul(10)?.checked_add(digit)
    })
}

fn push_option(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(value.to_string().as_bytes());
    out.push(0);
}

fn encode_options(options: &Options, out: &mut Vec<u8>) {
    if let Some(blksize) = options.blksize {
        push_option(out, "blksize", u64::from(blksize));
    }
    if let Some(tsize) = options.tsize {
        push_option(out, "tsize", tsize);
    }
    if let Some(timeout) = options.timeout {
        push_option(out, "timeout", u64::from(timeout));
    }
    if let Some(windowsize) = options.windowsize {
        push_option(out, "windowsize", u64::from(windowsize));
    }
}

/// Append an RRQ (`write == false`) or WRQ. A NUL inside `filename` would end it early on the
/// wire; that is the caller's concern (tests use it on purpose).
pub fn encode_request(write: bool, request: &Request<'_>, out: &mut Vec<u8>) {
    let opcode = if write { opcode::WRQ } else { opcode::RRQ };
    out.extend_from_slice(&opcode.to_be_bytes());
    out.extend_from_slice(request.filename);
    out.push(0);
    out.extend_from_slice(request.mode.as_str().as_bytes());
    out.push(0);
    encode_options(&request.options, out);
}

/// Append a DATA packet (RFC 1350 section 5).
pub fn encode_data(block: u16, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&opcode::DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

/// Append an ACK packet.
pub fn encode_ack(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&opcode::ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Append an ERROR packet. NUL bytes in `message` are dropped so that the packet stays
/// well-formed.
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&opcode::ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    out.extend(message.bytes().filter(|&byte| byte != 0));
    out.push(0);
}

/// Append an OACK packet (RFC 2347 section 2) with the accepted options.
pub fn encode_oack(options: &Options, out: &mut Vec<u8>) {
    out.extend_from_slice(&opcode::OACK.to_be_bytes());
    encode_options(options, out);
}

/// Append `packet`.
pub fn encode(packet: &Packet<'_>, out: &mut Vec<u8>) {
    match packet {
        Packet::Rrq(request) => encode_request(false, request, out),
        Packet::Wrq(request) => encode_request(true, request, out),
        Packet::Data { block, data } => encode_data(*block, data, out),
        Packet::Ack { block } => encode_ack(*block, out),
        Packet::Error { code, message } => {
            out.extend_from_slice(&opcode::ERROR.to_be_bytes());
            out.extend_from_slice(&code.to_u16().to_be_bytes());
            out.extend(message.iter().copied().filter(|&byte| byte != 0));
            out.push(0);
        }
        Packet::Oack(options) => encode_oack(options, out),
    }
}

/// Convert to netascii (RFC 764 as used by RFC 1350): LF becomes CR LF and a bare CR becomes
/// CR NUL.
pub fn to_netascii(bytes: &[u8]) -> Vec<u8> {
    let extra = bytes
        .iter()
        .filter(|&&byte| byte == b'\n' || byte == b'\r')
        .count();
    let mut out = Vec::with_capacity(bytes.len() + extra);
    for &byte in bytes {
        match byte {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            other => out.push(other),
        }
    }
    out
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

    fn encoded(packet: &Packet<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(packet, &mut out);
        out
    }

    #[test]
    fn decodes_an_atftp_read_request() {
        // What `atftp --option "blksize 1468" --option "tsize 0" --option "windowsize 16"`
        // sends (written out from a capture).
        let bytes =
            b"\x00\x01big.bin\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00";
        let Ok(Packet::Rrq(request)) = decode(bytes) else {
            panic!("not an RRQ: {:?}", decode(bytes));
        };
        assert_eq!(request.filename, b"big.bin");
        assert_eq!(request.mode, Mode::Octet);
        assert_eq!(
            request.options,
            Options {
                blksize: Some(1468),
                timeout: None,
                tsize: Some(0),
                windowsize: Some(16),
            }
        );
    }

    #[test]
    fn options_are_case_insensitive_and_out_of_range_values_ignored() {
        let bytes = b"\x00\x01f\x00OCTET\x00BLKSIZE\x0070000\x00Timeout\x000\x00tsize\x00x1\x00windowsize\x000\x00foo\x00bar\x00";
        let Ok(Packet::Rrq(request)) = decode(bytes) else {
            panic!("not an RRQ");
        };
        assert_eq!(request.mode, Mode::Octet);
        assert!(request.options.is_empty(), "{:?}", request.options);
    }

    #[test]
    fn padding_and_unterminated_options_are_tolerated() {
        let bytes = b"\x00\x01f\x00netascii\x00blksize\x001024\x00\x00\x00\x00";
        let Ok(Packet::Rrq(request)) = decode(bytes) else {
            panic!("not an RRQ");
        };
        assert_eq!(request.options.blksize, Some(1024));
        let bytes = b"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x00";
        let Ok(Packet::Rrq(request)) = decode(bytes) else {
            panic!("not an RRQ");
        };
        assert_eq!(request.options.tsize, Some(0));
        assert_eq!(request.options.blksize, None);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert_eq!(decode(b""), Err(TftpDecodeError::Truncated));
        assert_eq!(decode(b"\x00"), Err(TftpDecodeError::Truncated));
        assert_eq!(decode(b"\x00\x09"), Err(TftpDecodeError::UnknownOpcode(9)));
        assert_eq!(
            decode(b"\x00\x01file"),
            Err(TftpDecodeError::UnterminatedRequest)
        );
        assert_eq!(
            decode(b"\x00\x01file\x00octet"),
            Err(TftpDecodeError::UnterminatedRequest)
        );
        assert_eq!(
            decode(b"\x00\x01\x00octet\x00"),
            Err(TftpDecodeError::EmptyFilename)
        );
        // A NUL inside the name makes the rest of the name the mode.
        assert_eq!(
            decode(b"\x00\x01a\x00b\x00octet\x00"),
            Err(TftpDecodeError::UnknownMode)
        );
        assert_eq!(decode(b"\x00\x03\x00"), Err(TftpDecodeError::Truncated));
        assert_eq!(decode(b"\x00\x04\x00"), Err(TftpDecodeError::Truncated));
    }

    #[test]
    fn decodes_uefi_option_refusal() {
        let bytes = b"\x00\x05\x00\x08tsize only\x00";
        assert_eq!(
            decode(bytes),
            Ok(Packet::Error {
                code: ErrorCode::OptionRefused,
                message: b"tsize only",
            })
        );
        // Without the terminating NUL the message is still taken.
        assert_eq!(
            decode(b"\x00\x05\x00\x63abc"),
            Ok(Packet::Error {
                code: ErrorCode::Other(99),
                message: b"abc",
            })
        );
    }

    #[test]
    fn round_trips() {
        let request = Request {
            filename: b"grub/grub.cfg",
            mode: Mode::Netascii,
            options: Options {
                blksize: Some(1468),
                timeout: Some(3),
                tsize: Some(123_456_789),
                windowsize: Some(4),
            },
        };
        let packets = [
            Packet::Rrq(request),
            Packet::Wrq(request),
            Packet::Data {
                block: 65535,
                data: b"hello",
            },
            Packet::Data {
                block: 0,
                data: b"",
            },
            Packet::Ack { block: 7 },
            Packet::Error {
                code: ErrorCode::AccessViolation,
                message: b"no",
            },
            Packet::Oack(request.options),
            Packet::Oack(Options::default()),
        ];
        for packet in packets {
            let bytes = encoded(&packet);
            assert_eq!(decode(&bytes), Ok(packet), "{bytes:?}");
        }
    }

    #[test]
    fn oack_wire_format() {
        let mut out = Vec::new();
        encode_oack(
            &Options {
                blksize: Some(1468),
                tsize: Some(42),
                timeout: None,
                windowsize: Some(16),
            },
            &mut out,
        );
        assert_eq!(
            out,
            b"\x00\x06blksize\x001468\x00tsize\x0042\x00windowsize\x0016\x00"
        );
        out.clear();
        encode_error(ErrorCode::FileNotFound, "no\0pe", &mut out);
        assert_eq!(out, b"\x00\x05\x00\x01nope\x00");
    }

    #[test]
    fn netascii_conversion() {
        assert_eq!(to_netascii(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
        assert_eq!(to_netascii(b""), b"");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Arbitrary bytes never panic, and whatever decodes re-encodes to something that
        /// decodes to the same packet.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Ok(packet) = decode(&bytes) {
                let again = encoded(&packet);
                proptest::prop_assert_eq!(decode(&again), Ok(packet));
            }
        }

        /// Requests built from arbitrary option pairs never panic, and known options within
        /// range survive.
        #[test]
        fn random_options_never_panic(
            pairs in proptest::collection::vec((
                proptest::sample::select(vec!["blksize", "TSIZE", "timeout", "windowsize", "x", ""]),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            ), 0..8),
        ) {
            let mut bytes = b"\x00\x01file\x00octet\x00".to_vec();
            for (name, value) in &pairs {
                bytes.extend_from_slice(name.as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(value);
                bytes.push(0);
            }
            let _ = decode(&bytes);
        }
    }
}
