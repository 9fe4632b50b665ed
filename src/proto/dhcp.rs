//! DHCPv4 messages (RFC 2131, options RFC 2132 and the PXE/iPXE extensions): a validating
//! layer over the `dhcproto` codec, typed access to the options the boot service uses, and
//! reply encoding.
//!
//! `dhcproto` trusts option lengths: a wrong length trips a `debug_assert!` (a panic in debug
//! builds), an `hlen` above 16 makes `Message::chaddr` slice out of bounds, and an option that
//! fails to decode silently ends the option list. So [`decode_request`] checks the fixed header
//! and walks every option TLV, checking each length against the RFC, *before* handing the bytes
//! to `dhcproto`. Nothing here panics on untrusted bytes, does I/O or knows about policy.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// UDP port of DHCP servers and relays (RFC 2131 section 4.1).
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// UDP port of the PXE boot server (proxyDHCP, PXE specification 2.1).
pub const PXE_SERVER_PORT: u16 = 4011;

/// Length of the BOOTP fixed header up to and including `file` (RFC 2131 section 2).
const FIXED_HEADER_LENGTH: usize = 236;
/// The magic cookie that starts the options (RFC 2131 section 3).
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of `hlen` in the fixed header.
const HLEN_OFFSET: usize = 2;
/// The `file` header field holds a NUL-terminated name of at most this many bytes.
pub const MAX_FILE_FIELD_LENGTH: usize = 127;
/// Largest message we accept (an Ethernet jumbo frame); anything longer is not DHCP.
pub const MAX_MESSAGE_LENGTH: usize = 9000;

/// Option codes this module reads or writes (RFC 2132 and later).
pub mod code {
    pub const PAD: u8 = 0;
    pub const HOST_NAME: u8 = 12;
    pub const REQUESTED_ADDRESS: u8 = 50;
    pub const OPTION_OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_IDENTIFIER: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_IDENTIFIER: u8 = 61;
    pub const USER_CLASS: u8 = 77;
    pub const RELAY_AGENT_INFORMATION: u8 = 82;
    pub const CLIENT_ARCHITECTURE: u8 = 93;
    pub const CLIENT_NETWORK_INTERFACE: u8 = 94;
    pub const CLIENT_MACHINE_IDENTIFIER: u8 = 97;
    pub const IPXE_ENCAPSULATED: u8 = 175;
    pub const END: u8 = 255;
}

/// Why a datagram is not a usable DHCP request.
#[derive(Debug, thiserror::Error)]
pub enum DhcpDecodeError {
    #[error("message of {0} bytes is shorter than the fixed header and magic cookie")]
    Truncated(usize),
    #[error("message of {0} bytes is longer than any DHCP message")]
    TooLong(usize),
    #[error("op {0} is not BOOTREQUEST")]
    NotARequest(u8),
    #[error("op {0} is not BOOTREPLY")]
    NotAReply(u8),
    #[error("hardware address length {0} exceeds the 16-byte chaddr field")]
    HardwareAddressLength(u8),
    #[error("magic cookie missing")]
    MagicCookie,
    #[error("option {code} at offset {offset} runs past the end of the message")]
    OptionOverrun { code: u8, offset: usize },
    #[error("option {code} has length {length}, expected {expected}")]
    OptionLength {
        code: u8,
        length: usize,
        expected: &'static str,
    },
    #[error("options do not end with the end option")]
    MissingEnd,
    #[error("no DHCP message type (option 53)")]
    MissingMessageType,
    #[error("unknown DHCP message type {0}")]
    UnknownMessageType(u8),
    #[error("codec rejected the message")]
    Codec(#[source] dhcproto::error::DecodeError),
}

/// Why a reply could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum DhcpEncodeError {
    #[error("boot file name of {0} bytes does not fit the 128-byte file field")]
    FileTooLong(usize),
    #[error("codec failed to encode the reply")]
    Codec(#[source] dhcproto::error::EncodeError),
}

/// DHCP message type, option 53 (RFC 2132 section 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    fn from_code(value: u8) -> Option<MessageType> {
        Some(match value {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    fn to_codec(self) -> v4::MessageType {
        match self {
            MessageType::Discover => v4::MessageType::Discover,
            MessageType::Offer => v4::MessageType::Offer,
            MessageType::Request => v4::MessageType::Request,
            MessageType::Decline => v4::MessageType::Decline,
            MessageType::Ack => v4::MessageType::Ack,
            MessageType::Nak => v4::MessageType::Nak,
            MessageType::Release => v4::MessageType::Release,
            MessageType::Inform => v4::MessageType::Inform,
        }
    }

    /// Upper-case name as in RFC 2131 (`DISCOVER`).
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DISCOVER",
            MessageType::Offer => "OFFER",
            MessageType::Request => "REQUEST",
            MessageType::Decline => "DECLINE",
            MessageType::Ack => "ACK",
            MessageType::Nak => "NAK",
            MessageType::Release => "RELEASE",
            MessageType::Inform => "INFORM",
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The upper-case name of [`MessageType::name`] (`DISCOVER`), as the event log stores it.
impl std::str::FromStr for MessageType {
    type Err = UnknownMessageType;
    fn from_str(text: &str) -> Result<MessageType, UnknownMessageType> {
        (1..=8)
            .filter_map(MessageType::from_code)
            .find(|message_type| message_type.name() == text)
            .ok_or_else(|| UnknownMessageType(text.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown DHCP message type name '{0}'")]
pub struct UnknownMessageType(String);

/// An Ethernet (or other 6-byte) hardware address; the key of leases and reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Parse `aa:bb:cc:dd:ee:ff` (also with `-` separators, any case).
    pub fn parse(text: &str) -> Option<MacAddress> {
        let mut bytes = [0u8; 6];
        let mut parts = text.trim().split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddress(bytes))
    }
}

impl std::fmt::Display for MacAddress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

impl std::str::FromStr for MacAddress {
    type Err = InvalidMacAddress;
    fn from_str(text: &str) -> Result<MacAddress, InvalidMacAddress> {
        MacAddress::parse(text).ok_or_else(|| InvalidMacAddress(text.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a MAC address")]
pub struct InvalidMacAddress(String);

/// Client machine identifier, option 97 (RFC 4578 section 2.3): type 0 then a 16-byte GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientUuid(pub [u8; 16]);

impl ClientUuid {
    /// The GUID as PXE firmware sends it: the first three fields little-endian (SMBIOS order),
    /// which is how `dmidecode` and `id.uuid` print it.
    pub fn to_smbios_string(&self) -> String {
        let b = self.0;
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3],
            b[2],
            b[1],
            b[0],
            b[5],
            b[4],
            b[7],
            b[6],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }

    /// Placeholder UUIDs that firmware sends when it has none (reference 9.4); never used to
    /// identify a node.
    pub fn is_placeholder(&self) -> bool {
        let text = self.to_smbios_string();
        self.0 == [0; 16]
            || self.0 == [0xff; 16]
            || text.starts_with("00112233-")
            || text == "03000200-0400-0500-0006-000700080009"
            || text.starts_with("20202020-")
    }
}

/// Processor/firmware architecture, option 93 (RFC 4578 section 2.1; IANA "Processor
/// Architecture Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientArchitecture(pub u16);

/// The firmware family an architecture code stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    PcBios,
    EfiIa32,
    EfiX64,
    EfiByteCode,
    EfiArm32,
    EfiArm64,
    EfiRiscV32,
    EfiRiscV64,
    EfiRiscV128,
    EfiMips32,
    EfiMips64,
    EfiSunway32,
    EfiSunway64,
    EfiLoongArch32,
    EfiLoongArch64,
    UbootArm32,
    UbootArm64,
    /// Itanium, PowerPC, POWER OPAL, s390, Raspberry Pi rpiboot and deprecated codes.
    Other,
}

/// How the firmware fetches its boot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootTransport {
    /// TFTP (PXE).
    Tftp,
    /// HTTP(S) (UEFI HTTP boot and the u-boot/PC-AT HTTP variants).
    Http,
}

impl ClientArchitecture {
    /// Firmware family, transport and the IANA description of every registered code.
    /// Code 9 is "EFI BC" in the registry but many x64 UEFI firmwares send it (the RFC 4578
    /// erratum swapped 7 and 9), so it is treated as x64 UEFI, as the reference does.
    pub fn describe(self) -> (Firmware, BootTransport, &'static str) {
        use BootTransport::{Http, Tftp};
        use Firmware::*;
        match self.0 {
            0x00 => (PcBios, Tftp, "x86 BIOS"),
            0x01 => (Other, Tftp, "NEC/PC98 (deprecated)"),
            0x02 => (Other, Tftp, "Itanium"),
            0x03 => (Other, Tftp, "DEC Alpha (deprecated)"),
            0x04 => (Other, Tftp, "Arc x86 (deprecated)"),
            0x05 => (Other, Tftp, "Intel Lean Client (deprecated)"),
            0x06 => (EfiIa32, Tftp, "x86 UEFI"),
            0x07 => (EfiX64, Tftp, "x64 UEFI"),
            0x08 => (Other, Tftp, "EFI Xscale (deprecated)"),
            0x09 => (EfiX64, Tftp, "EBC (sent by x64 UEFI)"),
            0x0a => (EfiArm32, Tftp, "ARM 32-bit UEFI"),
            0x0b => (EfiArm64, Tftp, "ARM 64-bit UEFI"),
            0x0c => (Other, Tftp, "PowerPC Open Firmware"),
            0x0d => (Other, Tftp, "PowerPC ePAPR"),
            0x0e => (Other, Tftp, "POWER OPAL v3"),
            0x0f => (EfiIa32, Http, "x86 UEFI HTTP boot"),
            0x10 => (EfiX64, Http, "x64 UEFI HTTP boot"),
            0x11 => (EfiByteCode, Http, "EBC HTTP boot"),
            0x12 => (EfiArm32, Http, "ARM 32-bit UEFI HTTP boot"),
            0x13 => (EfiArm64, Http, "ARM 64-bit UEFI HTTP boot"),
            0x14 => (PcBios, Http, "PC/AT BIOS HTTP boot"),
            0x15 => (UbootArm32, Tftp, "ARM 32-bit u-boot"),
            0x16 => (UbootArm64, Tftp, "ARM 64-bit u-boot"),
            0x17 => (UbootArm32, Http, "ARM 32-bit u-boot HTTP boot"),
            0x18 => (UbootArm64, Http, "ARM 64-bit u-boot HTTP boot"),
            0x19 => (EfiRiscV32, Tftp, "RISC-V 32-bit UEFI"),
            0x1a => (EfiRiscV32, Http, "RISC-V 32-bit UEFI HTTP boot"),
            0x1b => (EfiRiscV64, Tftp, "RISC-V 64-bit UEFI"),
            0x1c => (EfiRiscV64, Http, "RISC-V 64-bit UEFI HTTP boot"),
            0x1d => (EfiRiscV128, Tftp, "RISC-V 128-bit UEFI"),
            0x1e => (EfiRiscV128, Http, "RISC-V 128-bit UEFI HTTP boot"),
            0x1f => (Other, Tftp, "s390 Basic"),
            0x20 => (Other, Tftp, "s390 Extended"),
            0x21 => (EfiMips32, Tftp, "MIPS 32-bit UEFI"),
            0x22 => (EfiMips64, Tftp, "MIPS 64-bit UEFI"),
            0x23 => (EfiSunway32, Tftp, "Sunway 32-bit UEFI"),
            0x24 => (EfiSunway64, Tftp, "Sunway 64-bit UEFI"),
            0x25 => (EfiLoongArch32, Tftp, "LoongArch 32-bit UEFI"),
            0x26 => (EfiLoongArch32, Http, "LoongArch 32-bit UEFI HTTP boot"),
            0x27 => (EfiLoongArch64, Tftp, "LoongArch 64-bit UEFI"),
            0x28 => (EfiLoongArch64, Http, "LoongArch 64-bit UEFI HTTP boot"),
            0x29 => (Other, Tftp, "ARM rpiboot"),
            _ => (Other, Tftp, "unassigned"),
        }
    }
}

/// A validated DHCP request (op BOOTREQUEST with a known message type): the header fields of
/// RFC 2131 section 2 and the options the boot service reads.
#[derive(Debug, Clone)]
pub struct DhcpRequest {
    pub message_type: MessageType,
    pub xid: u32,
    pub secs: u16,
    /// The broadcast bit of `flags`.
    pub broadcast: bool,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// `htype` (1 = Ethernet).
    pub htype: u8,
    /// `chaddr` truncated to `hlen` bytes (at most 16).
    pub chaddr: Vec<u8>,
    /// The client MAC when `htype` is Ethernet and `hlen` is 6.
    pub mac: Option<MacAddress>,
    pub host_name: Option<String>,
    /// Option 50.
    pub requested_address: Option<Ipv4Addr>,
    /// Option 54.
    pub server_identifier: Option<Ipv4Addr>,
    /// Option 55.
    pub parameter_request_list: Vec<u8>,
    /// Option 57.
    pub max_message_size: Option<u16>,
    /// Option 60, raw (`PXEClient:Arch:00007:UNDI:003016`, `HTTPClient:Arch:00016`).
    pub vendor_class: Option<Vec<u8>>,
    /// Option 61, raw.
    pub client_identifier: Option<Vec<u8>>,
    /// Option 77, raw (iPXE sends the bare string `iPXE`, not RFC 3004 length-prefixed data).
    pub user_class: Option<Vec<u8>>,
    /// Option 82 exactly as received, echoed in replies (RFC 3046 section 2.2).
    pub relay_agent_information: Option<Vec<u8>>,
    /// Option 93: every architecture the client lists, in order.
    pub client_architectures: Vec<ClientArchitecture>,
    /// Option 94 (type, major, minor).
    pub client_network_interface: Option<(u8, u8, u8)>,
    /// Option 97 when it has the RFC 4578 form (type 0 and 16 bytes).
    pub client_uuid: Option<ClientUuid>,
    /// Option 97 raw, echoed in replies.
    pub client_machine_identifier: Option<Vec<u8>>,
    /// Option 175, iPXE's encapsulated options (present only when iPXE is the client).
    pub ipxe_encapsulated: Option<Vec<u8>>,
}

impl DhcpRequest {
    /// The first architecture of option 93.
    pub fn architecture(&self) -> Option<ClientArchitecture> {
        self.client_architectures.first().copied()
    }

    /// Vendor class as text (lossy), for logs.
    pub fn vendor_class_text(&self) -> Option<String> {
        self.vendor_class
            .as_deref()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }

    /// Whether the vendor class starts with `PXEClient`.
    pub fn is_pxe_client(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|class| class.starts_with(b"PXEClient"))
    }

    /// Whether the vendor class starts with `HTTPClient` (UEFI HTTP boot).
    pub fn is_http_client(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|class| class.starts_with(b"HTTPClient"))
    }

    /// Whether the client is iPXE itself: user class `iPXE` (raw, or as an RFC 3004 class) or
    /// iPXE's encapsulated option 175.
    pub fn is_ipxe(&self) -> bool {
        if self.ipxe_encapsulated.is_some() {
            return true;
        }
        let Some(user_class) = self.user_class.as_deref() else {
            return false;
        };
        user_class == b"iPXE" || user_class.windows(5).any(|window| window == b"\x04iPXE")
    }
}

/// How strictly an option's length is checked before decoding.
#[derive(Clone, Copy)]
enum LengthRule {
    Exact(usize, &'static str),
    MultipleOf(usize, &'static str),
    AtLeast(usize, &'static str),
    Any,
}

/// The length rule of each option, from RFC 2132 and the RFCs defining later options; also
/// every length `dhcproto` asserts or subtracts from.
fn length_rule(code: u8) -> LengthRule {
    use LengthRule::*;
    match code {
        // Single addresses.
        1 | 16 | 28 | 32 | 50 | 54 | 118 | 150 => Exact(4, "4"),
        // Address lists.
        3..=11 | 41 | 42 | 44 | 45 | 48 | 49 | 65 | 68..=76 | 89 | 92 => {
            MultipleOf(4, "a non-zero multiple of 4")
        }
        // Address pairs.
        21 | 33 => MultipleOf(8, "a non-zero multiple of 8"),
        // 16-bit values.
        13 | 22 | 26 | 57 => Exact(2, "2"),
        // 32-bit values (time offset, timers, lease times, bulk lease query times).
        2 | 24 | 35 | 38 | 51 | 58 | 59 | 91 | 108 | 152..=155 => Exact(4, "4"),
        // Single bytes and flags.
        19 | 20 | 23 | 27 | 29..=31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 158 | 159 => {
            Exact(1, "1")
        }
        // Rapid commit has no data.
        80 => Exact(0, "0"),
        // Client FQDN: flags, two rcodes, then the name (dhcproto subtracts 3).
        81 => AtLeast(3, "at least 3"),
        // Client system architecture: a list of 16-bit types.
        93 => MultipleOf(2, "a non-zero multiple of 2"),
        94 => Exact(3, "3"),
        // Bulk lease query status: a code byte then text (dhcproto subtracts 1).
        151 => AtLeast(1, "at least 1"),
        // Text and opaque options must not be empty (RFC 2132 section 2: minimum length 1).
        12 | 15 | 17 | 18 | 40 | 43 | 55 | 56 | 60 | 61 | 64 | 66 | 67 | 77 | 82 | 97 | 119
        | 121 => AtLeast(1, "at least 1"),
        _ => Any,
    }
}

fn check_length(code: u8, length: usize) -> Result<(), DhcpDecodeError> {
    let ok = match length_rule(code) {
        LengthRule::Exact(expected, _) => length == expected,
        LengthRule::MultipleOf(unit, _) => length >= unit && length.is_multiple_of(unit),
        LengthRule::AtLeast(minimum, _) => length >= minimum,
        LengthRule::Any => true,
    };
    if ok {
        return Ok(());
    }
    let expected = match length_rule(code) {
        LengthRule::Exact(_, text)
        | LengthRule::MultipleOf(_, text)
        | LengthRule::AtLeast(_, text) => text,
        LengthRule::Any => "any",
    };
    Err(DhcpDecodeError::OptionLength {
        code,
        length,
        expected,
    })
}

/// Options of interest, gathered during the length walk. Consecutive instances of one code
/// are concatenated as RFC 3396 says (and as `dhcproto` does).
#[derive(Default)]
struct RawOptions {
    values: Vec<(u8, Vec<u8>)>,
}

impl RawOptions {
    fn get(&self, code: u8) -> Option<&[u8]> {
        self.values
            .iter()
            .rev()
            .find(|(candidate, _)| *candidate == code)
            .map(|(_, value)| value.as_slice())
    }
}

/// Options whose raw bytes the request model keeps.
fn is_kept(code: u8) -> bool {
    matches!(
        code,
        code::MESSAGE_TYPE
            | code::USER_CLASS
            | code::RELAY_AGENT_INFORMATION
            | code::CLIENT_ARCHITECTURE
            | code::CLIENT_MACHINE_IDENTIFIER
            | code::IPXE_ENCAPSULATED
            | code::VENDOR_CLASS
            | code::CLIENT_IDENTIFIER
            | code::PARAMETER_REQUEST_LIST
    )
}

/// Walk the option TLVs after the magic cookie, checking every length (RFC 2132 section 2,
/// RFC 3396 concatenation), and keep the raw values of the options in [`is_kept`].
fn walk_options(options: &[u8], base_offset: usize) -> Result<RawOptions, DhcpDecodeError> {
    walk_options_keeping(options, base_offset, is_kept)
}

/// [`walk_options`] keeping the options for which `is_kept` holds.
fn walk_options_keeping(
    options: &[u8],
    base_offset: usize,
    is_kept: fn(u8) -> bool,
) -> Result<RawOptions, DhcpDecodeError> {
    let mut raw = RawOptions::default();
    // The run of consecutive instances of one code being concatenated: (code, length).
    let mut run: Option<(u8, usize)> = None;
    let mut offset = 0usize;
    loop {
        let Some(&option_code) = options.get(offset) else {
            if let Some((code, length)) = run {
                check_length(code, length)?;
            }
            return Err(DhcpDecodeError::MissingEnd);
        };
        if option_code == code::PAD || option_code == code::END {
            if let Some((code, length)) = run.take() {
                check_length(code, length)?;
            }
            if option_code == code::END {
                return Ok(raw);
            }
            offset += 1;
            continue;
        }
        let Some(&length_byte) = options.get(offset + 1) else {
            return Err(DhcpDecodeError::OptionOverrun {
                code: option_code,
                offset: base_offset + offset,
            });
        };
        let length = usize::from(length_byte);
        let Some(value) = options.get(offset + 2..offset + 2 + length) else {
            return Err(DhcpDecodeError::OptionOverrun {
                code: option_code,
                offset: base_offset + offset,
            });
        };
        match run {
            Some((code, ref mut total)) if code == option_code => {
                *total += length;
                if is_kept(option_code)
                    && let Some((_, kept)) = raw.values.last_mut()
                {
                    kept.extend_from_slice(value);
                }
            }
            _ => {
                if let Some((code, total)) = run {
                    check_length(code, total)?;
                }
                run = Some((option_code, length));
                if is_kept(option_code) {
                    raw.values.push((option_code, value.to_vec()));
                }
            }
        }
        offset += 2 + length;
    }
}

/// Validate and decode a datagram received on the server port into a [`DhcpRequest`].
///
/// Checks, in order: length (at least the 236-byte header plus the cookie), `op` = 1
/// (BOOTREQUEST), `hlen` ≤ 16, the magic cookie, every option length, the end option, and a
/// known message type; only then is `dhcproto` asked to decode.
pub fn decode_request(datagram: &[u8]) -> Result<DhcpRequest, DhcpDecodeError> {
    let options_offset = FIXED_HEADER_LENGTH + MAGIC_COOKIE.len();
    if datagram.len() < options_offset {
        return Err(DhcpDecodeError::Truncated(datagram.len()));
    }
    if datagram.len() > MAX_MESSAGE_LENGTH {
        return Err(DhcpDecodeError::TooLong(datagram.len()));
    }
    let op = datagram.first().copied().unwrap_or_default();
    if op != 1 {
        return Err(DhcpDecodeError::NotARequest(op));
    }
    let hlen = datagram.get(HLEN_OFFSET).copied().unwrap_or_default();
    if hlen > 16 {
        return Err(DhcpDecodeError::HardwareAddressLength(hlen));
    }
    if datagram.get(FIXED_HEADER_LENGTH..options_offset) != Some(&MAGIC_COOKIE[..]) {
        return Err(DhcpDecodeError::MagicCookie);
    }
    let options = datagram.get(options_offset..).unwrap_or_default();
    let raw = walk_options(options, options_offset)?;
    let message_type_value = raw
        .get(code::MESSAGE_TYPE)
        .and_then(|value| value.first().copied())
        .ok_or(DhcpDecodeError::MissingMessageType)?;
    let message_type = MessageType::from_code(message_type_value)
        .ok_or(DhcpDecodeError::UnknownMessageType(message_type_value))?;

    let message =
        v4::Message::decode(&mut Decoder::new(datagram)).map_err(DhcpDecodeError::Codec)?;
    Ok(request_from_message(&message, message_type, &raw))
}

fn request_from_message(
    message: &v4::Message,
    message_type: MessageType,
    raw: &RawOptions,
) -> DhcpRequest {
    let options = message.opts();
    let address = |code: OptionCode| match options.get(code) {
        Some(DhcpOption::RequestedIpAddress(address) | DhcpOption::ServerIdentifier(address)) => {
            Some(*address)
        }
        _ => None,
    };
    let htype = u8::from(message.htype());
    // INVARIANT: hlen ≤ 16 was checked before decoding, so `chaddr()` cannot slice out of
    // bounds.
    let chaddr = message.chaddr().to_vec();
    let mac = (htype == 1)
        .then(|| <[u8; 6]>::try_from(chaddr.as_slice()).ok())
        .flatten()
        .map(MacAddress);
    let client_machine_identifier = raw.get(code::CLIENT_MACHINE_IDENTIFIER).map(<[u8]>::to_vec);
    let client_uuid =
        client_machine_identifier
            .as_deref()
            .and_then(|value| match value.split_first() {
                Some((0, guid)) => <[u8; 16]>::try_from(guid).ok().map(ClientUuid),
                _ => None,
            });
    let client_architectures = raw
        .get(code::CLIENT_ARCHITECTURE)
        .map(|value| {
            // The walk checked the length is a non-zero multiple of 2, so nothing is left over.
            let (pairs, _) = value.as_chunks::<2>();
            pairs
                .iter()
                .map(|pair| ClientArchitecture(u16::from_be_bytes(*pair)))
                .collect()
        })
        .unwrap_or_default();
    DhcpRequest {
        message_type,
        xid: message.xid(),
        secs: message.secs(),
        broadcast: message.flags().broadcast(),
        hops: message.hops(),
        ciaddr: message.ciaddr(),
        giaddr: message.giaddr(),
        htype,
        chaddr,
        mac,
        host_name: match options.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(name)) => Some(name.clone()),
            _ => None,
        },
        requested_address: address(OptionCode::RequestedIpAddress),
        server_identifier: address(OptionCode::ServerIdentifier),
        parameter_request_list: raw
            .get(code::PARAMETER_REQUEST_LIST)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        max_message_size: match options.get(OptionCode::MaxMessageSize) {
            Some(DhcpOption::MaxMessageSize(size)) => Some(*size),
            _ => None,
        },
        vendor_class: raw.get(code::VENDOR_CLASS).map(<[u8]>::to_vec),
        client_identifier: raw.get(code::CLIENT_IDENTIFIER).map(<[u8]>::to_vec),
        user_class: raw.get(code::USER_CLASS).map(<[u8]>::to_vec),
        relay_agent_information: raw.get(code::RELAY_AGENT_INFORMATION).map(<[u8]>::to_vec),
        client_architectures,
        client_network_interface: match options.get(OptionCode::ClientNetworkInterface) {
            Some(DhcpOption::ClientNetworkInterface(kind, major, minor)) => {
                Some((*kind, *major, *minor))
            }
            _ => None,
        },
        client_uuid,
        client_machine_identifier,
        ipxe_encapsulated: raw.get(code::IPXE_ENCAPSULATED).map(<[u8]>::to_vec),
    }
}

/// A reply to build: header fields and options. The server fills what its decision needs;
/// [`encode_reply`] copies `xid`, `flags`, `giaddr` and `chaddr` from the request and echoes
/// options 82 and 97 (RFC 3046 section 2.2, PXE specification).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyFields {
    pub yiaddr: Option<Ipv4Addr>,
    /// `siaddr`: the next server (TFTP) address.
    pub siaddr: Option<Ipv4Addr>,
    pub server_identifier: Option<Ipv4Addr>,
    pub lease_seconds: Option<u32>,
    pub renewal_seconds: Option<u32>,
    pub rebinding_seconds: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    pub host_name: Option<String>,
    pub ntp_servers: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    /// Boot file: goes to the `file` header field (at most 127 bytes) and option 67.
    pub boot_file: Option<String>,
    /// Option 60 in the reply (`PXEClient` or `HTTPClient`).
    pub vendor_class: Option<String>,
    /// Error text for a NAK (option 56).
    pub message: Option<String>,
}

/// A server's answer as a probing client sees it: enough to tell who answered which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerReply {
    pub xid: u32,
    pub message_type: MessageType,
    /// Option 54 (RFC 2132 section 9.7).
    pub server_identifier: Option<Ipv4Addr>,
}

/// Validate and decode a BOOTREPLY (`op` = 2) received on the server port: the answer of another
/// DHCP server to a probe ([`encode_probe_discover`]). The same checks as [`decode_request`]
/// (length, cookie, every option length, the end option), without `dhcproto`.
pub fn decode_reply(datagram: &[u8]) -> Result<ServerReply, DhcpDecodeError> {
    let options_offset = FIXED_HEADER_LENGTH + MAGIC_COOKIE.len();
    if datagram.len() < options_offset {
        return Err(DhcpDecodeError::Truncated(datagram.len()));
    }
    if datagram.len() > MAX_MESSAGE_LENGTH {
        return Err(DhcpDecodeError::TooLong(datagram.len()));
    }
    let op = datagram.first().copied().unwrap_or_default();
    if op != 2 {
        return Err(DhcpDecodeError::NotAReply(op));
    }
    if datagram.get(FIXED_HEADER_LENGTH..options_offset) != Some(&MAGIC_COOKIE[..]) {
        return Err(DhcpDecodeError::MagicCookie);
    }
    let xid = datagram
        .get(4..8)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_be_bytes)
        .ok_or(DhcpDecodeError::Truncated(datagram.len()))?;
    let options = datagram.get(options_offset..).unwrap_or_default();
    let raw = walk_options_keeping(options, options_offset, |code| {
        code == code::MESSAGE_TYPE || code == code::SERVER_IDENTIFIER
    })?;
    let message_type_value = raw
        .get(code::MESSAGE_TYPE)
        .and_then(|value| value.first().copied())
        .ok_or(DhcpDecodeError::MissingMessageType)?;
    let message_type = MessageType::from_code(message_type_value)
        .ok_or(DhcpDecodeError::UnknownMessageType(message_type_value))?;
    let server_identifier = raw
        .get(code::SERVER_IDENTIFIER)
        .and_then(|value| <[u8; 4]>::try_from(value).ok())
        .map(Ipv4Addr::from);
    Ok(ServerReply {
        xid,
        message_type,
        server_identifier,
    })
}

/// The client identifier (option 61) of probe DISCOVERs: type 0 and a text anyone reading a
/// capture or a foreign server's log recognises.
pub const PROBE_CLIENT_IDENTIFIER: &[u8] = b"\0confluent-dhcp-probe";

/// A DISCOVER probing a segment for other DHCP servers (RFC 2131 section 4.4.1), sent the way a
/// relay forwards one (`giaddr` = our address, `hops` = 1) so that servers answer to our server
/// port (RFC 2131 section 4.1) and no client port has to be opened next to a host's own DHCP
/// client.
pub fn encode_probe_discover(
    xid: u32,
    chaddr: [u8; 6],
    giaddr: Ipv4Addr,
) -> Result<Vec<u8>, DhcpEncodeError> {
    let mut message = v4::Message::default();
    message
        .set_opcode(v4::Opcode::BootRequest)
        .set_htype(v4::HType::Eth)
        .set_hops(1)
        .set_xid(xid)
        .set_giaddr(giaddr)
        .set_chaddr(&chaddr);
    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(v4::MessageType::Discover));
    options.insert(DhcpOption::ClientIdentifier(
        PROBE_CLIENT_IDENTIFIER.to_vec(),
    ));
    options.insert(DhcpOption::ParameterRequestList(vec![
        v4::OptionCode::SubnetMask,
        v4::OptionCode::Router,
        v4::OptionCode::ServerIdentifier,
    ]));
    let mut bytes = Vec::with_capacity(300);
    message
        .encode(&mut Encoder::new(&mut bytes))
        .map_err(encode_error)?;
    Ok(bytes)
}

fn encode_error(error: dhcproto::error::EncodeError) -> DhcpEncodeError {
    DhcpEncodeError::Codec(error)
}

/// Encode a reply (OFFER, ACK or NAK) to `request` (RFC 2131 section 4.3.1 table 3).
pub fn encode_reply(
    request: &DhcpRequest,
    message_type: MessageType,
    fields: &ReplyFields,
) -> Result<Vec<u8>, DhcpEncodeError> {
    let mut message = v4::Message::default();
    message
        .set_opcode(v4::Opcode::BootReply)
        .set_htype(v4::HType::from(request.htype))
        .set_xid(request.xid)
        .set_flags(if request.broadcast {
            v4::Flags::default().set_broadcast()
        } else {
            v4::Flags::default()
        })
        .set_giaddr(request.giaddr)
        .set_chaddr(&request.chaddr);
    // RFC 2131 table 3: ciaddr is echoed only in ACKs to clients that already have an address.
    if message_type == MessageType::Ack {
        message.set_ciaddr(request.ciaddr);
    }
    if let Some(yiaddr) = fields.yiaddr {
        message.set_yiaddr(yiaddr);
    }
    if let Some(siaddr) = fields.siaddr {
        message.set_siaddr(siaddr);
    }
    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(message_type.to_codec()));
    if let Some(server) = fields.server_identifier {
        options.insert(DhcpOption::ServerIdentifier(server));
    }
    if let Some(text) = &fields.message {
        options.insert(DhcpOption::Message(text.clone()));
    }
    if message_type != MessageType::Nak {
        if let Some(seconds) = fields.lease_seconds {
            options.insert(DhcpOption::AddressLeaseTime(seconds));
        }
        if let Some(seconds) = fields.renewal_seconds {
            options.insert(DhcpOption::Renewal(seconds));
        }
        if let Some(seconds) = fields.rebinding_seconds {
            options.insert(DhcpOption::Rebinding(seconds));
        }
        if let Some(mask) = fields.subnet_mask {
            options.insert(DhcpOption::SubnetMask(mask));
        }
        if !fields.routers.is_empty() {
            options.insert(DhcpOption::Router(fields.routers.clone()));
        }
        if !fields.dns_servers.is_empty() {
            options.insert(DhcpOption::DomainNameServer(fields.dns_servers.clone()));
        }
        if let Some(domain) = &fields.domain_name {
            options.insert(DhcpOption::DomainName(domain.clone()));
        }
        if let Some(name) = &fields.host_name {
            options.insert(DhcpOption::Hostname(name.clone()));
        }
        if !fields.ntp_servers.is_empty() {
            options.insert(DhcpOption::NtpServers(fields.ntp_servers.clone()));
        }
        if let Some(mtu) = fields.mtu {
            options.insert(DhcpOption::InterfaceMtu(mtu));
        }
        if let Some(class) = &fields.vendor_class {
            options.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
        }
        if let Some(identifier) = &request.client_machine_identifier {
            options.insert(DhcpOption::ClientMachineIdentifier(identifier.clone()));
        }
        if let Some(file) = &fields.boot_file {
            if file.len() > MAX_FILE_FIELD_LENGTH {
                return Err(DhcpEncodeError::FileTooLong(file.len()));
            }
            options.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
            message.set_fname(file.as_bytes());
        }
    }
    if let Some(relay) = &request.relay_agent_information {
        // Echoed byte for byte as an opaque option; dhcproto writes option 82 last, as RFC
        // 3046 section 2.1 requires.
        message
            .opts_mut()
            .insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::RelayAgentInformation,
                relay.clone(),
            )));
    }
    let mut buffer = Vec::with_capacity(400);
    message
        .encode(&mut Encoder::new(&mut buffer))
        .map_err(encode_error)?;
    // Some PXE ROMs drop replies shorter than a BOOTP message (300 bytes, RFC 1542 section
    // 3.2.1); pad like other servers do.
    if buffer.len() < 300 {
        buffer.resize(300, 0);
    }
    Ok(buffer)
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
    fn probe_discover_decodes_as_a_relayed_discover_and_an_offer_to_it_is_recognised() {
        let bytes =
            encode_probe_discover(0xc0ff_ee01, [2, 0, 0, 1, 2, 3], Ipv4Addr::new(10, 1, 0, 1))
                .unwrap();
        let request = decode_request(&bytes).unwrap();
        assert_eq!(request.message_type, MessageType::Discover);
        assert_eq!(request.xid, 0xc0ff_ee01);
        assert_eq!(request.giaddr, Ipv4Addr::new(10, 1, 0, 1));
        let offer = encode_reply(
            &request,
            MessageType::Offer,
            &ReplyFields {
                server_identifier: Some(Ipv4Addr::new(10, 1, 0, 2)),
                yiaddr: Some(Ipv4Addr::new(10, 1, 0, 50)),
                ..ReplyFields::default()
            },
        )
        .unwrap();
        assert_eq!(
            decode_reply(&offer).unwrap(),
            ServerReply {
                xid: 0xc0ff_ee01,
                message_type: MessageType::Offer,
                server_identifier: Some(Ipv4Addr::new(10, 1, 0, 2)),
            }
        );
        assert!(matches!(
            decode_reply(&bytes),
            Err(DhcpDecodeError::NotAReply(1))
        ));
    }

    /// Build a request by hand: the fixed header, the cookie, then `options` (code, value).
    pub(crate) fn build_request(chaddr: [u8; 6], options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![0u8; FIXED_HEADER_LENGTH];
        bytes[0] = 1;
        bytes[1] = 1;
        bytes[2] = 6;
        bytes[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        bytes[10] = 0x80;
        bytes[28..34].copy_from_slice(&chaddr);
        bytes.extend_from_slice(&MAGIC_COOKIE);
        for (code, value) in options {
            bytes.push(*code);
            bytes.push(u8::try_from(value.len()).unwrap());
            bytes.extend_from_slice(value);
        }
        bytes.push(code::END);
        bytes
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/dhcp/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    #[test]
    fn hand_built_pxe_discover_decodes() {
        let mut uuid = vec![0u8];
        uuid.extend(1..=16u8);
        let bytes = build_request(
            [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            &[
                (53, &[1]),
                (57, &[0x05, 0xc0]),
                (55, &[1, 3, 6, 66, 67]),
                (60, b"PXEClient:Arch:00007:UNDI:003016"),
                (77, b"iPXE"),
                (93, &[0, 7]),
                (94, &[1, 3, 16]),
                (97, &uuid),
                (175, &[0xb1, 1, 1]),
            ],
        );
        let request = decode_request(&bytes).unwrap();
        assert_eq!(request.message_type, MessageType::Discover);
        assert_eq!(request.xid, 0x1234_5678);
        assert!(request.broadcast);
        assert_eq!(
            request.mac.unwrap().to_string(),
            "52:54:00:12:34:56".to_string()
        );
        assert_eq!(request.max_message_size, Some(1472));
        assert!(request.is_pxe_client());
        assert!(!request.is_http_client());
        assert!(request.is_ipxe());
        assert_eq!(request.architecture(), Some(ClientArchitecture(7)));
        assert_eq!(request.client_network_interface, Some((1, 3, 16)));
        assert_eq!(request.client_uuid.unwrap().0[0], 1);
        assert_eq!(request.parameter_request_list, vec![1, 3, 6, 66, 67]);
        assert_eq!(
            request.ipxe_encapsulated.as_deref(),
            Some(&[0xb1, 1, 1][..])
        );
    }

    #[test]
    fn header_checks_come_first() {
        assert!(matches!(
            decode_request(&[1; 100]),
            Err(DhcpDecodeError::Truncated(100))
        ));
        let mut reply = build_request([1; 6], &[(53, &[2])]);
        reply[0] = 2;
        assert!(matches!(
            decode_request(&reply),
            Err(DhcpDecodeError::NotARequest(2))
        ));
        let mut long_hlen = build_request([1; 6], &[(53, &[1])]);
        long_hlen[2] = 17;
        assert!(matches!(
            decode_request(&long_hlen),
            Err(DhcpDecodeError::HardwareAddressLength(17))
        ));
        let mut cookie = build_request([1; 6], &[(53, &[1])]);
        cookie[236] = 0;
        assert!(matches!(
            decode_request(&cookie),
            Err(DhcpDecodeError::MagicCookie)
        ));
    }

    #[test]
    fn lengths_dhcproto_asserts_are_rejected_before_decoding() {
        // Each of these trips a debug_assert! (or a subtraction overflow) in dhcproto 0.15.
        for (code, value) in [
            (152u8, &[1u8, 2][..]),
            (153, &[1, 2, 3]),
            (154, &[1]),
            (155, &[1, 2, 3, 4, 5]),
            (94, &[1, 2]),
            (80, &[1]),
            (81, &[1, 2]),
            (151, &[]),
        ] {
            let bytes = build_request([1; 6], &[(53, &[1]), (code, value)]);
            match decode_request(&bytes) {
                Err(DhcpDecodeError::OptionLength {
                    code: rejected,
                    length,
                    ..
                }) => {
                    assert_eq!((rejected, length), (code, value.len()));
                }
                other => panic!("option {code}: {other:?}"),
            }
        }
    }

    #[test]
    fn address_options_need_four_bytes() {
        let bytes = build_request([1; 6], &[(53, &[3]), (50, &[10, 0, 0])]);
        assert!(matches!(
            decode_request(&bytes),
            Err(DhcpDecodeError::OptionLength { code: 50, .. })
        ));
        let bytes = build_request([1; 6], &[(53, &[3]), (3, &[10, 0, 0, 1, 2])]);
        assert!(matches!(
            decode_request(&bytes),
            Err(DhcpDecodeError::OptionLength { code: 3, .. })
        ));
    }

    #[test]
    fn option_running_past_the_end_is_rejected() {
        let mut bytes = build_request([1; 6], &[(53, &[1])]);
        bytes.pop();
        bytes.extend_from_slice(&[60, 50, b'P']);
        assert!(matches!(
            decode_request(&bytes),
            Err(DhcpDecodeError::OptionOverrun { code: 60, .. })
        ));
        let mut missing_end = build_request([1; 6], &[(53, &[1])]);
        missing_end.pop();
        assert!(matches!(
            decode_request(&missing_end),
            Err(DhcpDecodeError::MissingEnd)
        ));
    }

    #[test]
    fn message_type_is_required_and_known() {
        let bytes = build_request([1; 6], &[(60, b"PXEClient")]);
        assert!(matches!(
            decode_request(&bytes),
            Err(DhcpDecodeError::MissingMessageType)
        ));
        let bytes = build_request([1; 6], &[(53, &[42])]);
        assert!(matches!(
            decode_request(&bytes),
            Err(DhcpDecodeError::UnknownMessageType(42))
        ));
    }

    #[test]
    fn split_options_are_concatenated_rfc3396() {
        // Option 93 split into two instances carrying two architectures.
        let bytes = build_request([1; 6], &[(53, &[1]), (93, &[0, 7]), (93, &[0, 0x10])]);
        let request = decode_request(&bytes).unwrap();
        assert_eq!(
            request.client_architectures,
            vec![ClientArchitecture(7), ClientArchitecture(0x10)]
        );
        // The concatenated length is what is checked: 1 + 1 bytes make a valid 2-byte 93.
        let bytes = build_request([1; 6], &[(53, &[1]), (93, &[0]), (93, &[7])]);
        let request = decode_request(&bytes).unwrap();
        assert_eq!(request.client_architectures, vec![ClientArchitecture(7)]);
    }

    #[test]
    fn user_class_forms() {
        let raw = build_request([1; 6], &[(53, &[1]), (77, b"iPXE")]);
        assert!(decode_request(&raw).unwrap().is_ipxe());
        let rfc3004 = build_request([1; 6], &[(53, &[1]), (77, b"\x04iPXE")]);
        assert!(decode_request(&rfc3004).unwrap().is_ipxe());
        let other = build_request([1; 6], &[(53, &[1]), (77, b"gPXE")]);
        assert!(!decode_request(&other).unwrap().is_ipxe());
    }

    #[test]
    fn reply_round_trips_and_echoes_relay_and_uuid() {
        let mut uuid = vec![0u8];
        uuid.extend([0xaa; 16]);
        let relay = [1u8, 3, b'p', b'0', b'1', 2, 2, 9, 9];
        let mut bytes = build_request(
            [2, 0, 0, 0, 0, 1],
            &[(53, &[1]), (97, &uuid), (82, &relay), (60, b"PXEClient")],
        );
        bytes[24..28].copy_from_slice(&[10, 9, 0, 1]); // giaddr
        let request = decode_request(&bytes).unwrap();
        assert_eq!(request.giaddr, Ipv4Addr::new(10, 9, 0, 1));
        let fields = ReplyFields {
            yiaddr: Some(Ipv4Addr::new(10, 9, 0, 50)),
            siaddr: Some(Ipv4Addr::new(10, 0, 0, 1)),
            server_identifier: Some(Ipv4Addr::new(10, 0, 0, 1)),
            lease_seconds: Some(3600),
            renewal_seconds: Some(1800),
            rebinding_seconds: Some(3150),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: vec![Ipv4Addr::new(10, 9, 0, 1)],
            boot_file: Some("x86_64/ipxe.efi".into()),
            vendor_class: Some("PXEClient".into()),
            ..ReplyFields::default()
        };
        let encoded = encode_reply(&request, MessageType::Offer, &fields).unwrap();
        assert!(encoded.len() >= 300);
        // Decode with dhcproto directly (our decoder accepts only requests).
        let message = v4::Message::decode(&mut Decoder::new(&encoded)).unwrap();
        assert_eq!(message.opcode(), v4::Opcode::BootReply);
        assert_eq!(message.xid(), request.xid);
        assert_eq!(message.yiaddr(), Ipv4Addr::new(10, 9, 0, 50));
        assert_eq!(message.giaddr(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(message.chaddr(), &[2, 0, 0, 0, 0, 1]);
        // dhcproto keeps the terminating NUL of the field.
        let file = message.fname().unwrap();
        assert_eq!(file.strip_suffix(&[0]).unwrap_or(file), b"x86_64/ipxe.efi");
        assert_eq!(message.opts().msg_type(), Some(v4::MessageType::Offer));
        assert_eq!(
            message.opts().get(OptionCode::ClientMachineIdentifier),
            Some(&DhcpOption::ClientMachineIdentifier(uuid))
        );
        // Option 82 is echoed byte for byte, and it is the last option before the end.
        let end = encoded.iter().rposition(|byte| *byte == code::END).unwrap();
        let relay_start = end - relay.len() - 2;
        assert_eq!(encoded[relay_start], code::RELAY_AGENT_INFORMATION);
        assert_eq!(&encoded[relay_start + 2..end], &relay);
    }

    #[test]
    fn too_long_boot_file_is_an_error_not_a_panic() {
        let request = decode_request(&build_request([1; 6], &[(53, &[1])])).unwrap();
        let fields = ReplyFields {
            boot_file: Some("x".repeat(128)),
            ..ReplyFields::default()
        };
        assert!(matches!(
            encode_reply(&request, MessageType::Offer, &fields),
            Err(DhcpEncodeError::FileTooLong(128))
        ));
    }

    #[test]
    fn architecture_map_covers_the_boot_families() {
        let firmware = |code| ClientArchitecture(code).describe().0;
        let transport = |code| ClientArchitecture(code).describe().1;
        assert_eq!(firmware(0), Firmware::PcBios);
        assert_eq!(firmware(6), Firmware::EfiIa32);
        assert_eq!(firmware(7), Firmware::EfiX64);
        assert_eq!(firmware(9), Firmware::EfiX64);
        assert_eq!(firmware(0x0b), Firmware::EfiArm64);
        assert_eq!(firmware(0x10), Firmware::EfiX64);
        assert_eq!(transport(0x10), BootTransport::Http);
        assert_eq!(firmware(0x13), Firmware::EfiArm64);
        assert_eq!(transport(0x13), BootTransport::Http);
        assert_eq!(transport(7), BootTransport::Tftp);
        assert_eq!(firmware(0x1b), Firmware::EfiRiscV64);
        assert_eq!(firmware(0x27), Firmware::EfiLoongArch64);
        assert_eq!(ClientArchitecture(0x2a).describe().2, "unassigned");
        // Every registered code has a description.
        for code in 0..=0x29u16 {
            assert_ne!(
                ClientArchitecture(code).describe().2,
                "unassigned",
                "{code}"
            );
        }
    }

    #[test]
    fn mac_and_uuid_text_forms() {
        let mac = MacAddress::parse("52-54-00-AB-cd-0F").unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert!(MacAddress::parse("52:54:00:ab:cd").is_none());
        assert!(MacAddress::parse("52:54:00:ab:cd:0f:11").is_none());
        assert!(MacAddress::parse("52:54:00:ab:cd:xyz").is_none());
        let uuid = ClientUuid([
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        assert_eq!(
            uuid.to_smbios_string(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert!(uuid.is_placeholder());
        assert!(ClientUuid([0; 16]).is_placeholder());
        assert!(!ClientUuid([7; 16]).is_placeholder());
    }

    #[test]
    fn captured_discovers_decode() {
        for (name, expect_pxe, expect_arch) in [
            ("udhcpc-pxe-discover.bin", true, Some(7u16)),
            ("udhcpc-plain-discover.bin", false, None),
            ("dhclient-discover.bin", false, None),
            ("ipxe-bios-discover.bin", true, Some(0)),
            ("ipxe-efi-discover.bin", true, Some(7)),
            ("ovmf-uefi-pxe-discover.bin", true, Some(7)),
            ("ovmf-http-discover.bin", false, Some(0x10)),
        ] {
            let bytes = fixture(name);
            let request = decode_request(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(request.message_type, MessageType::Discover, "{name}");
            assert!(request.mac.is_some(), "{name}");
            assert_eq!(request.is_pxe_client(), expect_pxe, "{name}");
            assert_eq!(
                request.architecture().map(|arch| arch.0),
                expect_arch,
                "{name}"
            );
        }
        let http = decode_request(&fixture("ovmf-http-discover.bin")).unwrap();
        assert!(http.is_http_client());
        for name in ["ipxe-bios-discover.bin", "ipxe-efi-discover.bin"] {
            assert!(decode_request(&fixture(name)).unwrap().is_ipxe(), "{name}");
        }
        let native = decode_request(&fixture("ovmf-uefi-pxe-discover.bin")).unwrap();
        assert!(!native.is_ipxe());
        assert!(native.client_uuid.is_some());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Random option bytes after a valid header never panic (debug assertions are on in
        /// tests, so a dhcproto length assertion would fail here).
        #[test]
        fn random_options_never_panic(options in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut bytes = build_request([1; 6], &[]);
            bytes.pop();
            bytes.extend_from_slice(&options);
            let _ = decode_request(&bytes);
        }

        /// Well-formed TLVs with arbitrary codes and lengths never panic either: this reaches
        /// dhcproto's per-option decoders.
        #[test]
        fn random_tlvs_never_panic(tlvs in proptest::collection::vec((1u8..255, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)), 0..12)) {
            let mut options: Vec<(u8, &[u8])> = vec![(53, &[1])];
            options.extend(tlvs.iter().map(|(code, value)| (*code, value.as_slice())));
            let bytes = build_request([1; 6], &options);
            let _ = decode_request(&bytes);
        }

        /// Replies (probe answers) with random bytes after the header never panic.
        #[test]
        fn random_reply_bytes_never_panic(options in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), cut in 0usize..700) {
            let mut bytes = encode_probe_discover(7, [2; 6], Ipv4Addr::new(10, 0, 0, 1)).unwrap();
            bytes[0] = 2;
            bytes.truncate(FIXED_HEADER_LENGTH + 4);
            bytes.extend_from_slice(&options);
            bytes.truncate(cut);
            let _ = decode_reply(&bytes);
        }

        /// Truncating or corrupting a captured DISCOVER never panics.
        #[test]
        fn mutated_capture_never_panics(cut in 0usize..400, position in 0usize..400, value in proptest::prelude::any::<u8>()) {
            let mut bytes = fixture("udhcpc-pxe-discover.bin");
            if position < bytes.len() { bytes[position] = value; }
            bytes.truncate(cut.max(1));
            let _ = decode_request(&bytes);
        }
    }
}
