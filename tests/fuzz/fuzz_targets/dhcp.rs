//! Fuzz the DHCPv4 request decoder (`proto::dhcp::decode_request`, the one the service uses)
//! and what the service does with a decoded request before any I/O: the pure reply policy
//! (`dhcp::policy::reply`) against a small directory and lease table, and the encoding of its
//! reply (`proto::dhcp::encode_reply`).
//!
//! The input is one datagram as a client (or a relay) sends it to port 67 or 4011. Each decoded
//! request is decided three times: full mode on port 67, proxy mode on port 67 and proxy mode on
//! port 4011. Nothing may panic; besides that:
//! - a reply answers the request's message type (OFFER to DISCOVER, ACK or NAK to REQUEST, ACK
//!   to INFORM; proxyDHCP: OFFER on port 67, ACK to a REQUEST) and proxyDHCP never hands out an
//!   address or changes a lease;
//! - an offered or bound address is the reply's `yiaddr`, lies in the scope's subnet and is not
//!   held by another MAC or quarantined after a DECLINE;
//! - an encoded reply decodes as a BOOTREPLY with the request's `xid`, the decided message type
//!   and the decided server identifier.

#![no_main]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock};

use confluent::deploy::directory::{Directory, InsecureProtocols, NodeBoot, NodeInterface};
use confluent::dhcp::policy::{
    self, Action, BootSettings, Ingress, LeaseChange, LeaseInfo, LeaseView, Mode, Pool, Scope,
};
use confluent::osimage::profile::BootLoader;
use confluent::proto::dhcp::{self as wire, DhcpRequest, MacAddress, MessageType};
use libfuzzer_sys::fuzz_target;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// A client that is no node and holds a bound lease.
const OTHER_CLIENT: MacAddress = MacAddress([0x52, 0x54, 0, 0x12, 0x34, 0x60]);
const OTHER_CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
/// An address declined by a client and quarantined.
const DECLINED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 201);

/// The MACs of the captures in `tests/fixtures/dhcp/` (QEMU's 52:54:00:12:34:5x), so that the
/// seeds reach the known-node paths: 56 has a pending iPXE profile, 57 a pending profile asking
/// for shim, and the node owning the UUID of `seed-uefi-pxe-by-uuid.bin` (MAC 59, not listed)
/// a pending profile without insecure protocols. Any other MAC is an unknown machine, which the
/// discovery policy allows to boot.
fn directory() -> &'static Directory {
    static DIRECTORY: LazyLock<Directory> = LazyLock::new(|| {
        let node = |name: &str, last: u8, mac: bool, profile: &str, insecure| NodeBoot {
            name: Arc::from(name),
            interfaces: vec![NodeInterface {
                name: Arc::from("net.eth0"),
                mac: mac.then_some(MacAddress([0x52, 0x54, 0, 0x12, 0x34, last])),
                address: Some(Ipv4Addr::new(10, 77, 0, last)),
                prefix: Some(24),
                gateway: None,
            }],
            uuid: None,
            pending_profile: Some(Arc::from(profile)),
            insecure,
            network: Default::default(),
        };
        let mut directory = Directory::default();
        directory.insert(node(
            "ipxe",
            0x56,
            true,
            "rocky-9",
            InsecureProtocols::Firmware,
        ));
        directory.insert(node(
            "shim",
            0x57,
            true,
            "debian-sb",
            InsecureProtocols::Firmware,
        ));
        let mut by_uuid = node("by-uuid", 0x59, false, "rocky-9", InsecureProtocols::Never);
        by_uuid.uuid = Some("00112233-4455-6677-8899-aabbccddeeff".into());
        directory.insert(by_uuid);
        directory.discovery_boot_allowed = true;
        directory.default_insecure = InsecureProtocols::Firmware;
        directory
            .set_profile_boot_loaders(HashMap::from([(Arc::from("debian-sb"), BootLoader::Shim)]));
        directory
    });
    &DIRECTORY
}

fn scope(mode: Mode) -> Scope {
    let subnet = "10.77.0.0/24".parse().expect("a valid subnet");
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

/// One bound lease of another client and one quarantined address.
struct Leases;

impl LeaseView for Leases {
    fn lease_of(&self, mac: &MacAddress) -> Option<LeaseInfo> {
        (*mac == OTHER_CLIENT).then_some(LeaseInfo {
            address: OTHER_CLIENT_ADDRESS,
            offered: false,
        })
    }

    fn holder_of(&self, address: Ipv4Addr) -> Option<Option<MacAddress>> {
        match address {
            OTHER_CLIENT_ADDRESS => Some(Some(OTHER_CLIENT)),
            DECLINED => Some(None),
            _ => None,
        }
    }
}

fn check(request: &DhcpRequest, mode: Mode, pxe_port: bool) {
    let scope = scope(mode);
    let boot = BootSettings::default();
    let ingress = Ingress {
        scope: &scope,
        boot: &boot,
        pxe_port,
    };
    let decision = policy::reply(directory(), &Leases, &ingress, request);
    let Action::Respond {
        message_type,
        fields,
    } = &decision.action
    else {
        return;
    };
    let allowed: &[MessageType] = match (mode, request.message_type) {
        (Mode::Proxy, MessageType::Discover) => &[MessageType::Offer],
        (Mode::Proxy, MessageType::Request) => &[MessageType::Ack],
        (Mode::Full, MessageType::Discover) => &[MessageType::Offer],
        (Mode::Full, MessageType::Request) => &[MessageType::Ack, MessageType::Nak],
        (Mode::Full, MessageType::Inform) => &[MessageType::Ack],
        _ => &[],
    };
    assert!(
        allowed.contains(message_type),
        "{mode:?} answered {:?} with {message_type:?}",
        request.message_type
    );
    match decision.lease {
        LeaseChange::Offer { address } | LeaseChange::Bind { address, .. } => {
            assert_eq!(mode, Mode::Full, "proxyDHCP changed a lease");
            assert_eq!(fields.yiaddr, Some(address));
            assert!(
                scope.subnet.contains(&address),
                "{address} is off the subnet"
            );
            assert_ne!(address, DECLINED, "a quarantined address was handed out");
            if request.mac != Some(OTHER_CLIENT) {
                assert_ne!(
                    address, OTHER_CLIENT_ADDRESS,
                    "another client's address was handed out"
                );
            }
        }
        LeaseChange::None => {
            if mode == Mode::Proxy || *message_type == MessageType::Inform {
                assert!(fields.yiaddr.is_none_or(|address| address.is_unspecified()));
            }
        }
        change => panic!("a reply with the lease change {change:?}"),
    }
    if let Ok(bytes) = wire::encode_reply(request, *message_type, fields) {
        let reply = wire::decode_reply(&bytes).expect("an encoded reply decodes");
        assert_eq!(reply.xid, request.xid);
        assert_eq!(reply.message_type, *message_type);
        assert_eq!(reply.server_identifier, fields.server_identifier);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = wire::decode_request(data) else {
        return;
    };
    check(&request, Mode::Full, false);
    check(&request, Mode::Proxy, false);
    check(&request, Mode::Proxy, true);
});
