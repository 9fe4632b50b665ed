//! The DHCP service's view of the configuration: every node that can be recognised on the wire
//! (by MAC address in `net.<x>.hwaddr` or by `id.uuid`), with what the reply policy needs of it
//! (reserved addresses, pending profile, insecure-protocol setting), indexed for one lookup per
//! packet.
//!
//! Built from a configuration [`Store`] and kept current from change notifications
//! ([`Directory::refresh_nodes`]), so a packet never walks 100,000 nodes. It also carries the
//! `bootloader` setting of the profiles (read from their `profile.yaml` by
//! [`crate::osimage::profile::ProfileScan`] in `live.rs`), so the policy can tell whether a node's
//! pending profile asks for the Secure Boot chain. Pure: no I/O.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::model::{ResolvedValue, Store};
use crate::osimage::profile::BootLoader;
use crate::proto::dhcp::MacAddress;

/// Group whose attributes apply to machines that are not (yet) nodes.
const EVERYTHING: &str = "everything";

/// `deployment.useinsecureprotocols`: which boot phases may use TFTP and plain HTTP
/// (reference 10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InsecureProtocols {
    /// Unset or `never`: HTTPS only, so only UEFI HTTP boot is offered.
    #[default]
    Never,
    /// `firmware`: PXE/TFTP and plain HTTP during the firmware phase.
    Firmware,
    /// `always`.
    Always,
}

impl InsecureProtocols {
    fn parse(text: &str) -> InsecureProtocols {
        match text.trim() {
            "always" => InsecureProtocols::Always,
            "firmware" => InsecureProtocols::Firmware,
            _ => InsecureProtocols::Never,
        }
    }

    /// Whether firmware may fetch over TFTP or plain HTTP.
    pub fn allows_firmware(self) -> bool {
        self != InsecureProtocols::Never
    }
}

/// One network interface of a node: `net.<x>.hwaddr` with the `net.<x>.ipv4_address` and
/// `net.<x>.ipv4_gateway` of the same `<x>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInterface {
    /// `net.<x>` (or `net` for the unnamed interface).
    pub name: Arc<str>,
    pub mac: Option<MacAddress>,
    pub address: Option<Ipv4Addr>,
    /// The `/prefix` written after the address, if any.
    pub prefix: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
}

/// What the DHCP policy knows of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBoot {
    pub name: Arc<str>,
    pub interfaces: Vec<NodeInterface>,
    /// `id.uuid`, lower case.
    pub uuid: Option<String>,
    pub pending_profile: Option<Arc<str>>,
    pub insecure: InsecureProtocols,
    /// `dns.servers`, `dns.domain`, `ntp.servers` (IPv4 addresses only; names are skipped).
    pub network: NetworkOptions,
}

/// DNS and NTP settings handed out with an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkOptions {
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub ntp_servers: Vec<Ipv4Addr>,
}

fn parse_addresses(text: &str) -> Vec<Ipv4Addr> {
    text.split([',', ' '])
        .filter_map(|item| item.trim().parse().ok())
        .collect()
}

impl NetworkOptions {
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> NetworkOptions {
        NetworkOptions {
            dns_servers: lookup("dns.servers")
                .map(|text| parse_addresses(&text))
                .unwrap_or_default(),
            domain: lookup("dns.domain")
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty()),
            ntp_servers: lookup("ntp.servers")
                .map(|text| parse_addresses(&text))
                .unwrap_or_default(),
        }
    }
}

/// Nodes indexed by MAC, UUID and reserved address, plus the settings for unknown machines.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    nodes: HashMap<Arc<str>, Arc<NodeBoot>>,
    by_mac: HashMap<MacAddress, Arc<NodeBoot>>,
    by_uuid: HashMap<String, Arc<NodeBoot>>,
    reserved: HashMap<Ipv4Addr, Arc<NodeBoot>>,
    /// `discovery.policy` of the `everything` group allows booting unknown machines.
    pub discovery_boot_allowed: bool,
    /// `deployment.useinsecureprotocols` of the `everything` group, for unknown machines.
    pub default_insecure: InsecureProtocols,
    /// DNS and NTP settings of the `everything` group, for unknown machines.
    pub default_network: NetworkOptions,
    /// Profiles whose `bootloader` is not the default; see [`Directory::boot_loader_of`].
    profile_boot_loaders: HashMap<Arc<str>, BootLoader>,
}

fn text(store: &Store, node: &str, attribute: &str) -> Option<Arc<str>> {
    match store.resolve(node, attribute)?.value {
        ResolvedValue::Text(value) if !value.trim().is_empty() => Some(value),
        _ => None,
    }
}

/// Parse `a.b.c.d` or `a.b.c.d/prefix`.
fn parse_address(text: &str) -> Option<(Ipv4Addr, Option<u8>)> {
    let (address, prefix) = match text.trim().split_once('/') {
        Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
        None => (text.trim(), None),
    };
    let prefix = prefix.filter(|prefix| *prefix <= 32);
    Some((address.parse().ok()?, prefix))
}

impl NodeBoot {
    /// Read one node's DHCP-relevant attributes (resolving inheritance and expressions).
    pub fn from_store(store: &Store, name: &str) -> Option<NodeBoot> {
        let (key, node) = store.nodes.get_key_value(name)?;
        let mut interfaces: Vec<NodeInterface> = Vec::new();
        for attribute in store.effective_attribute_names(node) {
            let Some(prefix) = attribute.strip_suffix(".hwaddr") else {
                continue;
            };
            if !(prefix == "net" || prefix.starts_with("net.")) {
                continue;
            }
            let mac = text(store, key, &attribute).and_then(|mac| MacAddress::parse(&mac));
            let parsed = text(store, key, &format!("{prefix}.ipv4_address"))
                .and_then(|address| parse_address(&address));
            let gateway = text(store, key, &format!("{prefix}.ipv4_gateway"))
                .and_then(|gateway| gateway.trim().parse().ok());
            interfaces.push(NodeInterface {
                name: Arc::from(prefix),
                mac,
                address: parsed.map(|(address, _)| address),
                prefix: parsed.and_then(|(_, prefix)| prefix),
                gateway,
            });
        }
        Some(NodeBoot {
            name: key.clone(),
            interfaces,
            uuid: text(store, key, "id.uuid").map(|uuid| uuid.trim().to_ascii_lowercase()),
            pending_profile: text(store, key, "deployment.pendingprofile"),
            insecure: text(store, key, "deployment.useinsecureprotocols")
                .map(|value| InsecureProtocols::parse(&value))
                .unwrap_or_default(),
            network: NetworkOptions::from_lookup(|attribute| {
                text(store, key, attribute).map(|value| value.to_string())
            }),
        })
    }
}

impl Directory {
    /// Index every node of the configuration.
    pub fn from_store(store: &Store) -> Directory {
        let mut directory = Directory::default();
        directory.refresh_globals(store);
        for name in store.nodes.keys() {
            if let Some(node) = NodeBoot::from_store(store, name) {
                directory.insert(node);
            }
        }
        directory
    }

    /// Re-read the settings for unknown machines from the `everything` group.
    pub fn refresh_globals(&mut self, store: &Store) {
        let group = store.groups.get(EVERYTHING);
        let group_text = |attribute: &str| -> Option<String> {
            match group?.attributes.get(attribute)? {
                crate::config::model::Stored::Value(value) => Some(value.to_string()),
                _ => None,
            }
        };
        self.discovery_boot_allowed = group_text("discovery.policy").is_some_and(|policy| {
            policy
                .split(',')
                .any(|term| matches!(term.trim(), "pxe" | "open"))
        });
        self.default_insecure = group_text("deployment.useinsecureprotocols")
            .map(|value| InsecureProtocols::parse(&value))
            .unwrap_or_default();
        self.default_network = NetworkOptions::from_lookup(group_text);
    }

    /// Re-read the given nodes (changed, created, renamed or deleted) from `store`.
    pub fn refresh_nodes<'a>(&mut self, store: &Store, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.remove(name);
            if let Some(node) = NodeBoot::from_store(store, name) {
                self.insert(node);
            }
        }
    }

    /// Add or replace a node.
    pub fn insert(&mut self, node: NodeBoot) {
        self.remove(&node.name);
        let node = Arc::new(node);
        for interface in &node.interfaces {
            if let Some(mac) = interface.mac {
                self.by_mac.insert(mac, node.clone());
            }
            if let Some(address) = interface.address {
                self.reserved.insert(address, node.clone());
            }
        }
        if let Some(uuid) = &node.uuid {
            self.by_uuid.insert(uuid.clone(), node.clone());
        }
        self.nodes.insert(node.name.clone(), node);
    }

    /// Forget a node.
    pub fn remove(&mut self, name: &str) {
        let Some(node) = self.nodes.remove(name) else {
            return;
        };
        // Only drop index entries that still point at this node: another node may have taken
        // over a MAC or address since (a configuration error, but not ours to crash on).
        for interface in &node.interfaces {
            if let Some(mac) = interface.mac
                && self
                    .by_mac
                    .get(&mac)
                    .is_some_and(|owner| owner.name == node.name)
            {
                self.by_mac.remove(&mac);
            }
            if let Some(address) = interface.address
                && self
                    .reserved
                    .get(&address)
                    .is_some_and(|owner| owner.name == node.name)
            {
                self.reserved.remove(&address);
            }
        }
        if let Some(uuid) = &node.uuid
            && self
                .by_uuid
                .get(uuid)
                .is_some_and(|owner| owner.name == node.name)
        {
            self.by_uuid.remove(uuid);
        }
    }

    pub fn by_mac(&self, mac: &MacAddress) -> Option<&Arc<NodeBoot>> {
        self.by_mac.get(mac)
    }

    /// Lookup by `id.uuid` in its usual text form (lower case).
    pub fn by_uuid(&self, uuid: &str) -> Option<&Arc<NodeBoot>> {
        self.by_uuid.get(uuid)
    }

    /// The node an address is reserved for, if any.
    pub fn reserved_for(&self, address: Ipv4Addr) -> Option<&Arc<NodeBoot>> {
        self.reserved.get(&address)
    }

    /// Lookup by node name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<NodeBoot>> {
        self.nodes.get(name)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The boot loader profile `profile` asks for (the default for profiles not known).
    pub fn boot_loader_of(&self, profile: &str) -> BootLoader {
        self.profile_boot_loaders
            .get(profile)
            .copied()
            .unwrap_or_default()
    }

    /// Replace the profiles' boot loader settings (those that are not the default).
    pub fn set_profile_boot_loaders(&mut self, loaders: HashMap<Arc<str>, BootLoader>) {
        self.profile_boot_loaders = loaders;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Op, Stored};

    fn set(store: &mut Store, node: &str, attribute: &str, value: &str) {
        store.apply(&Op::NodeSet {
            node: Arc::from(node),
            attribute: Arc::from(attribute),
            stored: Stored::Value(Arc::from(value)),
        });
    }

    pub(crate) fn sample_store() -> Store {
        let mut store = Store::new();
        for node in ["n1", "n2"] {
            store.apply(&Op::NodeCreate {
                node: Arc::from(node),
            });
        }
        set(&mut store, "n1", "net.eth0.hwaddr", "52:54:00:00:00:01");
        set(&mut store, "n1", "net.eth0.ipv4_address", "10.77.0.11/24");
        set(&mut store, "n1", "net.eth0.ipv4_gateway", "10.77.0.254");
        set(&mut store, "n1", "net.ib0.hwaddr", "52:54:00:00:01:01");
        set(&mut store, "n1", "net.ib0.ipv4_address", "10.88.0.11");
        set(
            &mut store,
            "n1",
            "id.uuid",
            "0011AABB-0000-0000-0000-000000000001",
        );
        set(
            &mut store,
            "n1",
            "deployment.pendingprofile",
            "rocky-9-x86_64-default",
        );
        set(
            &mut store,
            "n1",
            "deployment.useinsecureprotocols",
            "firmware",
        );
        set(&mut store, "n2", "net.hwaddr", "52-54-00-00-00-02");
        store
    }

    #[test]
    fn nodes_are_indexed_by_mac_uuid_and_address() {
        let directory = Directory::from_store(&sample_store());
        assert_eq!(directory.node_count(), 2);
        let n1 = directory
            .by_mac(&MacAddress::parse("52:54:00:00:00:01").unwrap())
            .unwrap();
        assert_eq!(&*n1.name, "n1");
        assert_eq!(n1.insecure, InsecureProtocols::Firmware);
        assert_eq!(
            n1.pending_profile.as_deref(),
            Some("rocky-9-x86_64-default")
        );
        let eth0 = n1
            .interfaces
            .iter()
            .find(|i| &*i.name == "net.eth0")
            .unwrap();
        assert_eq!(eth0.address, Some(Ipv4Addr::new(10, 77, 0, 11)));
        assert_eq!(eth0.prefix, Some(24));
        assert_eq!(eth0.gateway, Some(Ipv4Addr::new(10, 77, 0, 254)));
        assert_eq!(
            &*directory
                .by_uuid("0011aabb-0000-0000-0000-000000000001")
                .unwrap()
                .name,
            "n1"
        );
        assert_eq!(
            &*directory
                .reserved_for(Ipv4Addr::new(10, 88, 0, 11))
                .unwrap()
                .name,
            "n1"
        );
        let n2 = directory
            .by_mac(&MacAddress::parse("52:54:00:00:00:02").unwrap())
            .unwrap();
        assert_eq!(n2.insecure, InsecureProtocols::Never);
        assert!(n2.pending_profile.is_none());
    }

    #[test]
    fn refresh_follows_changes_and_deletions() {
        let mut store = sample_store();
        let mut directory = Directory::from_store(&store);
        set(&mut store, "n2", "net.hwaddr", "52:54:00:00:00:22");
        directory.refresh_nodes(&store, ["n2"]);
        assert!(
            directory
                .by_mac(&MacAddress::parse("52:54:00:00:00:02").unwrap())
                .is_none()
        );
        assert!(
            directory
                .by_mac(&MacAddress::parse("52:54:00:00:00:22").unwrap())
                .is_some()
        );
        store.apply(&Op::NodeDelete {
            node: Arc::from("n1"),
        });
        directory.refresh_nodes(&store, ["n1"]);
        assert!(
            directory
                .reserved_for(Ipv4Addr::new(10, 77, 0, 11))
                .is_none()
        );
        assert_eq!(directory.node_count(), 1);
    }

    #[test]
    fn globals_come_from_the_everything_group() {
        let mut store = sample_store();
        assert!(!Directory::from_store(&store).discovery_boot_allowed);
        store.apply(&Op::GroupSet {
            group: Arc::from("everything"),
            attribute: Arc::from("discovery.policy"),
            stored: Stored::Value(Arc::from("permissive,pxe")),
        });
        store.apply(&Op::GroupSet {
            group: Arc::from("everything"),
            attribute: Arc::from("deployment.useinsecureprotocols"),
            stored: Stored::Value(Arc::from("always")),
        });
        store.apply(&Op::GroupSet {
            group: Arc::from("everything"),
            attribute: Arc::from("dns.servers"),
            stored: Stored::Value(Arc::from("10.77.0.53, ns.example, 10.77.0.54")),
        });
        let directory = Directory::from_store(&store);
        assert_eq!(
            directory.default_network.dns_servers,
            vec![Ipv4Addr::new(10, 77, 0, 53), Ipv4Addr::new(10, 77, 0, 54)]
        );
        assert!(directory.discovery_boot_allowed);
        assert_eq!(directory.default_insecure, InsecureProtocols::Always);
        // Group values are inherited by nodes too.
        let n2 = directory
            .by_mac(&MacAddress::parse("52:54:00:00:00:02").unwrap())
            .unwrap();
        assert_eq!(n2.insecure, InsecureProtocols::Always);
        assert_eq!(n2.network.dns_servers.len(), 2);
    }
}
