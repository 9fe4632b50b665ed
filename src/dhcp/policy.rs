//! The reply decision: a pure function of (configuration view, leases, where the request came
//! from, the request) returning what to send, what to change in the leases, and why.
//!
//! Who gets what (reference 10.2, issue 6):
//! - a node found by MAC (`net.<x>.hwaddr`) or by client UUID (option 97 = `id.uuid`) gets its
//!   reserved address on the client's subnet (the ingress interface's, or the relay's);
//! - a node with a pending profile also gets the boot chain; a node with nothing pending gets an
//!   address and no boot file, so it boots from disk;
//! - an unknown machine gets a pool address, and the discovery boot only if `discovery.policy`
//!   allows it;
//! - PXE/TFTP and plain-HTTP boot need `deployment.useinsecureprotocols` `firmware` or
//!   `always`; UEFI HTTP boot is offered over HTTPS otherwise;
//! - the first boot loader is iPXE, unless the node's pending profile says `bootloader: shim`
//!   ([`Directory::boot_loader_of`]): then UEFI machines get the Secure Boot chain: over PXE
//!   shim, which loads GRUB from the same place over TFTP; over UEFI HTTP boot the profile's
//!   `boot.img`, a disk image holding shim, GRUB, its configuration, kernel and initramfs
//!   (Debian's signed GRUB cannot fetch anything over HTTP). BIOS machines and clients already
//!   running iPXE still get iPXE.
//!
//! This module must not do I/O, read clocks or mutate anything: the service applies the
//! returned [`LeaseChange`] and sends the reply.

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::deploy::directory::{Directory, InsecureProtocols, NodeBoot};
use crate::osimage::profile::BootLoader;
use crate::proto::dhcp::{
    BootTransport, DhcpRequest, Firmware, MAX_FILE_FIELD_LENGTH, MacAddress, MessageType,
    ReplyFields,
};

/// How an interface (or relayed subnet) is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Addresses and boot information.
    Full,
    /// Boot information only, next to a site DHCP server (proxyDHCP).
    Proxy,
    /// Not served.
    Off,
    /// Proxy when another DHCP server answers on the segment, full otherwise: an interface
    /// setting the service resolves by probing. A scope still in this mode (before the first
    /// probe has ended) answers nothing.
    Auto,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Proxy => "proxy",
            Mode::Off => "off",
            Mode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "full" => Ok(Mode::Full),
            "proxy" => Ok(Mode::Proxy),
            "off" => Ok(Mode::Off),
            "auto" => Ok(Mode::Auto),
            other => Err(format!(
                "unknown DHCP mode '{other}' (want full, proxy, auto or off)"
            )),
        }
    }
}

/// An inclusive range of dynamic addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.first <= address && address <= self.last
    }

    /// The default pool of a subnet: its upper half, minus the broadcast address (documented in
    /// the README), so the lower half stays free for reservations and the server. `None` for
    /// subnets too small to split (prefix longer than /30).
    pub fn default_for(subnet: Ipv4Net) -> Option<Pool> {
        if subnet.prefix_len() > 30 {
            return None;
        }
        let network = u32::from(subnet.network());
        let broadcast = u32::from(subnet.broadcast());
        let size = broadcast - network + 1;
        Some(Pool {
            first: Ipv4Addr::from(network + size / 2),
            last: Ipv4Addr::from(broadcast - 1),
        })
    }
}

/// One served network: the subnet of an interface or of a relay, and what its clients get.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub mode: Mode,
    /// Our address on this network: the server identifier and the boot server.
    pub server_address: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// Dynamic address ranges, in allocation order (none: reservations only).
    pub pools: Vec<Pool>,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    pub ntp_servers: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub lease_seconds: u32,
}

/// The UEFI x64 iPXE build handed to native UEFI PXE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UefiLoader {
    /// `ipxe.efi`: iPXE with its own NIC drivers.
    #[default]
    Ipxe,
    /// `snponly.efi`: iPXE using the firmware's network stack.
    SnpOnly,
}

/// Where boot files are served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSettings {
    pub http_port: u16,
    pub https_port: u16,
    /// Host name to put in boot URLs instead of the server address.
    pub server_name: Option<String>,
    pub uefi_x64_loader: UefiLoader,
}

impl Default for BootSettings {
    fn default() -> BootSettings {
        BootSettings {
            http_port: 80,
            https_port: 443,
            server_name: None,
            uefi_x64_loader: UefiLoader::Ipxe,
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Ingress<'a> {
    pub scope: &'a Scope,
    pub boot: &'a BootSettings,
    /// The request arrived on the PXE boot server port 4011.
    pub pxe_port: bool,
}

/// A lease as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    pub address: Ipv4Addr,
    /// Only offered, not yet bound by an ACK.
    pub offered: bool,
}

/// Read-only access to the leases (the real table, or a fake in tests).
pub trait LeaseView {
    /// The unexpired lease or offer of a MAC.
    fn lease_of(&self, mac: &MacAddress) -> Option<LeaseInfo>;
    /// The MAC holding an address (unexpired lease or offer), or a marker that the address was
    /// declined and is quarantined (`Some(None)`).
    fn holder_of(&self, address: Ipv4Addr) -> Option<Option<MacAddress>>;
    /// Where to start looking for a free pool address (just after the last one handed out),
    /// so that allocation does not rescan the taken part of the pool every time.
    fn allocation_hint(&self) -> Option<Ipv4Addr> {
        None
    }
}

/// What to change in the leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    None,
    /// Hold the address for this MAC until the client requests it (short hold).
    Offer {
        address: Ipv4Addr,
    },
    /// Bind (durably) for `seconds`.
    Bind {
        address: Ipv4Addr,
        seconds: u32,
    },
    /// The client gave the address back.
    Release {
        address: Ipv4Addr,
    },
    /// The client found the address in use: quarantine it.
    Decline {
        address: Ipv4Addr,
    },
}

/// What to send.
// The reply is built once per packet and moved, never stored in bulk: boxing it would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Respond {
        message_type: MessageType,
        fields: ReplyFields,
    },
    NoResponse,
}

/// A boot URL too long for the `file` field, replaced by a short one the HTTP service resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortLink {
    pub id: String,
    pub target: String,
}

/// Why the decision came out as it did. The `Display` form is the sentence recorded for the
/// exchange; [`Reason::code`] is a stable machine-readable key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    ModeOff,
    /// Auto mode before the first probe for another DHCP server has ended.
    AutoProbing,
    /// A request on the PXE boot server port of an interface not in proxy mode.
    PxePortNotProxy,
    NotEthernet,
    NotAClientMessage(MessageType),
    /// A node with a pending profile gets its boot chain.
    BootChain {
        profile: Arc<str>,
    },
    /// A UEFI node whose pending profile says `bootloader: shim` gets shim (then GRUB): over
    /// PXE the files themselves, over UEFI HTTP boot (`disk_image`) the profile's `boot.img`.
    SecureBootChain {
        profile: Arc<str>,
        disk_image: bool,
    },
    /// An unknown machine gets the discovery boot.
    DiscoveryBoot,
    /// A known node with nothing pending: address only, boots from disk.
    NothingPending,
    /// An unknown machine; the discovery policy does not allow booting it.
    DiscoveryNotAllowed,
    /// Not a network boot request (no PXE/HTTP vendor class, no iPXE, no architecture).
    NotABootClient,
    /// PXE/TFTP or plain HTTP refused by `deployment.useinsecureprotocols`.
    InsecureRefused,
    UnsupportedArchitecture(u16),
    PoolExhausted,
    NoPool,
    /// REQUEST naming another server (the client took another offer).
    OtherServerSelected,
    /// The requested address is not what this client may have.
    WrongAddress {
        requested: Ipv4Addr,
    },
    RequestWithoutAddress,
    /// proxyDHCP REQUEST to the site server on port 67: not ours to answer.
    ProxyNotAddressed,
    /// Relayed from a subnet that is neither served nor configured.
    UnknownRelaySubnet(Ipv4Addr),
    Released,
    Declined,
    Inform,
}

impl Reason {
    /// Stable snake_case key.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::ModeOff => "mode_off",
            Reason::AutoProbing => "auto_probing",
            Reason::PxePortNotProxy => "pxe_port_not_proxy",
            Reason::NotEthernet => "not_ethernet",
            Reason::NotAClientMessage(_) => "not_a_client_message",
            Reason::BootChain { .. } => "boot_chain",
            Reason::SecureBootChain { .. } => "secure_boot_chain",
            Reason::DiscoveryBoot => "discovery_boot",
            Reason::NothingPending => "nothing_pending",
            Reason::DiscoveryNotAllowed => "discovery_not_allowed",
            Reason::NotABootClient => "not_a_boot_client",
            Reason::InsecureRefused => "insecure_refused",
            Reason::UnsupportedArchitecture(_) => "unsupported_architecture",
            Reason::PoolExhausted => "pool_exhausted",
            Reason::NoPool => "no_pool",
            Reason::OtherServerSelected => "other_server_selected",
            Reason::WrongAddress { .. } => "wrong_address",
            Reason::RequestWithoutAddress => "request_without_address",
            Reason::ProxyNotAddressed => "proxy_not_addressed",
            Reason::UnknownRelaySubnet(_) => "unknown_relay_subnet",
            Reason::Released => "released",
            Reason::Declined => "declined",
            Reason::Inform => "inform",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ModeOff => write!(formatter, "DHCP is off on this interface"),
            Reason::AutoProbing => write!(
                formatter,
                "auto mode: still probing the segment for another DHCP server"
            ),
            Reason::PxePortNotProxy => write!(
                formatter,
                "boot server request on port 4011 of an interface not in proxy mode"
            ),
            Reason::NotEthernet => write!(formatter, "client hardware address is not Ethernet"),
            Reason::NotAClientMessage(kind) => {
                write!(formatter, "{} is not sent by clients", kind.name())
            }
            Reason::BootChain { profile } => {
                write!(formatter, "pending profile {profile}: boot chain offered")
            }
            Reason::SecureBootChain {
                profile,
                disk_image: false,
            } => write!(
                formatter,
                "pending profile {profile} asks for bootloader: shim: Secure Boot chain (shim, then GRUB over TFTP) offered"
            ),
            Reason::SecureBootChain {
                profile,
                disk_image: true,
            } => write!(
                formatter,
                "pending profile {profile} asks for bootloader: shim: Secure Boot chain offered as boot.img (shim, GRUB, kernel and initramfs in one disk image for UEFI HTTP boot)"
            ),
            Reason::DiscoveryBoot => write!(
                formatter,
                "unknown machine, discovery.policy allows the discovery boot"
            ),
            Reason::NothingPending => write!(
                formatter,
                "known node with no pending profile: address only, it boots from disk"
            ),
            Reason::DiscoveryNotAllowed => write!(
                formatter,
                "unknown machine and discovery.policy (pxe or open) does not allow booting it"
            ),
            Reason::NotABootClient => write!(formatter, "not a network boot request"),
            Reason::InsecureRefused => write!(
                formatter,
                "PXE/TFTP boot needs deployment.useinsecureprotocols firmware or always"
            ),
            Reason::UnsupportedArchitecture(code) => {
                write!(formatter, "no boot loader for client architecture {code}")
            }
            Reason::PoolExhausted => write!(formatter, "no free address in the pool"),
            Reason::NoPool => write!(
                formatter,
                "unknown machine and no dynamic pool on this subnet"
            ),
            Reason::OtherServerSelected => {
                write!(formatter, "client selected another server")
            }
            Reason::WrongAddress { requested } => write!(
                formatter,
                "requested address {requested} is not this client's"
            ),
            Reason::RequestWithoutAddress => {
                write!(formatter, "REQUEST names no address")
            }
            Reason::ProxyNotAddressed => write!(
                formatter,
                "proxy mode: REQUEST is addressed to the site DHCP server"
            ),
            Reason::UnknownRelaySubnet(giaddr) => write!(
                formatter,
                "relayed by {giaddr}, which is on no served or configured subnet"
            ),
            Reason::Released => write!(formatter, "client released its address"),
            Reason::Declined => write!(formatter, "client declined the address"),
            Reason::Inform => write!(formatter, "configuration for a client with an address"),
        }
    }
}

/// The complete outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub lease: LeaseChange,
    pub reason: Reason,
    /// The node the client was recognised as.
    pub node: Option<Arc<str>>,
    pub short_link: Option<ShortLink>,
}

impl Decision {
    /// No reply and no lease change, for `reason`.
    pub fn silent(reason: Reason, node: Option<Arc<str>>) -> Decision {
        Decision {
            action: Action::NoResponse,
            lease: LeaseChange::None,
            reason,
            node,
            short_link: None,
        }
    }
}

/// A boot offer: the `file`/option 67 value and the vendor class to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootFile {
    file: String,
    vendor_class: &'static str,
    /// `siaddr` must point at the TFTP server.
    tftp: bool,
    short_link: Option<ShortLink>,
}

/// The boot part of a decision.
enum BootPlan {
    File(BootFile, Reason),
    Nothing(Reason),
}

/// Identify the client: by MAC first, then by a real (non-placeholder) client UUID.
fn identify<'a>(directory: &'a Directory, request: &DhcpRequest) -> Option<&'a Arc<NodeBoot>> {
    let mac = request.mac?;
    directory.by_mac(&mac).or_else(|| {
        let uuid = request.client_uuid.filter(|uuid| !uuid.is_placeholder())?;
        directory.by_uuid(&uuid.to_smbios_string())
    })
}

fn is_boot_client(request: &DhcpRequest) -> bool {
    request.is_pxe_client()
        || request.is_http_client()
        || request.is_ipxe()
        || request.architecture().is_some()
}

fn url(ingress: &Ingress<'_>, secure: bool, path: &str) -> String {
    let host = ingress
        .boot
        .server_name
        .clone()
        .unwrap_or_else(|| ingress.scope.server_address.to_string());
    if secure {
        format!("https://{host}:{}{path}", ingress.boot.https_port)
    } else {
        format!("http://{host}:{}{path}", ingress.boot.http_port)
    }
}

/// Replace a URL longer than the `file` field by `<scheme>://<server>/boot/su/<id>/<basename>`
/// (reference 10.2): the id is derived from the target, so it is stable across requests.
fn fit_url(ingress: &Ingress<'_>, secure: bool, full: String) -> (String, Option<ShortLink>) {
    if full.len() <= MAX_FILE_FIELD_LENGTH {
        return (full, None);
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(full.as_bytes());
    let id = hex::encode(digest.get(..6).unwrap_or_default());
    let basename = full.rsplit('/').next().unwrap_or_default();
    let mut short = url(ingress, secure, &format!("/boot/su/{id}/{basename}"));
    if short.len() > MAX_FILE_FIELD_LENGTH {
        short = url(ingress, secure, &format!("/boot/su/{id}"));
    }
    (short, Some(ShortLink { id, target: full }))
}

fn boot_plan(
    directory: &Directory,
    node: Option<&Arc<NodeBoot>>,
    ingress: &Ingress<'_>,
    request: &DhcpRequest,
) -> BootPlan {
    if !is_boot_client(request) {
        return BootPlan::Nothing(Reason::NotABootClient);
    }
    let (insecure, why, pending) = match node {
        Some(node) => match &node.pending_profile {
            Some(profile) => (
                node.insecure,
                Reason::BootChain {
                    profile: profile.clone(),
                },
                Some(profile),
            ),
            None => return BootPlan::Nothing(Reason::NothingPending),
        },
        None if directory.discovery_boot_allowed => {
            (directory.default_insecure, Reason::DiscoveryBoot, None)
        }
        None => return BootPlan::Nothing(Reason::DiscoveryNotAllowed),
    };
    // The Secure Boot chain, when the pending profile asks for it: the reason says so.
    let shim = pending
        .filter(|profile| directory.boot_loader_of(profile) == BootLoader::Shim)
        .map(|profile| Reason::SecureBootChain {
            profile: profile.clone(),
            disk_image: false,
        });
    let Some(mac) = request.mac else {
        return BootPlan::Nothing(Reason::NotEthernet);
    };
    let architecture = request.architecture();
    let described = architecture.map(|architecture| architecture.describe());
    // iPXE (whichever way it was loaded) fetches its per-node script over plain HTTP.
    if request.is_ipxe() {
        if insecure == InsecureProtocols::Never {
            return BootPlan::Nothing(Reason::InsecureRefused);
        }
        let full = url(ingress, false, &format!("/boot/by-mac/{mac}/boot.ipxe"));
        let (file, short_link) = fit_url(ingress, false, full);
        return BootPlan::File(
            BootFile {
                file,
                vendor_class: "PXEClient",
                tftp: false,
                short_link,
            },
            why,
        );
    }
    let http_boot = request.is_http_client()
        || described.is_some_and(|(_, transport, _)| transport == BootTransport::Http);
    if http_boot {
        // UEFI HTTP boot loads an EFI binary or a disk image: HTTPS unless plain HTTP is allowed
        // for firmware. The Secure Boot chain comes as `boot.img`, which the firmware mounts
        // as a RAM disk and boots from (`EFI/BOOT/BOOTX64.EFI` or `BOOTAA64.EFI`, both shim):
        // Debian's signed GRUB has no HTTP client, so it must find everything in the image.
        let arm64 = match described.map(|(firmware, _, _)| firmware) {
            Some(Firmware::EfiArm64) => true,
            Some(Firmware::EfiX64) | None => false,
            Some(_) => {
                return BootPlan::Nothing(Reason::UnsupportedArchitecture(
                    architecture.map_or(0, |architecture| architecture.0),
                ));
            }
        };
        let (loader, why) = match (arm64, shim) {
            (false, None) => ("x86_64.efi", why),
            (true, None) => ("aarch64.efi", why),
            (_, Some(Reason::SecureBootChain { profile, .. })) => (
                "boot.img",
                Reason::SecureBootChain {
                    profile,
                    disk_image: true,
                },
            ),
            (_, Some(other)) => ("boot.img", other),
        };
        let secure = !insecure.allows_firmware();
        let full = url(ingress, secure, &format!("/boot/by-mac/{mac}/{loader}"));
        let (file, short_link) = fit_url(ingress, secure, full);
        return BootPlan::File(
            BootFile {
                file,
                vendor_class: "HTTPClient",
                tftp: false,
                short_link,
            },
            why,
        );
    }
    // Everything else is PXE: the firmware fetches iPXE (or shim) over TFTP.
    if insecure == InsecureProtocols::Never {
        return BootPlan::Nothing(Reason::InsecureRefused);
    }
    // A PXE ROM without option 93 predates RFC 4578: it is a PC BIOS.
    let firmware = described.map_or(Firmware::PcBios, |(firmware, _, _)| firmware);
    // Shim fetches `grubx64.efi` from the directory of the file it was loaded as.
    let (file, why) = match (firmware, shim) {
        // BIOS has no Secure Boot: iPXE even when the profile asks for shim.
        (Firmware::PcBios, _) => ("x86_64/undionly.kpxe", why),
        (Firmware::EfiX64, Some(shim)) => ("x86_64/shimx64.efi", shim),
        (Firmware::EfiX64, None) => match ingress.boot.uefi_x64_loader {
            UefiLoader::Ipxe => ("x86_64/ipxe.efi", why),
            UefiLoader::SnpOnly => ("x86_64/snponly.efi", why),
        },
        (Firmware::EfiArm64, Some(shim)) => ("aarch64/shimaa64.efi", shim),
        (Firmware::EfiArm64, None) => ("aarch64/ipxe.efi", why),
        _ => {
            return BootPlan::Nothing(Reason::UnsupportedArchitecture(
                architecture.map_or(0, |architecture| architecture.0),
            ));
        }
    };
    BootPlan::File(
        BootFile {
            file: file.to_string(),
            vendor_class: "PXEClient",
            tftp: true,
            short_link: None,
        },
        why,
    )
}

/// The address a client may have on this scope, in order of preference: the node's
/// reservation on the subnet, its current lease (unless the address became another node's
/// reservation), the address it asks for if free, then the first free pool address.
fn address_for(
    directory: &Directory,
    leases: &dyn LeaseView,
    scope: &Scope,
    mac: MacAddress,
    node: Option<&Arc<NodeBoot>>,
    wanted: Option<Ipv4Addr>,
) -> Result<(Ipv4Addr, bool), Reason> {
    if let Some(node) = node {
        let on_subnet = |interface: &&crate::deploy::directory::NodeInterface| {
            interface
                .address
                .is_some_and(|address| scope.subnet.contains(&address))
        };
        // The interface with this MAC first, then any address of the node on this subnet.
        let reserved = node
            .interfaces
            .iter()
            .filter(on_subnet)
            .find(|interface| interface.mac == Some(mac))
            .or_else(|| node.interfaces.iter().find(on_subnet))
            .and_then(|interface| interface.address);
        if let Some(address) = reserved {
            return Ok((address, true));
        }
    }
    if scope.pools.is_empty() {
        return Err(Reason::NoPool);
    }
    let usable = |address: Ipv4Addr| {
        scope.pools.iter().any(|pool| pool.contains(address))
            && address != scope.server_address
            && directory.reserved_for(address).is_none()
    };
    if let Some(lease) = leases.lease_of(&mac)
        && usable(lease.address)
    {
        return Ok((lease.address, false));
    }
    if let Some(address) = wanted
        && usable(address)
        && leases.holder_of(address).is_none()
    {
        return Ok((address, false));
    }
    // From the hint to the end of its range, the following ranges, then the ranges before it
    // and the start of the hint's range (wrapping around).
    let hint = leases.allocation_hint();
    let (hinted, start) = hint
        .and_then(|hint| {
            scope
                .pools
                .iter()
                .position(|pool| pool.contains(hint))
                .map(|index| (index, u32::from(hint)))
        })
        .unwrap_or((0, u32::from(scope.pools[0].first)));
    let count = scope.pools.len();
    let hinted_pool = scope.pools[hinted];
    let (first, last) = (u32::from(hinted_pool.first), u32::from(hinted_pool.last));
    let others = (1..count).flat_map(|offset| {
        let pool = scope.pools[(hinted + offset) % count];
        u32::from(pool.first)..=u32::from(pool.last)
    });
    (start..=last)
        .chain(others)
        .chain(first..start)
        .map(Ipv4Addr::from)
        .find(|address| usable(*address) && leases.holder_of(*address).is_none())
        .map(|address| (address, false))
        .ok_or(Reason::PoolExhausted)
}

fn network_fields(
    directory: &Directory,
    scope: &Scope,
    node: Option<&Arc<NodeBoot>>,
    address: Option<Ipv4Addr>,
) -> ReplyFields {
    // DNS and NTP: the node's attributes (inherited as usual), for unknown machines the
    // `everything` group's, and the served interface's settings when neither has any.
    let network = node.map_or(&directory.default_network, |node| &node.network);
    let or_scope = |own: &Vec<Ipv4Addr>, fallback: &Vec<Ipv4Addr>| {
        if own.is_empty() {
            fallback.clone()
        } else {
            own.clone()
        }
    };
    // A node's own gateway for this address wins over the scope's routers.
    let node_gateway = node.and_then(|node| {
        node.interfaces
            .iter()
            .find(|interface| interface.address.is_some() && interface.address == address)
            .and_then(|interface| interface.gateway)
    });
    ReplyFields {
        server_identifier: Some(scope.server_address),
        subnet_mask: Some(scope.subnet.netmask()),
        routers: match node_gateway {
            Some(gateway) => vec![gateway],
            None => scope.routers.clone(),
        },
        dns_servers: or_scope(&network.dns_servers, &scope.dns_servers),
        domain_name: network.domain.clone().or_else(|| scope.domain_name.clone()),
        host_name: node.map(|node| node.name.to_string()),
        ntp_servers: or_scope(&network.ntp_servers, &scope.ntp_servers),
        mtu: scope.mtu,
        ..ReplyFields::default()
    }
}

fn lease_fields(fields: &mut ReplyFields, seconds: u32) {
    fields.lease_seconds = Some(seconds);
    // RFC 2131 section 4.4.5: T1 = 0.5, T2 = 0.875 of the lease time.
    fields.renewal_seconds = Some(seconds / 2);
    fields.rebinding_seconds = Some(seconds / 8 * 7);
}

fn with_boot(fields: &mut ReplyFields, scope: &Scope, boot: &BootFile) {
    fields.boot_file = Some(boot.file.clone());
    // Option 60 `PXEClient` without PXE vendor options (option 43) marks a "BINL" offer: UEFI
    // PXE (EDK2's PxeBcDhcp4) then asks a boot server on port 4011 for the boot file instead of
    // taking the one offered, and fails when nobody answers there ("PXE-E16: No valid offer
    // received"). A full-mode reply names the file itself, so only proxyDHCP replies (which
    // answer port 4011) say `PXEClient`. UEFI HTTP boot needs `HTTPClient` in every reply.
    if boot.vendor_class != "PXEClient" || scope.mode == Mode::Proxy {
        fields.vendor_class = Some(boot.vendor_class.to_string());
    }
    if boot.tftp {
        fields.siaddr = Some(scope.server_address);
    }
}

/// Decide the reply to one request.
pub fn reply(
    directory: &Directory,
    leases: &dyn LeaseView,
    ingress: &Ingress<'_>,
    request: &DhcpRequest,
) -> Decision {
    let scope = ingress.scope;
    match scope.mode {
        Mode::Off => return Decision::silent(Reason::ModeOff, None),
        Mode::Auto => return Decision::silent(Reason::AutoProbing, None),
        Mode::Full if ingress.pxe_port => {
            return Decision::silent(Reason::PxePortNotProxy, None);
        }
        Mode::Full | Mode::Proxy => {}
    }
    let Some(mac) = request.mac else {
        return Decision::silent(Reason::NotEthernet, None);
    };
    let node = identify(directory, request);
    let node_name = node.map(|node| node.name.clone());
    if matches!(
        request.message_type,
        MessageType::Offer | MessageType::Ack | MessageType::Nak
    ) {
        return Decision::silent(Reason::NotAClientMessage(request.message_type), node_name);
    }
    if scope.mode == Mode::Proxy {
        return proxy_reply(directory, node, ingress, request);
    }
    let ours = request
        .server_identifier
        .is_none_or(|server| server == scope.server_address);
    match request.message_type {
        MessageType::Release => {
            let lease = match leases.lease_of(&mac) {
                Some(lease) if ours && lease.address == request.ciaddr => LeaseChange::Release {
                    address: lease.address,
                },
                _ => LeaseChange::None,
            };
            return Decision {
                lease,
                ..Decision::silent(Reason::Released, node_name)
            };
        }
        MessageType::Decline => {
            let lease = match request.requested_address {
                Some(address) if ours => LeaseChange::Decline { address },
                _ => LeaseChange::None,
            };
            return Decision {
                lease,
                ..Decision::silent(Reason::Declined, node_name)
            };
        }
        MessageType::Inform => {
            // RFC 2131 section 4.3.5: no lease time, no yiaddr.
            let mut fields = network_fields(directory, scope, node, Some(request.ciaddr));
            let mut short_link = None;
            if let BootPlan::File(boot, _) = boot_plan(directory, node, ingress, request) {
                with_boot(&mut fields, scope, &boot);
                short_link = boot.short_link;
            }
            return Decision {
                action: Action::Respond {
                    message_type: MessageType::Ack,
                    fields,
                },
                lease: LeaseChange::None,
                reason: Reason::Inform,
                node: node_name,
                short_link,
            };
        }
        MessageType::Request if !ours => {
            return Decision::silent(Reason::OtherServerSelected, node_name);
        }
        _ => {}
    }
    let wanted = request
        .requested_address
        .or_else(|| (!request.ciaddr.is_unspecified()).then_some(request.ciaddr));
    let (address, _reserved) = match address_for(directory, leases, scope, mac, node, wanted) {
        Ok(found) => found,
        Err(reason) => return Decision::silent(reason, node_name),
    };
    let (boot, reason) = match boot_plan(directory, node, ingress, request) {
        BootPlan::File(boot, reason) => (Some(boot), reason),
        BootPlan::Nothing(reason) => (None, reason),
    };
    let mut fields = network_fields(directory, scope, node, Some(address));
    fields.yiaddr = Some(address);
    lease_fields(&mut fields, scope.lease_seconds);
    let short_link = boot.as_ref().and_then(|boot| boot.short_link.clone());
    if let Some(boot) = &boot {
        with_boot(&mut fields, scope, boot);
    }
    match request.message_type {
        MessageType::Discover => Decision {
            action: Action::Respond {
                message_type: MessageType::Offer,
                fields,
            },
            lease: LeaseChange::Offer { address },
            reason,
            node: node_name,
            short_link,
        },
        _ => {
            // REQUEST (selecting, init-reboot, renewing or rebinding).
            let Some(requested) = wanted else {
                return Decision::silent(Reason::RequestWithoutAddress, node_name);
            };
            if requested != address {
                return Decision {
                    action: Action::Respond {
                        message_type: MessageType::Nak,
                        fields: ReplyFields {
                            server_identifier: Some(scope.server_address),
                            message: Some(format!("address {requested} is not yours")),
                            ..ReplyFields::default()
                        },
                    },
                    lease: LeaseChange::None,
                    reason: Reason::WrongAddress { requested },
                    node: node_name,
                    short_link: None,
                };
            }
            Decision {
                action: Action::Respond {
                    message_type: MessageType::Ack,
                    fields,
                },
                lease: LeaseChange::Bind {
                    address,
                    seconds: scope.lease_seconds,
                },
                reason,
                node: node_name,
                short_link,
            }
        }
    }
}

/// proxyDHCP (PXE specification 2.1, reference 10.3): boot information without an address,
/// only to boot clients that have a boot file, on DISCOVER (port 67) and on REQUEST to us
/// (port 4011, or naming our server identifier).
fn proxy_reply(
    directory: &Directory,
    node: Option<&Arc<NodeBoot>>,
    ingress: &Ingress<'_>,
    request: &DhcpRequest,
) -> Decision {
    let scope = ingress.scope;
    let node_name = node.map(|node| node.name.clone());
    let message_type = match request.message_type {
        MessageType::Discover if !ingress.pxe_port => MessageType::Offer,
        MessageType::Request
            if ingress.pxe_port || request.server_identifier == Some(scope.server_address) =>
        {
            MessageType::Ack
        }
        MessageType::Request => {
            return Decision::silent(Reason::ProxyNotAddressed, node_name);
        }
        _ => return Decision::silent(Reason::ProxyNotAddressed, node_name),
    };
    match boot_plan(directory, node, ingress, request) {
        BootPlan::Nothing(reason) => Decision::silent(reason, node_name),
        BootPlan::File(boot, reason) => {
            let mut fields = ReplyFields {
                server_identifier: Some(scope.server_address),
                ..ReplyFields::default()
            };
            with_boot(&mut fields, scope, &boot);
            // proxyDHCP always names the boot server, even for HTTP URLs.
            fields.siaddr = Some(scope.server_address);
            Decision {
                action: Action::Respond {
                    message_type,
                    fields,
                },
                lease: LeaseChange::None,
                reason,
                node: node_name,
                short_link: boot.short_link,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::deploy::directory::NodeInterface;
    use crate::proto::dhcp::{ClientArchitecture, ClientUuid, decode_request};

    #[derive(Default)]
    struct FakeLeases {
        by_mac: HashMap<MacAddress, LeaseInfo>,
        declined: Vec<Ipv4Addr>,
        hint: Option<Ipv4Addr>,
    }

    impl LeaseView for FakeLeases {
        fn lease_of(&self, mac: &MacAddress) -> Option<LeaseInfo> {
            self.by_mac.get(mac).copied()
        }
        fn holder_of(&self, address: Ipv4Addr) -> Option<Option<MacAddress>> {
            if self.declined.contains(&address) {
                return Some(None);
            }
            self.by_mac
                .iter()
                .find(|(_, lease)| lease.address == address)
                .map(|(mac, _)| Some(*mac))
        }
        fn allocation_hint(&self) -> Option<Ipv4Addr> {
            self.hint
        }
    }

    #[test]
    fn allocation_starts_at_the_hint_and_wraps_around() {
        let mut leases = FakeLeases {
            hint: Some(Ipv4Addr::new(10, 77, 0, 200)),
            ..FakeLeases::default()
        };
        let decision = decide(Mode::Full, &leases, &request(1, 200, &[]));
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 77, 0, 200))
        );
        // Everything from the hint to the end is taken: wrap to the start of the pool.
        for last in 200..=254u8 {
            leases.by_mac.insert(
                MacAddress([2, 0, 0, 0, 0, last]),
                LeaseInfo {
                    address: Ipv4Addr::new(10, 77, 0, last),
                    offered: false,
                },
            );
        }
        let decision = decide(Mode::Full, &leases, &request(1, 200, &[]));
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 77, 0, 128))
        );
        // A hint outside the pool is ignored.
        leases.hint = Some(Ipv4Addr::new(10, 77, 0, 5));
        let decision = decide(Mode::Full, &leases, &request(1, 200, &[]));
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 77, 0, 128))
        );
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn mac(last: u8) -> MacAddress {
        MacAddress([0x52, 0x54, 0, 0, 0, last])
    }

    fn scope(mode: Mode) -> Scope {
        let subnet: Ipv4Net = "10.77.0.0/24".parse().unwrap();
        Scope {
            mode,
            server_address: SERVER,
            subnet,
            pools: Pool::default_for(subnet).into_iter().collect(),
            routers: vec![Ipv4Addr::new(10, 77, 0, 254)],
            dns_servers: vec![SERVER],
            domain_name: Some("cluster.example".into()),
            ntp_servers: vec![],
            mtu: None,
            lease_seconds: 3600,
        }
    }

    fn node(name: &str, last: u8, profile: Option<&str>, insecure: InsecureProtocols) -> NodeBoot {
        NodeBoot {
            name: Arc::from(name),
            interfaces: vec![NodeInterface {
                name: Arc::from("net.eth0"),
                mac: Some(mac(last)),
                address: Some(Ipv4Addr::new(10, 77, 0, last)),
                prefix: Some(24),
                gateway: None,
            }],
            uuid: None,
            pending_profile: profile.map(Arc::from),
            insecure,
            network: Default::default(),
        }
    }

    fn directory() -> Directory {
        let mut directory = Directory::default();
        directory.insert(node(
            "pending",
            11,
            Some("rocky-9"),
            InsecureProtocols::Firmware,
        ));
        directory.insert(node("idle", 12, None, InsecureProtocols::Firmware));
        directory.insert(node(
            "secure",
            13,
            Some("rocky-9"),
            InsecureProtocols::Never,
        ));
        let mut by_uuid = node("by-uuid", 14, Some("rocky-9"), InsecureProtocols::Always);
        by_uuid.interfaces[0].mac = None;
        by_uuid.uuid = Some("00112244-0000-0000-0000-0000000000aa".into());
        directory.insert(by_uuid);
        directory.insert(node(
            "shimmed",
            15,
            Some("debian-sb"),
            InsecureProtocols::Firmware,
        ));
        directory
            .set_profile_boot_loaders(HashMap::from([(Arc::from("debian-sb"), BootLoader::Shim)]));
        directory
    }

    /// A request built from options: (code, value).
    fn request(message_type: u8, last: u8, options: &[(u8, &[u8])]) -> DhcpRequest {
        let mut all: Vec<(u8, &[u8])> = vec![(53, std::slice::from_ref(&message_type))];
        all.extend_from_slice(options);
        let mut bytes = vec![0u8; 236];
        bytes[0] = 1;
        bytes[1] = 1;
        bytes[2] = 6;
        bytes[28..34].copy_from_slice(&mac(last).0);
        bytes.extend_from_slice(&[99, 130, 83, 99]);
        for (code, value) in all {
            bytes.push(code);
            bytes.push(u8::try_from(value.len()).unwrap());
            bytes.extend_from_slice(value);
        }
        bytes.push(255);
        decode_request(&bytes).unwrap()
    }

    const PXE_BIOS: &[(u8, &[u8])] = &[(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, &[0, 0])];
    const PXE_UEFI: &[(u8, &[u8])] = &[(60, b"PXEClient:Arch:00007:UNDI:003016"), (93, &[0, 7])];
    const PXE_ARM64: &[(u8, &[u8])] = &[(60, b"PXEClient:Arch:00011:UNDI:003016"), (93, &[0, 11])];
    const HTTP_UEFI: &[(u8, &[u8])] = &[(60, b"HTTPClient:Arch:00016"), (93, &[0, 0x10])];
    const HTTP_ARM64: &[(u8, &[u8])] = &[(60, b"HTTPClient:Arch:00019"), (93, &[0, 0x13])];
    const IPXE: &[(u8, &[u8])] = &[
        (60, b"PXEClient:Arch:00000:UNDI:002001"),
        (77, b"iPXE"),
        (93, &[0, 0]),
    ];

    fn decide(mode: Mode, leases: &FakeLeases, request: &DhcpRequest) -> Decision {
        let scope = scope(mode);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        reply(&directory(), leases, &ingress, request)
    }

    fn fields(decision: &Decision) -> &ReplyFields {
        match &decision.action {
            Action::Respond { fields, .. } => fields,
            Action::NoResponse => panic!("no response: {}", decision.reason),
        }
    }

    fn message_type(decision: &Decision) -> Option<MessageType> {
        match &decision.action {
            Action::Respond { message_type, .. } => Some(*message_type),
            Action::NoResponse => None,
        }
    }

    #[test]
    fn pending_node_gets_reserved_address_and_boot_file_per_architecture() {
        let leases = FakeLeases::default();
        for (options, file, tftp) in [
            (PXE_BIOS, "x86_64/undionly.kpxe", true),
            (PXE_UEFI, "x86_64/ipxe.efi", true),
            (PXE_ARM64, "aarch64/ipxe.efi", true),
            (
                IPXE,
                "http://10.77.0.1:80/boot/by-mac/52:54:00:00:00:0b/boot.ipxe",
                false,
            ),
            (
                HTTP_UEFI,
                "http://10.77.0.1:80/boot/by-mac/52:54:00:00:00:0b/x86_64.efi",
                false,
            ),
        ] {
            let decision = decide(Mode::Full, &leases, &request(1, 11, options));
            assert_eq!(message_type(&decision), Some(MessageType::Offer));
            assert_eq!(decision.node.as_deref(), Some("pending"));
            assert_eq!(
                decision.reason,
                Reason::BootChain {
                    profile: Arc::from("rocky-9")
                }
            );
            let fields = fields(&decision);
            assert_eq!(fields.yiaddr, Some(Ipv4Addr::new(10, 77, 0, 11)));
            assert_eq!(fields.boot_file.as_deref(), Some(file));
            assert_eq!(fields.siaddr, tftp.then_some(SERVER));
            assert_eq!(fields.host_name.as_deref(), Some("pending"));
            assert_eq!(fields.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
            assert_eq!(fields.lease_seconds, Some(3600));
            assert_eq!(fields.renewal_seconds, Some(1800));
            assert_eq!(fields.rebinding_seconds, Some(3150));
            assert_eq!(
                decision.lease,
                LeaseChange::Offer {
                    address: Ipv4Addr::new(10, 77, 0, 11)
                }
            );
        }
        let http = decide(Mode::Full, &leases, &request(1, 11, HTTP_UEFI));
        assert_eq!(fields(&http).vendor_class.as_deref(), Some("HTTPClient"));
        // No `PXEClient` in a full-mode reply: UEFI PXE would go looking for a boot server on
        // port 4011 instead of taking the file offered.
        let pxe = decide(Mode::Full, &leases, &request(1, 11, PXE_UEFI));
        assert_eq!(fields(&pxe).vendor_class, None);
        assert_eq!(fields(&pxe).boot_file.as_deref(), Some("x86_64/ipxe.efi"));
    }

    #[test]
    fn a_profile_asking_for_shim_gets_the_secure_boot_chain_on_uefi() {
        let leases = FakeLeases::default();
        for (options, file, tftp, vendor_class) in [
            (PXE_UEFI, "x86_64/shimx64.efi", true, None),
            (PXE_ARM64, "aarch64/shimaa64.efi", true, None),
            (
                HTTP_UEFI,
                "http://10.77.0.1:80/boot/by-mac/52:54:00:00:00:0f/boot.img",
                false,
                Some("HTTPClient"),
            ),
            (
                HTTP_ARM64,
                "http://10.77.0.1:80/boot/by-mac/52:54:00:00:00:0f/boot.img",
                false,
                Some("HTTPClient"),
            ),
        ] {
            for message in [1, 3] {
                let mut options = options.to_vec();
                let requested = [10, 77, 0, 15];
                if message == 3 {
                    options.push((50, &requested));
                }
                let decision = decide(Mode::Full, &leases, &request(message, 15, &options));
                assert_eq!(decision.node.as_deref(), Some("shimmed"));
                assert_eq!(
                    decision.reason,
                    Reason::SecureBootChain {
                        profile: Arc::from("debian-sb"),
                        disk_image: !tftp,
                    },
                    "{file}"
                );
                assert_eq!(decision.reason.code(), "secure_boot_chain");
                let text = decision.reason.to_string();
                assert!(
                    text.contains("debian-sb") && text.contains("bootloader: shim"),
                    "{text}"
                );
                assert_eq!(text.contains("boot.img"), !tftp, "{text}");
                let fields = fields(&decision);
                assert_eq!(fields.boot_file.as_deref(), Some(file));
                assert_eq!(fields.siaddr, tftp.then_some(SERVER));
                assert_eq!(fields.vendor_class.as_deref(), vendor_class);
            }
        }
        // Proxy mode offers the same chain.
        let proxied = decide(Mode::Proxy, &leases, &request(1, 15, PXE_UEFI));
        assert_eq!(
            fields(&proxied).boot_file.as_deref(),
            Some("x86_64/shimx64.efi")
        );
        assert_eq!(proxied.reason.code(), "secure_boot_chain");
    }

    #[test]
    fn shim_profiles_keep_ipxe_on_bios_and_for_ipxe_clients_and_others_keep_ipxe() {
        let leases = FakeLeases::default();
        // BIOS has no Secure Boot, and a client already running iPXE wants its script.
        for (options, file) in [
            (PXE_BIOS, "x86_64/undionly.kpxe"),
            (
                IPXE,
                "http://10.77.0.1:80/boot/by-mac/52:54:00:00:00:0f/boot.ipxe",
            ),
        ] {
            let decision = decide(Mode::Full, &leases, &request(1, 15, options));
            assert_eq!(fields(&decision).boot_file.as_deref(), Some(file));
            assert_eq!(
                decision.reason,
                Reason::BootChain {
                    profile: Arc::from("debian-sb")
                }
            );
        }
        // A profile without the setting still gets iPXE, in the same directory.
        for (options, file) in [
            (PXE_UEFI, "x86_64/ipxe.efi"),
            (PXE_ARM64, "aarch64/ipxe.efi"),
            (
                HTTP_UEFI,
                "http://10.77.0.1:80/boot/by-mac/52:54:00:00:00:0b/x86_64.efi",
            ),
        ] {
            let decision = decide(Mode::Full, &leases, &request(1, 11, options));
            assert_eq!(fields(&decision).boot_file.as_deref(), Some(file));
            assert_eq!(decision.reason.code(), "boot_chain");
        }
        // Unknown machines (discovery) never get shim.
        let mut allowing = directory();
        allowing.discovery_boot_allowed = true;
        allowing.default_insecure = InsecureProtocols::Firmware;
        let scope = scope(Mode::Full);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(&allowing, &leases, &ingress, &request(1, 200, PXE_UEFI));
        assert_eq!(
            fields(&decision).boot_file.as_deref(),
            Some("x86_64/ipxe.efi")
        );
    }

    #[test]
    fn the_shim_chain_obeys_insecure_protocols() {
        let leases = FakeLeases::default();
        let mut directory = directory();
        directory.insert(node(
            "shimmed",
            15,
            Some("debian-sb"),
            InsecureProtocols::Never,
        ));
        let scope = scope(Mode::Full);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let pxe = reply(&directory, &leases, &ingress, &request(1, 15, PXE_UEFI));
        assert_eq!(pxe.reason, Reason::InsecureRefused);
        assert_eq!(fields(&pxe).boot_file, None);
        let http = reply(&directory, &leases, &ingress, &request(1, 15, HTTP_UEFI));
        assert_eq!(
            fields(&http).boot_file.as_deref(),
            Some("https://10.77.0.1:443/boot/by-mac/52:54:00:00:00:0f/boot.img")
        );
        assert_eq!(http.reason.code(), "secure_boot_chain");
    }

    #[test]
    fn legacy_pxe_without_architecture_is_bios_and_uefi_arch_9_is_x64() {
        let leases = FakeLeases::default();
        let old = decide(Mode::Full, &leases, &request(1, 11, &[(60, b"PXEClient")]));
        assert_eq!(
            fields(&old).boot_file.as_deref(),
            Some("x86_64/undionly.kpxe")
        );
        let nine = decide(
            Mode::Full,
            &leases,
            &request(1, 11, &[(60, b"PXEClient:Arch:00009"), (93, &[0, 9])]),
        );
        assert_eq!(fields(&nine).boot_file.as_deref(), Some("x86_64/ipxe.efi"));
    }

    #[test]
    fn snponly_loader_is_configurable() {
        let scope = scope(Mode::Full);
        let boot = BootSettings {
            uefi_x64_loader: UefiLoader::SnpOnly,
            ..BootSettings::default()
        };
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(
            &directory(),
            &FakeLeases::default(),
            &ingress,
            &request(1, 11, PXE_UEFI),
        );
        assert_eq!(
            fields(&decision).boot_file.as_deref(),
            Some("x86_64/snponly.efi")
        );
    }

    #[test]
    fn unsupported_architecture_gets_an_address_without_boot_file() {
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(1, 11, &[(60, b"PXEClient:Arch:00027"), (93, &[0, 0x1b])]),
        );
        assert_eq!(decision.reason, Reason::UnsupportedArchitecture(0x1b));
        assert_eq!(fields(&decision).boot_file, None);
        assert_eq!(fields(&decision).yiaddr, Some(Ipv4Addr::new(10, 77, 0, 11)));
    }

    #[test]
    fn idle_node_gets_address_but_no_boot_file() {
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(1, 12, PXE_UEFI),
        );
        assert_eq!(decision.reason, Reason::NothingPending);
        assert_eq!(decision.node.as_deref(), Some("idle"));
        let fields = fields(&decision);
        assert_eq!(fields.yiaddr, Some(Ipv4Addr::new(10, 77, 0, 12)));
        assert_eq!(fields.boot_file, None);
        assert_eq!(fields.vendor_class, None);
    }

    #[test]
    fn insecure_protocols_gate_pxe_but_not_https_boot() {
        let leases = FakeLeases::default();
        for options in [PXE_BIOS, PXE_UEFI, IPXE] {
            let decision = decide(Mode::Full, &leases, &request(1, 13, options));
            assert_eq!(decision.reason, Reason::InsecureRefused);
            assert_eq!(fields(&decision).boot_file, None);
            assert_eq!(fields(&decision).yiaddr, Some(Ipv4Addr::new(10, 77, 0, 13)));
        }
        let http = decide(Mode::Full, &leases, &request(1, 13, HTTP_UEFI));
        assert_eq!(
            fields(&http).boot_file.as_deref(),
            Some("https://10.77.0.1:443/boot/by-mac/52:54:00:00:00:0d/x86_64.efi")
        );
    }

    #[test]
    fn node_found_by_client_uuid() {
        // SMBIOS order: the first three fields are little-endian on the wire.
        let mut uuid = vec![0u8];
        let wire = ClientUuid([
            0x44, 0x22, 0x11, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa,
        ]);
        uuid.extend_from_slice(&wire.0);
        let mut options: Vec<(u8, &[u8])> = PXE_UEFI.to_vec();
        options.push((97, &uuid));
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(1, 99, &options),
        );
        assert_eq!(decision.node.as_deref(), Some("by-uuid"));
        assert_eq!(fields(&decision).yiaddr, Some(Ipv4Addr::new(10, 77, 0, 14)));
        // A placeholder UUID identifies nobody.
        let mut placeholder = vec![0u8];
        placeholder.extend([0u8; 16]);
        let mut options: Vec<(u8, &[u8])> = PXE_UEFI.to_vec();
        options.push((97, &placeholder));
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(1, 99, &options),
        );
        assert_eq!(decision.node, None);
    }

    #[test]
    fn unknown_machine_gets_pool_address_and_discovery_only_if_allowed() {
        let leases = FakeLeases::default();
        let decision = decide(Mode::Full, &leases, &request(1, 200, PXE_UEFI));
        assert_eq!(decision.reason, Reason::DiscoveryNotAllowed);
        assert_eq!(decision.node, None);
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 77, 0, 128))
        );
        assert_eq!(fields(&decision).boot_file, None);

        let mut allowing = directory();
        allowing.discovery_boot_allowed = true;
        allowing.default_insecure = InsecureProtocols::Firmware;
        let scope = scope(Mode::Full);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(&allowing, &leases, &ingress, &request(1, 200, PXE_UEFI));
        assert_eq!(decision.reason, Reason::DiscoveryBoot);
        assert_eq!(
            fields(&decision).boot_file.as_deref(),
            Some("x86_64/ipxe.efi")
        );
        // Discovery allowed but insecure protocols not: PXE refused.
        allowing.default_insecure = InsecureProtocols::Never;
        let decision = reply(&allowing, &leases, &ingress, &request(1, 200, PXE_UEFI));
        assert_eq!(decision.reason, Reason::InsecureRefused);
    }

    #[test]
    fn plain_dhcp_client_is_not_a_boot_client() {
        let decision = decide(Mode::Full, &FakeLeases::default(), &request(1, 11, &[]));
        assert_eq!(decision.reason, Reason::NotABootClient);
        assert_eq!(fields(&decision).yiaddr, Some(Ipv4Addr::new(10, 77, 0, 11)));
        assert_eq!(fields(&decision).boot_file, None);
    }

    #[test]
    fn pool_skips_reservations_held_addresses_declined_and_the_server() {
        let mut leases = FakeLeases::default();
        leases.by_mac.insert(
            mac(201),
            LeaseInfo {
                address: Ipv4Addr::new(10, 77, 0, 128),
                offered: false,
            },
        );
        leases.declined.push(Ipv4Addr::new(10, 77, 0, 129));
        let mut directory = directory();
        let mut reserved_in_pool = node("inpool", 50, None, InsecureProtocols::Never);
        reserved_in_pool.interfaces[0].address = Some(Ipv4Addr::new(10, 77, 0, 130));
        directory.insert(reserved_in_pool);
        let mut scope = scope(Mode::Full);
        scope.server_address = Ipv4Addr::new(10, 77, 0, 131);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(&directory, &leases, &ingress, &request(1, 200, &[]));
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 77, 0, 132))
        );
        // The existing lease is kept for its owner.
        let decision = reply(&directory, &leases, &ingress, &request(1, 201, &[]));
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 77, 0, 128))
        );
    }

    #[test]
    fn lease_on_an_address_that_became_a_reservation_is_not_renewed() {
        let mut leases = FakeLeases::default();
        // mac 202 holds .140; then .140 is reserved for node "late".
        leases.by_mac.insert(
            mac(202),
            LeaseInfo {
                address: Ipv4Addr::new(10, 77, 0, 140),
                offered: false,
            },
        );
        let mut directory = directory();
        let mut late = node("late", 60, None, InsecureProtocols::Never);
        late.interfaces[0].address = Some(Ipv4Addr::new(10, 77, 0, 140));
        directory.insert(late);
        let scope = scope(Mode::Full);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let mut renew = request(3, 202, &[]);
        renew.ciaddr = Ipv4Addr::new(10, 77, 0, 140);
        let decision = reply(&directory, &leases, &ingress, &renew);
        assert_eq!(message_type(&decision), Some(MessageType::Nak));
        assert_eq!(
            decision.reason,
            Reason::WrongAddress {
                requested: Ipv4Addr::new(10, 77, 0, 140)
            }
        );
    }

    #[test]
    fn pool_exhaustion_and_missing_pool_are_silent_with_a_reason() {
        let mut leases = FakeLeases::default();
        for last in 128..=254u8 {
            leases.by_mac.insert(
                MacAddress([2, 0, 0, 0, 0, last]),
                LeaseInfo {
                    address: Ipv4Addr::new(10, 77, 0, last),
                    offered: true,
                },
            );
        }
        let decision = decide(Mode::Full, &leases, &request(1, 200, &[]));
        assert_eq!(decision.reason, Reason::PoolExhausted);
        assert_eq!(decision.action, Action::NoResponse);

        let mut scope = scope(Mode::Full);
        scope.pools.clear();
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(
            &directory(),
            &FakeLeases::default(),
            &ingress,
            &request(1, 200, &[]),
        );
        assert_eq!(decision.reason, Reason::NoPool);
        // A node with a reservation does not need the pool.
        let decision = reply(
            &directory(),
            &FakeLeases::default(),
            &ingress,
            &request(1, 12, &[]),
        );
        assert_eq!(fields(&decision).yiaddr, Some(Ipv4Addr::new(10, 77, 0, 12)));
    }

    #[test]
    fn request_for_the_right_address_is_acked_and_bound() {
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(3, 11, &[(50, &[10, 77, 0, 11]), (54, &[10, 77, 0, 1])]),
        );
        assert_eq!(message_type(&decision), Some(MessageType::Ack));
        assert_eq!(
            decision.lease,
            LeaseChange::Bind {
                address: Ipv4Addr::new(10, 77, 0, 11),
                seconds: 3600
            }
        );
    }

    #[test]
    fn request_for_a_wrong_address_is_nakked() {
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(3, 11, &[(50, &[10, 77, 0, 99])]),
        );
        assert_eq!(message_type(&decision), Some(MessageType::Nak));
        assert_eq!(decision.lease, LeaseChange::None);
        assert!(fields(&decision).yiaddr.is_none());
    }

    #[test]
    fn request_for_another_server_is_ignored() {
        let decision = decide(
            Mode::Full,
            &FakeLeases::default(),
            &request(3, 11, &[(50, &[10, 77, 0, 11]), (54, &[10, 77, 0, 2])]),
        );
        assert_eq!(decision.reason, Reason::OtherServerSelected);
        assert_eq!(decision.action, Action::NoResponse);
    }

    #[test]
    fn renewal_uses_ciaddr_and_free_requested_pool_address_is_granted() {
        let mut renew = request(3, 200, &[]);
        renew.ciaddr = Ipv4Addr::new(10, 77, 0, 150);
        let decision = decide(Mode::Full, &FakeLeases::default(), &renew);
        assert_eq!(message_type(&decision), Some(MessageType::Ack));
        assert_eq!(
            decision.lease,
            LeaseChange::Bind {
                address: Ipv4Addr::new(10, 77, 0, 150),
                seconds: 3600
            }
        );
        let empty = decide(Mode::Full, &FakeLeases::default(), &request(3, 200, &[]));
        assert_eq!(empty.reason, Reason::RequestWithoutAddress);
    }

    #[test]
    fn release_decline_and_inform() {
        let mut leases = FakeLeases::default();
        leases.by_mac.insert(
            mac(200),
            LeaseInfo {
                address: Ipv4Addr::new(10, 77, 0, 150),
                offered: false,
            },
        );
        let mut release = request(7, 200, &[]);
        release.ciaddr = Ipv4Addr::new(10, 77, 0, 150);
        let decision = decide(Mode::Full, &leases, &release);
        assert_eq!(decision.action, Action::NoResponse);
        assert_eq!(
            decision.lease,
            LeaseChange::Release {
                address: Ipv4Addr::new(10, 77, 0, 150)
            }
        );
        // A release of an address the client does not hold changes nothing.
        release.ciaddr = Ipv4Addr::new(10, 77, 0, 151);
        assert_eq!(
            decide(Mode::Full, &leases, &release).lease,
            LeaseChange::None
        );

        let decline = decide(
            Mode::Full,
            &leases,
            &request(4, 200, &[(50, &[10, 77, 0, 150])]),
        );
        assert_eq!(
            decline.lease,
            LeaseChange::Decline {
                address: Ipv4Addr::new(10, 77, 0, 150)
            }
        );

        let mut inform = request(8, 12, &[]);
        inform.ciaddr = Ipv4Addr::new(10, 77, 0, 12);
        let decision = decide(Mode::Full, &leases, &inform);
        assert_eq!(message_type(&decision), Some(MessageType::Ack));
        assert_eq!(decision.reason, Reason::Inform);
        assert_eq!(fields(&decision).yiaddr, None);
        assert_eq!(fields(&decision).lease_seconds, None);
        assert_eq!(decision.lease, LeaseChange::None);
    }

    #[test]
    fn proxy_mode_gives_boot_information_only() {
        let leases = FakeLeases::default();
        let decision = decide(Mode::Proxy, &leases, &request(1, 11, PXE_UEFI));
        assert_eq!(message_type(&decision), Some(MessageType::Offer));
        let offer = fields(&decision);
        assert_eq!(offer.yiaddr, None);
        assert_eq!(offer.lease_seconds, None);
        assert_eq!(offer.boot_file.as_deref(), Some("x86_64/ipxe.efi"));
        assert_eq!(offer.vendor_class.as_deref(), Some("PXEClient"));
        assert_eq!(offer.siaddr, Some(SERVER));
        assert_eq!(decision.lease, LeaseChange::None);
        // Nothing pending, or not a boot client: silence.
        assert_eq!(
            decide(Mode::Proxy, &leases, &request(1, 12, PXE_UEFI)).action,
            Action::NoResponse
        );
        assert_eq!(
            decide(Mode::Proxy, &leases, &request(1, 11, &[])).reason,
            Reason::NotABootClient
        );
        // A REQUEST to the site server is not ours; one on port 4011 is.
        let to_site = request(3, 11, &[(60, b"PXEClient"), (54, &[10, 77, 0, 9])]);
        assert_eq!(
            decide(Mode::Proxy, &leases, &to_site).reason,
            Reason::ProxyNotAddressed
        );
        let scope = scope(Mode::Proxy);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: true,
        };
        let decision = reply(
            &directory(),
            &leases,
            &ingress,
            &request(3, 11, &[(60, b"PXEClient"), (93, &[0, 7])]),
        );
        assert_eq!(message_type(&decision), Some(MessageType::Ack));
    }

    #[test]
    fn off_mode_and_non_client_messages_are_ignored() {
        let leases = FakeLeases::default();
        assert_eq!(
            decide(Mode::Off, &leases, &request(1, 11, PXE_UEFI)).reason,
            Reason::ModeOff
        );
        assert_eq!(
            decide(Mode::Full, &leases, &request(2, 11, &[])).reason,
            Reason::NotAClientMessage(MessageType::Offer)
        );
    }

    #[test]
    fn long_boot_urls_become_short_links() {
        let scope = scope(Mode::Full);
        let boot = BootSettings {
            server_name: Some(format!("{}.example", "deploy".repeat(12))),
            ..BootSettings::default()
        };
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(
            &directory(),
            &FakeLeases::default(),
            &ingress,
            &request(1, 11, IPXE),
        );
        let file = fields(&decision).boot_file.clone().unwrap();
        assert!(file.len() <= MAX_FILE_FIELD_LENGTH, "{file}");
        let link = decision.short_link.clone().unwrap();
        assert!(file.contains(&format!("/boot/su/{}", link.id)), "{file}");
        assert!(
            link.target
                .ends_with("/boot/by-mac/52:54:00:00:00:0b/boot.ipxe")
        );
        // Stable across requests.
        let again = reply(
            &directory(),
            &FakeLeases::default(),
            &ingress,
            &request(1, 11, IPXE),
        );
        assert_eq!(again.short_link, Some(link));
    }

    #[test]
    fn dns_and_ntp_come_from_node_then_everything_then_scope() {
        let mut directory = directory();
        let mut configured = node("dns", 21, None, InsecureProtocols::Never);
        configured.network.dns_servers = vec![Ipv4Addr::new(192, 0, 2, 53)];
        configured.network.domain = Some("node.example".into());
        configured.network.ntp_servers = vec![Ipv4Addr::new(192, 0, 2, 123)];
        directory.insert(configured);
        directory.default_network.dns_servers = vec![Ipv4Addr::new(192, 0, 2, 1)];
        let scope = scope(Mode::Full);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let leases = FakeLeases::default();
        let own = reply(&directory, &leases, &ingress, &request(1, 21, &[]));
        assert_eq!(fields(&own).dns_servers, vec![Ipv4Addr::new(192, 0, 2, 53)]);
        assert_eq!(fields(&own).domain_name.as_deref(), Some("node.example"));
        assert_eq!(
            fields(&own).ntp_servers,
            vec![Ipv4Addr::new(192, 0, 2, 123)]
        );
        let unknown = reply(&directory, &leases, &ingress, &request(1, 222, &[]));
        assert_eq!(
            fields(&unknown).dns_servers,
            vec![Ipv4Addr::new(192, 0, 2, 1)]
        );
        // Nothing configured on the node: the scope's settings.
        let idle = reply(&directory, &leases, &ingress, &request(1, 12, &[]));
        assert_eq!(fields(&idle).dns_servers, vec![SERVER]);
        assert_eq!(
            fields(&idle).domain_name.as_deref(),
            Some("cluster.example")
        );
    }

    #[test]
    fn node_gateway_overrides_scope_router() {
        let mut directory = directory();
        let mut gatewayed = node("gw", 20, None, InsecureProtocols::Never);
        gatewayed.interfaces[0].gateway = Some(Ipv4Addr::new(10, 77, 0, 253));
        directory.insert(gatewayed);
        let scope = scope(Mode::Full);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(
            &directory,
            &FakeLeases::default(),
            &ingress,
            &request(1, 20, &[]),
        );
        assert_eq!(
            fields(&decision).routers,
            vec![Ipv4Addr::new(10, 77, 0, 253)]
        );
    }

    #[test]
    fn reservation_on_another_subnet_falls_back_to_the_pool() {
        let mut scope = scope(Mode::Full);
        scope.subnet = "10.99.0.0/24".parse().unwrap();
        scope.pools = Pool::default_for(scope.subnet).into_iter().collect();
        scope.server_address = Ipv4Addr::new(10, 99, 0, 1);
        let boot = BootSettings::default();
        let ingress = Ingress {
            scope: &scope,
            boot: &boot,
            pxe_port: false,
        };
        let decision = reply(
            &directory(),
            &FakeLeases::default(),
            &ingress,
            &request(1, 12, &[]),
        );
        assert_eq!(
            fields(&decision).yiaddr,
            Some(Ipv4Addr::new(10, 99, 0, 128))
        );
        assert_eq!(decision.node.as_deref(), Some("idle"));
    }

    #[test]
    fn default_pool_is_the_upper_half() {
        let pool = Pool::default_for("10.77.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(pool.first, Ipv4Addr::new(10, 77, 128, 0));
        assert_eq!(pool.last, Ipv4Addr::new(10, 77, 255, 254));
        assert!(Pool::default_for("10.0.0.0/31".parse().unwrap()).is_none());
        assert_eq!(
            Pool::default_for("10.0.0.0/30".parse().unwrap()),
            Some(Pool {
                first: Ipv4Addr::new(10, 0, 0, 2),
                last: Ipv4Addr::new(10, 0, 0, 2)
            })
        );
    }

    #[test]
    fn every_reason_has_a_distinct_code() {
        let reasons = [
            Reason::ModeOff,
            Reason::NotEthernet,
            Reason::NotAClientMessage(MessageType::Ack),
            Reason::BootChain {
                profile: Arc::from("p"),
            },
            Reason::SecureBootChain {
                profile: Arc::from("p"),
                disk_image: false,
            },
            Reason::DiscoveryBoot,
            Reason::NothingPending,
            Reason::DiscoveryNotAllowed,
            Reason::NotABootClient,
            Reason::InsecureRefused,
            Reason::UnsupportedArchitecture(1),
            Reason::PoolExhausted,
            Reason::NoPool,
            Reason::OtherServerSelected,
            Reason::WrongAddress { requested: SERVER },
            Reason::RequestWithoutAddress,
            Reason::ProxyNotAddressed,
            Reason::UnknownRelaySubnet(SERVER),
            Reason::Released,
            Reason::Declined,
            Reason::Inform,
        ];
        let codes: std::collections::HashSet<_> = reasons.iter().map(Reason::code).collect();
        assert_eq!(codes.len(), reasons.len());
        assert!(reasons.iter().all(|reason| !reason.to_string().is_empty()));
        let _ = ClientArchitecture(0);
    }
}
