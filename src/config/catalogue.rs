//! The node attribute catalogue: every attribute name a node or group may carry, its one-line
//! description, where it may be set, how its value is validated and normalised, and how it is
//! protected at rest.
//!
//! This module owns attribute *names* (aliases, the `hm.` prefix, the open-ended `net.<x>.<leaf>`,
//! `power.<inlet>.<leaf>` and `custom.*` families, wildcard matching, "did you mean" suggestions)
//! and attribute *values* in isolation (syntax checks and canonical forms).
//!
//! It must not know about stored nodes or groups, inheritance, expressions or encryption: it only
//! says whether an attribute is secret ([`sensitivity`]) or may hold an expression
//! ([`supports_expressions`]); other modules act on that. It performs no I/O.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ValueKind as K;

/// How the value of an attribute is validated and normalised by [`validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Free text, stored as given.
    Text,
    /// A boolean, normalised to `true` or `false`.
    Bool,
    /// A non-negative decimal integer, normalised to its plain decimal form.
    Integer,
    /// A non-negative decimal integer within an inclusive range.
    IntegerRange {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A comma-separated free list; members are trimmed, empty members and duplicates dropped.
    List,
    /// Exactly one of the listed values (fnmatch patterns allowed in the table), matched
    /// case-insensitively.
    ValidValues(&'static [&'static str]),
    /// One of the listed values, or an ISO-8601 time (used by `deployment.apiarmed`, whose
    /// expiry form is a time).
    ValidValuesOrTimestamp(&'static [&'static str]),
    /// A comma list whose members are each one of the listed values.
    ValidList(&'static [&'static str]),
    /// A comma list of `key=value` pairs whose keys are each one of the listed keys.
    ValidListKeys(&'static [&'static str]),
    /// A 48-bit MAC address, normalised to lowercase colon form.
    MacAddress,
    /// An IPv4 address with an optional `/prefix`.
    Ipv4WithPrefix,
    /// An IPv6 address with an optional `/prefix`.
    Ipv6WithPrefix,
    /// A bare IPv4 address.
    Ipv4Address,
    /// A bare IPv6 address, optionally with a `%zone` suffix.
    Ipv6Address,
    /// A bare IPv4 or IPv6 address.
    IpAddress,
    /// A comma list of IPv4/IPv6 addresses or host names.
    IpList,
    /// A comma list of CIDRs (`address/prefix`).
    Cidrs,
    /// A host name or IP address, optionally with `/prefix` (addresses) or `:port`
    /// (`[v6]:port` for IPv6), as used for `hardwaremanagement.manager`.
    Endpoint,
    /// A comma list of group names.
    Groups,
    /// A comma list of node names.
    Nodes,
    /// A noderange expression (only shallowly checked here; the noderange module parses it).
    Noderange,
    /// An ISO-8601 time such as `2024-05-01T12:00:00Z`.
    Timestamp,
    /// A UUID, normalised to lowercase hyphenated form.
    Uuid,
}

/// How an attribute's value is protected at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Stored as given.
    Plain,
    /// Encrypted at rest and only decrypted on explicit request: `secret.*`,
    /// `custom.nodesecret.*`.
    Secret,
    /// Stored only as one-way hashes: `crypted.*`.
    Crypted,
}

/// One entry of the attribute catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeSpec {
    /// The canonical attribute name (`net.hwaddr` stands for every `net.<x>.hwaddr`).
    pub name: &'static str,
    /// A one-line description shown to users.
    pub description: &'static str,
    /// How the value is validated.
    pub kind: ValueKind,
    /// Whether the attribute may be set on a node.
    pub node: bool,
    /// Whether the attribute may be set on a group.
    pub group: bool,
}

impl AttributeSpec {
    /// How values of this attribute are protected at rest.
    pub fn sensitivity(&self) -> Sensitivity {
        sensitivity(self.name)
    }
}

/// A name that is not a catalogue attribute, an alias or one of the open-ended families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAttributeError {
    /// The name as the user wrote it.
    pub name: String,
    /// Why the name is malformed, when that is more specific than "unknown".
    pub reason: Option<&'static str>,
    /// The closest valid name, when one is close enough to be a likely typo.
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownAttributeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "unknown attribute '{}'", self.name)?;
        if let Some(reason) = self.reason {
            write!(formatter, ": {reason}")?;
        }
        if let Some(suggestion) = &self.suggestion {
            write!(formatter, " (did you mean '{suggestion}'?)")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownAttributeError {}

/// A value rejected by [`validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValueError {
    /// The attribute the value was meant for.
    pub attribute: String,
    /// The offending value, masked for secrets and shortened when very long.
    pub value: String,
    /// What was expected, or which part of the value is wrong.
    pub reason: String,
}

impl fmt::Display for InvalidValueError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "invalid value '{}' for {}: {}",
            self.value, self.attribute, self.reason
        )
    }
}

impl std::error::Error for InvalidValueError {}

const HARDWARE_MANAGEMENT_METHODS: &[&str] = &[
    "affluent",
    "cnos",
    "cooltera",
    "deltapdu",
    "eatonpdu",
    "enclosure",
    "enlogic",
    "enos",
    "geist",
    "ipmi",
    "null",
    "nxos",
    "pdu",
    "proxmox",
    "raritan",
    "redfish",
    "srlinux",
    "vcenter",
];
const IP_METHODS: &[&str] = &["dhcp", "static", "firmwaredhcp", "firmwarenone", "none"];

const fn both(name: &'static str, description: &'static str, kind: ValueKind) -> AttributeSpec {
    AttributeSpec {
        name,
        description,
        kind,
        node: true,
        group: true,
    }
}

const fn node_only(
    name: &'static str,
    description: &'static str,
    kind: ValueKind,
) -> AttributeSpec {
    AttributeSpec {
        name,
        description,
        kind,
        node: true,
        group: false,
    }
}

const fn group_only(
    name: &'static str,
    description: &'static str,
    kind: ValueKind,
) -> AttributeSpec {
    AttributeSpec {
        name,
        description,
        kind,
        node: false,
        group: true,
    }
}

/// The catalogue, in the order `nodeattrib all` lists it.
static CATALOGUE: &[AttributeSpec] = &[
    // Identity and general.
    node_only(
        "groups",
        "ordered list of static groups the node belongs to (earlier groups win inheritance)",
        K::Groups,
    ),
    group_only("nodes", "static member nodes of the group", K::Nodes),
    group_only(
        "noderange",
        "noderange whose expansion gives the members of a dynamic group",
        K::Noderange,
    ),
    node_only(
        "alias",
        "alternate names by which the node may be addressed anywhere a node name is accepted",
        K::List,
    ),
    both(
        "type",
        "classification of the node; switches are polled for MAC address tables",
        K::ValidValues(&["switch", "server", "rackmount", "dense", "enclosure"]),
    ),
    node_only(
        "id.index",
        "server-allocated numeric index of the node",
        K::Integer,
    ),
    both(
        "id.uuid",
        "SMBIOS/DMI UUID of the node, used to match PXE requests and discovered systems",
        K::Uuid,
    ),
    both(
        "id.serial",
        "manufacturer serial number of the node",
        K::Text,
    ),
    both(
        "id.model",
        "model number of the node (the more specific one when there is also a model name)",
        K::Text,
    ),
    both(
        "info.note",
        "free-form notes by administrators, for human use only",
        K::Text,
    ),
    // Location and enclosure.
    both("location.room", "room the node is in", K::Text),
    both("location.row", "row of the rack the node is in", K::Text),
    both("location.rack", "rack the node is in", K::Text),
    both(
        "location.u",
        "position of the node in its rack, in rack units",
        K::Integer,
    ),
    both(
        "location.height",
        "height of the node in rack units",
        K::Integer,
    ),
    both(
        "enclosure.manager",
        "node that manages the chassis this node is in (for example an SMM)",
        K::Text,
    ),
    both(
        "enclosure.bay",
        "bay of the node in its enclosure (a number or a form like 1a)",
        K::Text,
    ),
    both(
        "enclosure.extends",
        "enclosure manager one step closer to the uplink in a daisy chain of enclosure managers",
        K::Text,
    ),
    // Hardware management.
    both(
        "hardwaremanagement.manager",
        "address of the node's BMC, optionally with /prefix or :port",
        K::Endpoint,
    ),
    both(
        "hardwaremanagement.method",
        "plugin used for power, sensors, inventory and similar operations",
        K::ValidValues(HARDWARE_MANAGEMENT_METHODS),
    ),
    both(
        "hardwaremanagement.manager_tls_name",
        "name to verify the BMC's TLS certificate against instead of its address",
        K::Text,
    ),
    both(
        "hardwaremanagement.port",
        "network port the BMC is set to use during deployment (for example ocp, ml2, lom, dedicated)",
        K::Text,
    ),
    both(
        "hardwaremanagement.vlan",
        "VLAN the BMC is set to tag its traffic with during deployment",
        K::IntegerRange { min: 1, max: 4094 },
    ),
    both(
        "secret.hardwaremanagementuser",
        "user name for the BMC or switch (aliases bmcuser, switchuser)",
        K::Text,
    ),
    both(
        "secret.hardwaremanagementpassword",
        "password for the BMC or switch (aliases bmcpass, switchpass)",
        K::Text,
    ),
    both(
        "secret.ipmikg",
        "optional IPMI integrity key (Kg); the password is used when unset",
        K::Text,
    ),
    both(
        "secret.snmpcommunity",
        "SNMPv1/v2c community string",
        K::Text,
    ),
    both(
        "snmp.privacyprotocol",
        "SNMPv3 privacy protocol (des when unset)",
        K::ValidValues(&["aes", "des"]),
    ),
    both(
        "pubkeys.tls_hardwaremanager",
        "pinned fingerprint of the BMC's TLS certificate, like sha256$<hex>",
        K::Text,
    ),
    both(
        "pubkeys.tls",
        "pinned fingerprint of the TLS certificate of the node's operating system",
        K::Text,
    ),
    both(
        "pubkeys.ssh",
        "pinned SSH host key of the node's operating system",
        K::Text,
    ),
    both(
        "pubkeys.addpolicy",
        "what to do with an unknown public key (tofu when unset)",
        K::ValidValues(&["tofu", "manual", "ca", "ca-only"]),
    ),
    both(
        "pubkeys.tls_lifetime",
        "lifetime in days of TLS certificates issued to the node (47 when unset)",
        K::Integer,
    ),
    // Console.
    both(
        "console.method",
        "how the node's text console is reached (console disabled when unset)",
        K::ValidValues(&["ssh", "ipmi", "openbmc", "tsmsol", "vcenter", "proxmox"]),
    ),
    both(
        "console.logging",
        "how much of the console is logged (full when unset)",
        K::ValidValues(&["full", "memory", "interactive", "none"]),
    ),
    // Power.
    both(
        "power.pdu",
        "PDU node feeding a power inlet of the node (power.<inlet>.pdu for several inlets)",
        K::Text,
    ),
    both(
        "power.outlet",
        "PDU outlet feeding a power inlet of the node (power.<inlet>.outlet for several inlets)",
        K::Text,
    ),
    // Network; every net.<leaf> also exists as net.<name>.<leaf>.
    both(
        "net.hwaddr",
        "MAC address of the interface, filled in by PXE discovery for the bootable interface",
        K::MacAddress,
    ),
    both(
        "net.bootable",
        "whether the interface is used to boot, so discovery records its MAC address here",
        K::Bool,
    ),
    both(
        "net.ipv4_address",
        "static IPv4 address of the interface, optionally with /prefix",
        K::Ipv4WithPrefix,
    ),
    both(
        "net.ipv6_address",
        "static IPv6 address of the interface, optionally with /prefix",
        K::Ipv6WithPrefix,
    ),
    both(
        "net.ipv4_method",
        "how the interface gets its IPv4 address",
        K::ValidValues(IP_METHODS),
    ),
    both(
        "net.ipv6_method",
        "how the interface gets its IPv6 address",
        K::ValidValues(IP_METHODS),
    ),
    both(
        "net.ipv4_gateway",
        "IPv4 gateway reached through the interface",
        K::Ipv4Address,
    ),
    both(
        "net.ipv6_gateway",
        "IPv6 gateway reached through the interface",
        K::Ipv6Address,
    ),
    both(
        "net.hostname",
        "host names of the interface; the first is the name, the rest are aliases",
        K::List,
    ),
    both(
        "net.interface_names",
        "operating system interface names to match, several for the members of a team",
        K::List,
    ),
    both(
        "net.connection_name",
        "connection or team interface name to use in the deployed operating system",
        K::Text,
    ),
    both(
        "net.mtu",
        "MTU of the interface",
        K::IntegerRange {
            min: 68,
            max: 65535,
        },
    ),
    both(
        "net.vlan_id",
        "VLAN the interface tags its traffic with",
        K::IntegerRange { min: 1, max: 4094 },
    ),
    both(
        "net.team_mode",
        "makes the interface a team and says which runner it uses",
        K::ValidValues(&["lacp", "loadbalance", "roundrobin", "activebackup", "none"]),
    ),
    both(
        "net.extra_settings",
        "extra k=v;k=v settings passed to the network configuration of the deployed system",
        K::Text,
    ),
    both(
        "net.switch",
        "Ethernet switch the interface is connected to",
        K::Text,
    ),
    both(
        "net.switchport",
        "switch port the interface is connected to",
        K::Text,
    ),
    both("dns.domain", "DNS domain of the node", K::Text),
    both("dns.servers", "DNS servers given to the node", K::IpList),
    both(
        "ntp.servers",
        "NTP servers given to the node during deployment",
        K::IpList,
    ),
    both(
        "trusted.subnets",
        "remote subnets (CIDRs) trusted like local networks when granting API keys",
        K::Cidrs,
    ),
    // Deployment.
    both(
        "deployment.pendingprofile",
        "OS profile offered to the node at its next network boot",
        K::Text,
    ),
    both(
        "deployment.stagedprofile",
        "OS profile staged and waiting for its final boot",
        K::Text,
    ),
    both(
        "deployment.profile",
        "OS profile that most recently reported a completed deployment",
        K::Text,
    ),
    both(
        "deployment.state",
        "deployment state reported by the installer",
        K::Text,
    ),
    both(
        "deployment.state_detail",
        "detailed deployment state reported by the installer",
        K::Text,
    ),
    both(
        "deployment.state_last_updated",
        "time the installer last reported its state",
        K::Timestamp,
    ),
    both(
        "deployment.client_ip",
        "address the installer last reported from",
        K::IpAddress,
    ),
    both(
        "deployment.apiarmed",
        "whether the node may obtain an API key: once, continuous, or until an ISO-8601 time",
        K::ValidValuesOrTimestamp(&["once", "continuous"]),
    ),
    both(
        "deployment.sealedapikey",
        "TPM-sealed API key handed back to the node when the API key grant is not armed",
        K::Text,
    ),
    both(
        "deployment.lock",
        "deployment lock; locked forbids changing pendingprofile and apiarmed",
        K::ValidValues(&["autolock", "locked", "unlocked"]),
    ),
    both(
        "deployment.useinsecureprotocols",
        "boot phases allowed to use TFTP and plain HTTP (never when unset: HTTPS only)",
        K::ValidValues(&["always", "firmware", "never"]),
    ),
    both(
        "deployment.encryptboot",
        "how the installed system volume is encrypted (no encryption when unset)",
        K::ValidValues(&["tpm2", "tpm2:*", "none"]),
    ),
    both(
        "deployment.storage",
        "hint for the disk to install to (for example m2)",
        K::Text,
    ),
    both(
        "crypted.rootpassword",
        "root password of the deployed system, stored only as a one-way hash",
        K::Text,
    ),
    both(
        "crypted.grubpassword",
        "password needed to change GRUB settings at boot, stored only as one-way hashes",
        K::Text,
    ),
    both(
        "crypted.selfapikey",
        "one-way hash of the API key the node uses for self-service requests",
        K::Text,
    ),
    both(
        "secret.selfapiarmtoken",
        "one-time shared secret with which a node proves itself when requesting an API key",
        K::Text,
    ),
    both(
        "ssh.trustnodes",
        "noderange of nodes allowed to ssh into the node (all nodes when unset)",
        K::Noderange,
    ),
    // Discovery and collective.
    both(
        "discovery.policy",
        "how discovered systems may be configured automatically (manual when unset)",
        K::ValidList(&["manual", "permissive", "pxe", "open", "verified"]),
    ),
    both(
        "discovery.passwordrules",
        "BMC password rules applied on discovery, like expiration=no,loginfailures=no",
        K::ValidListKeys(&["expiration", "loginfailures", "complexity", "reuse"]),
    ),
    both(
        "discovery.nodeconfig",
        "nodeconfig arguments applied to the node after discovery",
        K::Text,
    ),
    both(
        "collective.manager",
        "collective member currently responsible for the node",
        K::Text,
    ),
    both(
        "collective.managercandidates",
        "noderange of collective members allowed to manage and deploy the node",
        K::Noderange,
    ),
];

/// The spec returned for every `custom.<anything>` attribute.
pub static CUSTOM_ATTRIBUTE: AttributeSpec =
    both("custom.*", "free-form site-specific attribute", K::Text);

/// The spec returned for every `custom.nodesecret.<anything>` attribute.
pub static CUSTOM_NODE_SECRET: AttributeSpec = both(
    "custom.nodesecret.*",
    "free-form site-specific secret, encrypted at rest",
    K::Text,
);

/// Short names accepted in place of catalogue names.
const ALIASES: &[(&str, &str)] = &[
    ("bmc", "hardwaremanagement.manager"),
    ("bmcuser", "secret.hardwaremanagementuser"),
    ("switchuser", "secret.hardwaremanagementuser"),
    ("bmcpass", "secret.hardwaremanagementpassword"),
    ("switchpass", "secret.hardwaremanagementpassword"),
];

/// The families whose middle segments are free: `<family>.<any>.<leaf>` validates as
/// `<family>.<leaf>`.
const OPEN_FAMILIES: &[&str] = &["net", "power"];

/// Catalogue names mapped to their specs. A hash map because name lookups sit on the hot path of
/// every attribute read and write across the whole cluster.
static BY_NAME: LazyLock<HashMap<&'static str, &'static AttributeSpec>> =
    LazyLock::new(|| CATALOGUE.iter().map(|spec| (spec.name, spec)).collect());

/// For each open family, its leaves (`hwaddr` for `net.hwaddr`) mapped to their specs.
static LEAVES: LazyLock<HashMap<(&'static str, &'static str), &'static AttributeSpec>> =
    LazyLock::new(|| {
        CATALOGUE
            .iter()
            .filter_map(|spec| {
                let (family, leaf) = spec.name.split_once('.')?;
                OPEN_FAMILIES
                    .contains(&family)
                    .then_some(((family, leaf), spec))
            })
            .collect()
    });

/// Every catalogue attribute, in listing order. `custom.*` attributes are not listed; see
/// [`CUSTOM_ATTRIBUTE`] and [`CUSTOM_NODE_SECRET`].
pub fn all() -> &'static [AttributeSpec] {
    CATALOGUE
}

/// Replaces an alias or the `hm.` prefix by the canonical spelling; other names are returned
/// unchanged. No check that the result exists is made.
pub fn expand_alias(name: &str) -> Cow<'_, str> {
    if let Some((_, target)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
        return Cow::Borrowed(target);
    }
    match name.strip_prefix("hm.") {
        Some(rest) => Cow::Owned(format!("hardwaremanagement.{rest}")),
        None => Cow::Borrowed(name),
    }
}

/// Resolves aliases (`bmc` → `hardwaremanagement.manager`, `bmcuser`/`switchuser` →
/// `secret.hardwaremanagementuser`, `bmcpass`/`switchpass` →
/// `secret.hardwaremanagementpassword`, the `hm.` prefix → `hardwaremanagement.`) and checks that
/// the name exists: a catalogue name, `net.<any>.<leaf>` for a catalogue `net.<leaf>` (any number
/// of middle segments), `power.<inlet>.pdu|outlet`, `custom.<anything>` or
/// `custom.nodesecret.<anything>`. Returns the canonical name.
///
/// Wildcard patterns are not names; match them with [`wildcard_match`] instead.
pub fn canonical_name(name: &str) -> Result<String, UnknownAttributeError> {
    let expanded = expand_alias(name);
    let unknown = |reason: Option<&'static str>| UnknownAttributeError {
        name: name.to_owned(),
        reason,
        suggestion: suggest(&expanded),
    };
    if is_wildcard(&expanded) {
        return Err(UnknownAttributeError {
            name: name.to_owned(),
            reason: Some("wildcards are only allowed when reading, clearing or filtering"),
            suggestion: None,
        });
    }
    match resolve(&expanded) {
        Resolution::Found(_) => Ok(expanded.into_owned()),
        Resolution::Malformed(reason) => Err(unknown(Some(reason))),
        Resolution::Unknown => Err(unknown(None)),
    }
}

/// The spec of a canonical name: the catalogue entry, the `net.<leaf>`/`power.<leaf>` entry for
/// `net.<x>.<leaf>`/`power.<x>.<leaf>`, or the free-form `custom.*` specs. `None` for anything
/// else, including aliases (resolve them with [`canonical_name`] first).
pub fn spec(canonical: &str) -> Option<&'static AttributeSpec> {
    match resolve(canonical) {
        Resolution::Found(spec) => Some(spec),
        Resolution::Malformed(_) | Resolution::Unknown => None,
    }
}

/// How values of a canonical attribute are protected at rest.
pub fn sensitivity(canonical: &str) -> Sensitivity {
    if canonical.starts_with("secret.") || canonical.starts_with("custom.nodesecret.") {
        Sensitivity::Secret
    } else if canonical.starts_with("crypted.") {
        Sensitivity::Crypted
    } else {
        Sensitivity::Plain
    }
}

/// Whether the attribute may hold an expression like `{node}-bmc`. Secrets, hashes and the
/// membership attributes (`groups`, and the group attributes `nodes` and `noderange`) may not,
/// nor may unknown names.
pub fn supports_expressions(canonical: &str) -> bool {
    sensitivity(canonical) == Sensitivity::Plain
        && !matches!(canonical, "groups" | "nodes" | "noderange")
        && spec(canonical).is_some()
}

/// What a (possibly open-ended) name stands for.
enum Resolution {
    Found(&'static AttributeSpec),
    Malformed(&'static str),
    Unknown,
}

const SEGMENT_RULE: &str =
    "each dotted part must be non-empty and use only letters, digits, '-' and '_'";

fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

fn resolve(name: &str) -> Resolution {
    if let Some(spec) = BY_NAME.get(name) {
        return Resolution::Found(spec);
    }
    if let Some(rest) = name.strip_prefix("custom.") {
        if rest == "nodesecret" {
            return Resolution::Malformed("custom.nodesecret needs a name after it");
        }
        if !rest.split('.').all(is_valid_segment) {
            return Resolution::Malformed(SEGMENT_RULE);
        }
        return match rest.strip_prefix("nodesecret.") {
            Some(_) => Resolution::Found(&CUSTOM_NODE_SECRET),
            None => Resolution::Found(&CUSTOM_ATTRIBUTE),
        };
    }
    let Some((family, rest)) = name.split_once('.') else {
        return Resolution::Unknown;
    };
    let Some((middle, leaf)) = rest.rsplit_once('.') else {
        return Resolution::Unknown;
    };
    if !OPEN_FAMILIES.contains(&family) {
        return Resolution::Unknown;
    }
    let Some(spec) = LEAVES.get(&(family, leaf)) else {
        return Resolution::Unknown;
    };
    if middle.split('.').all(is_valid_segment) {
        Resolution::Found(spec)
    } else {
        Resolution::Malformed(SEGMENT_RULE)
    }
}

/// Optimal string alignment distance (Damerau-Levenshtein without repeated edits of a
/// substring), comparing characters case-insensitively. Two rolling rows keep it O(len) in
/// memory; it only runs on the error path.
fn edit_distance(left: &str, right: &str) -> usize {
    let left: Vec<char> = left.chars().map(|c| c.to_ascii_lowercase()).collect();
    let right: Vec<char> = right.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut before_previous: Vec<usize> = vec![0; right.len() + 1];
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current: Vec<usize> = vec![0; right.len() + 1];
    for (i, &left_char) in left.iter().enumerate() {
        current[0] = i + 1;
        for (j, &right_char) in right.iter().enumerate() {
            let substitution_cost = usize::from(left_char != right_char);
            let mut best = (previous[j] + substitution_cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
            if i > 0
                && j > 0
                && left.get(i - 1) == Some(&right_char)
                && right.get(j - 1) == Some(&left_char)
            {
                best = best.min(before_previous[j - 1] + 1);
            }
            current[j + 1] = best;
        }
        std::mem::swap(&mut before_previous, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[right.len()]
}

/// How many edits still count as a typo of a word of this length.
fn typo_budget(word: &str) -> usize {
    (word.chars().count() / 4).clamp(1, 3)
}

/// The candidate nearest to `word` within the typo budget; the first one wins ties so that
/// suggestions are stable.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let budget = typo_budget(word);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = edit_distance(word, candidate);
        if distance <= budget && best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

fn suggest(name: &str) -> Option<String> {
    let segments: Vec<&str> = name.split('.').collect();
    // A name with free middle segments is judged by its family and its leaf, since the middle
    // (an interface or inlet name) is the user's own and must be kept as written.
    if let [first, middle @ .., last] = segments.as_slice()
        && !middle.is_empty()
        && let Some(family) = nearest(first, OPEN_FAMILIES.iter().copied())
    {
        let leaves = LEAVES
            .keys()
            .filter(|(leaf_family, _)| *leaf_family == family)
            .map(|(_, leaf)| *leaf);
        if let Some(leaf) = nearest(last, sorted_for_stability(leaves).into_iter()) {
            return Some(format!("{family}.{}.{leaf}", middle.join(".")));
        }
    }
    if let [first, rest @ ..] = segments.as_slice()
        && !rest.is_empty()
        && *first != "custom"
        && edit_distance(first, "custom") <= 1
    {
        return Some(format!("custom.{}", rest.join(".")));
    }
    let candidates = CATALOGUE
        .iter()
        .map(|spec| spec.name)
        .chain(ALIASES.iter().map(|(alias, _)| *alias));
    nearest(name, candidates).map(str::to_owned)
}

/// Hash map iteration order varies between runs; sorting keeps suggestions deterministic.
fn sorted_for_stability<'a>(words: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut words: Vec<&str> = words.collect();
    words.sort_unstable();
    words
}

/// Whether a name contains a wildcard (`*` or `?`).
pub fn is_wildcard(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// fnmatch-style matching with `*` (any run of characters, including dots) and `?` (exactly one
/// character), case-sensitive, as used for attribute names in reads, clears and filters.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    glob_match(pattern, name, false)
}

fn glob_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        glob_match_slices(pattern.as_bytes(), text.as_bytes(), |a, b| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        })
    } else {
        let pattern: Vec<char> = pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        glob_match_slices(&pattern, &text, |a: &char, b: &char| {
            if ignore_case {
                a.to_lowercase().eq(b.to_lowercase())
            } else {
                a == b
            }
        })
    }
}

/// Classic greedy matcher with a single backtrack point: on a mismatch it retries from the last
/// `*`, letting that star absorb one more character. Worst case O(pattern × text), never
/// exponential.
fn glob_match_slices<T: GlobChar>(
    pattern: &[T],
    text: &[T],
    equal: impl Fn(&T, &T) -> bool,
) -> bool {
    let mut pattern_index = 0;
    let mut text_index = 0;
    let mut star: Option<(usize, usize)> = None;
    while text_index < text.len() {
        match (pattern.get(pattern_index), text.get(text_index)) {
            (Some(token), _) if token.is_star() => {
                star = Some((pattern_index, text_index));
                pattern_index += 1;
            }
            (Some(token), Some(character)) if token.is_question() || equal(token, character) => {
                pattern_index += 1;
                text_index += 1;
            }
            _ => match star {
                Some((star_pattern, star_text)) => {
                    pattern_index = star_pattern + 1;
                    text_index = star_text + 1;
                    star = Some((star_pattern, star_text + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(pattern_index..)
        .is_some_and(|rest| rest.iter().all(GlobChar::is_star))
}

trait GlobChar {
    fn is_star(&self) -> bool;
    fn is_question(&self) -> bool;
}

impl GlobChar for u8 {
    fn is_star(&self) -> bool {
        *self == b'*'
    }
    fn is_question(&self) -> bool {
        *self == b'?'
    }
}

impl GlobChar for char {
    fn is_star(&self) -> bool {
        *self == '*'
    }
    fn is_question(&self) -> bool {
        *self == '?'
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// Values longer than this are shortened in error messages so one bad paste cannot flood logs.
const MAX_SHOWN_VALUE_CHARS: usize = 64;

/// Validates and normalises a value for a canonical attribute: MAC addresses to lowercase colon
/// form (`-`, `.` and bare 12-hex forms accepted), booleans to `true`/`false`, valid values
/// matched case-insensitively and returned in canonical case, IP addresses checked with
/// `std::net` parsing (prefix lengths range-checked) and printed in their canonical form, lists
/// trimmed. The empty string is always valid: it masks an inherited value.
pub fn validate(canonical: &str, value: &str) -> Result<String, InvalidValueError> {
    let invalid = |reason: String| InvalidValueError {
        attribute: canonical.to_owned(),
        value: shown_value(canonical, value),
        reason,
    };
    let Some(spec) = spec(canonical) else {
        return Err(invalid("the attribute is not in the catalogue".to_owned()));
    };
    if value.is_empty() {
        return Ok(String::new());
    }
    if spec.kind == ValueKind::Text {
        return Ok(value.to_owned());
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    normalise(spec.kind, trimmed).map_err(invalid)
}

fn shown_value(canonical: &str, value: &str) -> String {
    if sensitivity(canonical) != Sensitivity::Plain {
        return "********".to_owned();
    }
    if value.chars().count() <= MAX_SHOWN_VALUE_CHARS {
        return value.to_owned();
    }
    let mut shortened: String = value.chars().take(MAX_SHOWN_VALUE_CHARS).collect();
    shortened.push('…');
    shortened
}

const MAC_EXAMPLE: &str = "expected a MAC address like 00:11:22:33:44:55";
const TIMESTAMP_EXAMPLE: &str = "an ISO-8601 time like 2024-05-01T12:00:00Z";

fn normalise(kind: ValueKind, value: &str) -> Result<String, String> {
    match kind {
        ValueKind::Text => Ok(value.to_owned()),
        ValueKind::Bool => parse_bool(value)
            .map(|truth| truth.to_string())
            .ok_or_else(|| {
                "expected a boolean such as true/false, yes/no, 1/0 or on/off".to_owned()
            }),
        ValueKind::Integer => parse_decimal(value)
            .map(|number| number.to_string())
            .ok_or_else(|| "expected a non-negative integer".to_owned()),
        ValueKind::IntegerRange { min, max } => parse_decimal(value)
            .filter(|number| (min..=max).contains(number))
            .map(|number| number.to_string())
            .ok_or_else(|| format!("expected an integer from {min} to {max}")),
        ValueKind::List => Ok(normalise_list(value, |member| Ok(member.to_owned()))?),
        ValueKind::ValidValues(allowed) => {
            match_valid_value(allowed, value).ok_or_else(|| expected_one_of(allowed))
        }
        ValueKind::ValidValuesOrTimestamp(allowed) => match_valid_value(allowed, value)
            .or_else(|| normalise_timestamp(value))
            .ok_or_else(|| format!("{}, or {TIMESTAMP_EXAMPLE}", expected_one_of(allowed))),
        ValueKind::ValidList(allowed) => normalise_list(value, |member| {
            match_valid_value(allowed, member)
                .ok_or_else(|| format!("'{member}' is not {}", one_of(allowed)))
        }),
        ValueKind::ValidListKeys(keys) => normalise_list(value, |member| {
            let Some((key, key_value)) = member.split_once('=') else {
                return Err(format!("'{member}' is not a key=value pair"));
            };
            let key = match_valid_value(keys, key.trim())
                .ok_or_else(|| format!("'{}' is not a known key ({})", key.trim(), one_of(keys)))?;
            let key_value = key_value.trim();
            if key_value.is_empty() {
                return Err(format!("'{member}' has no value after '='"));
            }
            Ok(format!("{key}={key_value}"))
        }),
        ValueKind::MacAddress => normalise_mac(value).ok_or_else(|| MAC_EXAMPLE.to_owned()),
        ValueKind::Ipv4WithPrefix => normalise_ip_with_prefix(value, IpFamily::V4),
        ValueKind::Ipv6WithPrefix => normalise_ip_with_prefix(value, IpFamily::V6),
        ValueKind::Ipv4Address => value
            .parse::<Ipv4Addr>()
            .map(|address| address.to_string())
            .map_err(|_| "expected an IPv4 address like 192.0.2.1".to_owned()),
        ValueKind::Ipv6Address => normalise_ipv6_with_zone(value)
            .ok_or_else(|| "expected an IPv6 address like 2001:db8::1".to_owned()),
        ValueKind::IpAddress => value
            .parse::<IpAddr>()
            .map(|address| address.to_string())
            .map_err(|_| "expected an IPv4 or IPv6 address".to_owned()),
        ValueKind::IpList => normalise_list(value, |member| {
            if let Ok(address) = member.parse::<IpAddr>() {
                Ok(address.to_string())
            } else if is_host_name(member) {
                Ok(member.to_owned())
            } else {
                Err(format!(
                    "'{member}' is neither an IP address nor a valid host name"
                ))
            }
        }),
        ValueKind::Cidrs => normalise_list(value, |member| {
            normalise_cidr(member).ok_or_else(|| {
                format!("'{member}' is not a CIDR like 192.0.2.0/24 or 2001:db8::/32")
            })
        }),
        ValueKind::Endpoint => normalise_endpoint(value).ok_or_else(|| {
            "expected a host name or IP address, optionally with /prefix or :port".to_owned()
        }),
        ValueKind::Groups => normalise_name_list(value, "group"),
        ValueKind::Nodes => normalise_name_list(value, "node"),
        ValueKind::Noderange => check_noderange(value).map(|()| value.to_owned()),
        ValueKind::Timestamp => {
            normalise_timestamp(value).ok_or_else(|| format!("expected {TIMESTAMP_EXAMPLE}"))
        }
        ValueKind::Uuid => normalise_uuid(value)
            .ok_or_else(|| "expected a UUID like 01234567-89ab-cdef-0123-456789abcdef".to_owned()),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    const TRUE_WORDS: &[&str] = &["true", "1", "y", "yes", "enable", "enabled", "on"];
    const FALSE_WORDS: &[&str] = &["false", "0", "n", "no", "disable", "disabled", "off"];
    if TRUE_WORDS
        .iter()
        .any(|word| word.eq_ignore_ascii_case(value))
    {
        Some(true)
    } else if FALSE_WORDS
        .iter()
        .any(|word| word.eq_ignore_ascii_case(value))
    {
        Some(false)
    } else {
        None
    }
}

/// Digits only: `u64::from_str` would also take a leading `+`, which is not an integer as users
/// write them in this configuration.
fn parse_decimal(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Literal entries win over patterns so that the canonical spelling of a literal is returned;
/// a value matching only a pattern is returned as written.
fn match_valid_value(allowed: &[&'static str], value: &str) -> Option<String> {
    if let Some(literal) = allowed
        .iter()
        .find(|entry| !is_wildcard(entry) && entry.eq_ignore_ascii_case(value))
    {
        return Some((*literal).to_owned());
    }
    allowed
        .iter()
        .filter(|entry| is_wildcard(entry))
        .any(|pattern| glob_match(pattern, value, true))
        .then(|| value.to_owned())
}

fn one_of(allowed: &[&str]) -> String {
    let shown: Vec<&str> = allowed
        .iter()
        .copied()
        .filter(|entry| !entry.is_empty())
        .collect();
    format!("one of {}", shown.join(", "))
}

fn expected_one_of(allowed: &[&str]) -> String {
    format!("expected {}", one_of(allowed))
}

/// Splits on commas, trims members, drops empty members and exact duplicates (keeping the first),
/// and normalises each member. A hash set keeps this linear for group `nodes` lists with
/// thousands of members.
fn normalise_list(
    value: &str,
    mut normalise_member: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut members: Vec<String> = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let normalised = normalise_member(member)?;
        if seen.insert(normalised.clone()) {
            members.push(normalised);
        }
    }
    Ok(members.join(","))
}

/// Characters that would make a name mean something else inside a noderange (operators,
/// brackets, regular expression and attribute filter markers, wildcards), or that no name should
/// contain.
const NAME_FORBIDDEN_CHARACTERS: &[char] = &[
    ',', '@', '(', ')', '[', ']', '<', '>', '=', '!', '~', '{', '}', '*', '?', '/', '\\', '"',
    '\'', '^', '$',
];

fn normalise_name_list(value: &str, what: &str) -> Result<String, String> {
    normalise_list(value, |member| {
        if member
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || NAME_FORBIDDEN_CHARACTERS.contains(&c))
        {
            Err(format!(
                "'{member}' is not a valid {what} name (no spaces or noderange operators)"
            ))
        } else {
            Ok(member.to_owned())
        }
    })
}

fn check_noderange(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a noderange cannot contain spaces".to_owned());
    }
    let mut open_parentheses: usize = 0;
    let mut open_brackets: usize = 0;
    for character in value.chars() {
        match character {
            '(' => open_parentheses += 1,
            '[' => open_brackets += 1,
            ')' => {
                open_parentheses = open_parentheses
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced ')'".to_owned())?;
            }
            ']' => {
                open_brackets = open_brackets
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced ']'".to_owned())?;
            }
            _ => {}
        }
    }
    if open_parentheses > 0 {
        return Err("unclosed '('".to_owned());
    }
    if open_brackets > 0 {
        return Err("unclosed '['".to_owned());
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// Accepts `00:11:22:33:44:55`, `0:1:2:3:4:5`, `00-11-22-33-44-55`, `0011.2233.4455` and
/// `001122334455`, in any case.
fn normalise_mac(value: &str) -> Option<String> {
    let mut octets = [0u8; 6];
    let separator = [':', '-'].into_iter().find(|&s| value.contains(s));
    if let Some(separator) = separator {
        let groups: Vec<&str> = value.split(separator).collect();
        if groups.len() != 6 {
            return None;
        }
        for (octet, group) in octets.iter_mut().zip(&groups) {
            if group.is_empty() || group.len() > 2 {
                return None;
            }
            *octet = u8::from_str_radix(group, 16).ok()?;
            // from_str_radix takes a sign; a MAC group never has one.
            if group.starts_with('+') {
                return None;
            }
        }
    } else {
        let digits: Vec<u8> = if value.contains('.') {
            let groups: Vec<&str> = value.split('.').collect();
            if groups.len() != 3 || groups.iter().any(|group| group.len() != 4) {
                return None;
            }
            groups.concat().into_bytes()
        } else {
            value.as_bytes().to_vec()
        };
        if digits.len() != 12 {
            return None;
        }
        for (octet, pair) in octets.iter_mut().zip(digits.chunks_exact(2)) {
            let [high, low] = pair else { return None };
            *octet = hex_value(*high)? << 4 | hex_value(*low)?;
        }
    }
    Some(
        octets
            .iter()
            .map(|octet| format!("{octet:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IpFamily {
    V4,
    V6,
}

fn parse_prefix(text: &str, family: IpFamily) -> Result<u8, String> {
    let maximum: u8 = match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    };
    let prefix =
        parse_decimal(text).ok_or_else(|| format!("prefix length '{text}' is not a number"))?;
    u8::try_from(prefix)
        .ok()
        .filter(|prefix| *prefix <= maximum)
        .ok_or_else(|| format!("prefix length {prefix} is out of range 0-{maximum}"))
}

fn parse_family_address(text: &str, family: IpFamily) -> Option<IpAddr> {
    match family {
        IpFamily::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        IpFamily::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

fn normalise_ip_with_prefix(value: &str, family: IpFamily) -> Result<String, String> {
    let expected = match family {
        IpFamily::V4 => "expected an IPv4 address like 192.0.2.10 or 192.0.2.10/24",
        IpFamily::V6 => "expected an IPv6 address like 2001:db8::10 or 2001:db8::10/64",
    };
    let (address_text, prefix_text) = match value.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (value, None),
    };
    let address = parse_family_address(address_text, family).ok_or_else(|| expected.to_owned())?;
    match prefix_text {
        Some(prefix_text) => {
            let prefix = parse_prefix(prefix_text, family)?;
            Ok(format!("{address}/{prefix}"))
        }
        None => Ok(address.to_string()),
    }
}

/// An IPv6 address with an optional `%zone` (interface) suffix, as link-local gateways need.
fn normalise_ipv6_with_zone(value: &str) -> Option<String> {
    let (address_text, zone) = match value.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (value, None),
    };
    let address: Ipv6Addr = address_text.parse().ok()?;
    match zone {
        Some(zone) if is_valid_zone(zone) => Some(format!("{address}%{zone}")),
        Some(_) => None,
        None => Some(address.to_string()),
    }
}

/// Interface names (`eth0`, `eth0.100`, `ib-0`) or numeric interface indexes.
fn is_valid_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

fn normalise_cidr(value: &str) -> Option<String> {
    let (address_text, prefix_text) = value.split_once('/')?;
    let address: IpAddr = address_text.parse().ok()?;
    let family = match address {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    };
    let prefix = parse_prefix(prefix_text, family).ok()?;
    Some(format!("{address}/{prefix}"))
}

/// RFC 1123 host names (underscores tolerated, as real sites use them). The last label must not
/// be all digits, so that a mistyped address like `10.0.0.256` is not taken for a name.
fn is_host_name(value: &str) -> bool {
    if value.is_empty() || value.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = value.split('.').collect();
    let labels_valid = labels.iter().all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    });
    labels_valid
        && labels
            .last()
            .is_some_and(|last| !last.bytes().all(|byte| byte.is_ascii_digit()))
}

fn parse_port(text: &str) -> Option<u16> {
    parse_decimal(text)
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
}

/// `[v6]`, `[v6]:port`, `v6[/prefix]`, `v4[/prefix]`, `v4:port`, `name` or `name:port`.
fn normalise_endpoint(value: &str) -> Option<String> {
    if let Some(bracketed) = value.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        let address: Ipv6Addr = inside.parse().ok()?;
        if after.is_empty() {
            return Some(format!("[{address}]"));
        }
        let port = parse_port(after.strip_prefix(':')?)?;
        return Some(format!("[{address}]:{port}"));
    }
    if let Some((address_text, prefix_text)) = value.split_once('/') {
        let address: IpAddr = address_text.parse().ok()?;
        let family = match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        };
        let prefix = parse_prefix(prefix_text, family).ok()?;
        return Some(format!("{address}/{prefix}"));
    }
    if let Ok(address) = value.parse::<IpAddr>() {
        return Some(address.to_string());
    }
    if let Some((host, port_text)) = value.rsplit_once(':') {
        let port = parse_port(port_text)?;
        if let Ok(address) = host.parse::<Ipv4Addr>() {
            return Some(format!("{address}:{port}"));
        }
        return is_host_name(host).then(|| format!("{host}:{port}"));
    }
    is_host_name(value).then(|| value.to_owned())
}

fn normalise_uuid(value: &str) -> Option<String> {
    let digits: Vec<u8> = if value.len() == 36 {
        let dash_positions = [8, 13, 18, 23];
        let bytes = value.as_bytes();
        let dashes_in_place = dash_positions
            .iter()
            .all(|&position| bytes.get(position) == Some(&b'-'));
        if !dashes_in_place {
            return None;
        }
        bytes.iter().copied().filter(|&byte| byte != b'-').collect()
    } else {
        value.as_bytes().to_vec()
    };
    if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let lower = String::from_utf8(digits).ok()?.to_ascii_lowercase();
    let part = |range: std::ops::Range<usize>| lower.get(range).unwrap_or_default();
    Some(format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    ))
}

/// Fixed-width numeric field of a timestamp.
fn timestamp_field(text: &str, range: std::ops::Range<usize>) -> Option<u32> {
    let field = text.get(range)?;
    if !field.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, optional `.fraction`, optional `Z` or `±HH:MM`; `t`/`z` are
/// accepted and upper-cased.
fn normalise_timestamp(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let separators_in_place = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't'))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !separators_in_place {
        return None;
    }
    let year = timestamp_field(value, 0..4)?;
    let month = timestamp_field(value, 5..7)?;
    let day = timestamp_field(value, 8..10)?;
    let hour = timestamp_field(value, 11..13)?;
    let minute = timestamp_field(value, 14..16)?;
    // 60 allows a leap second.
    let second = timestamp_field(value, 17..19)?;
    let fields_in_range = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !fields_in_range {
        return None;
    }
    let mut rest = value.get(19..)?;
    let mut normalised = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (fraction, after_fraction) = after_dot.split_at(digits);
        normalised.push('.');
        normalised.push_str(fraction);
        rest = after_fraction;
    }
    match rest {
        "" => {}
        "Z" | "z" => normalised.push('Z'),
        offset => {
            let offset_bytes = offset.as_bytes();
            let well_formed = offset.len() == 6
                && matches!(offset_bytes.first(), Some(b'+' | b'-'))
                && offset_bytes.get(3) == Some(&b':');
            if !well_formed {
                return None;
            }
            let offset_hours = timestamp_field(offset, 1..3)?;
            let offset_minutes = timestamp_field(offset, 4..6)?;
            if offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            normalised.push_str(offset);
        }
    }
    Some(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str, value: &str) -> String {
        match validate(name, value) {
            Ok(normalised) => normalised,
            Err(error) => panic!("{name}={value} rejected: {error}"),
        }
    }

    fn rejected(name: &str, value: &str) -> InvalidValueError {
        match validate(name, value) {
            Ok(normalised) => panic!("{name}={value} accepted as {normalised}"),
            Err(error) => error,
        }
    }

    #[test]
    fn catalogue_names_are_unique_and_canonical() {
        let mut seen = HashSet::new();
        for spec in all() {
            assert!(seen.insert(spec.name), "duplicate {}", spec.name);
            assert_eq!(canonical_name(spec.name).as_deref(), Ok(spec.name));
            assert!(
                !spec.description.is_empty(),
                "{} has no description",
                spec.name
            );
            assert!(spec.node || spec.group, "{} can be set nowhere", spec.name);
        }
    }

    #[test]
    fn every_reference_attribute_is_present() {
        let expected = [
            "groups",
            "type",
            "id.index",
            "id.uuid",
            "id.serial",
            "id.model",
            "info.note",
            "location.room",
            "location.row",
            "location.rack",
            "location.u",
            "location.height",
            "enclosure.manager",
            "enclosure.bay",
            "enclosure.extends",
            "hardwaremanagement.manager",
            "hardwaremanagement.method",
            "hardwaremanagement.manager_tls_name",
            "hardwaremanagement.port",
            "hardwaremanagement.vlan",
            "secret.hardwaremanagementuser",
            "secret.hardwaremanagementpassword",
            "secret.ipmikg",
            "secret.snmpcommunity",
            "snmp.privacyprotocol",
            "pubkeys.tls_hardwaremanager",
            "pubkeys.tls",
            "pubkeys.ssh",
            "pubkeys.addpolicy",
            "pubkeys.tls_lifetime",
            "console.method",
            "console.logging",
            "power.pdu",
            "power.outlet",
            "net.hwaddr",
            "net.bootable",
            "net.ipv4_address",
            "net.ipv6_address",
            "net.ipv4_method",
            "net.ipv6_method",
            "net.ipv4_gateway",
            "net.ipv6_gateway",
            "net.hostname",
            "net.interface_names",
            "net.connection_name",
            "net.mtu",
            "net.vlan_id",
            "net.team_mode",
            "net.extra_settings",
            "net.switch",
            "net.switchport",
            "dns.domain",
            "dns.servers",
            "ntp.servers",
            "trusted.subnets",
            "deployment.pendingprofile",
            "deployment.stagedprofile",
            "deployment.profile",
            "deployment.state",
            "deployment.state_detail",
            "deployment.state_last_updated",
            "deployment.client_ip",
            "deployment.apiarmed",
            "deployment.sealedapikey",
            "deployment.lock",
            "deployment.useinsecureprotocols",
            "deployment.encryptboot",
            "deployment.storage",
            "crypted.rootpassword",
            "crypted.grubpassword",
            "crypted.selfapikey",
            "secret.selfapiarmtoken",
            "ssh.trustnodes",
            "discovery.policy",
            "discovery.passwordrules",
            "discovery.nodeconfig",
            "collective.manager",
            "collective.managercandidates",
            "nodes",
            "noderange",
            "alias",
        ];
        for name in expected {
            assert!(spec(name).is_some(), "{name} missing");
        }
        assert_eq!(all().len(), expected.len());
    }

    #[test]
    fn membership_attributes_are_set_in_the_right_place() {
        let groups = spec("groups").map(|s| (s.node, s.group));
        assert_eq!(groups, Some((true, false)));
        assert_eq!(
            spec("nodes").map(|s| (s.node, s.group)),
            Some((false, true))
        );
        assert_eq!(
            spec("noderange").map(|s| (s.node, s.group)),
            Some((false, true))
        );
        assert_eq!(spec("alias").map(|s| s.kind), Some(ValueKind::List));
        assert_eq!(
            spec("alias").map(|s| s.description),
            Some(
                "alternate names by which the node may be addressed anywhere a node name is accepted"
            )
        );
    }

    #[test]
    fn aliases_resolve() {
        let cases = [
            ("bmc", "hardwaremanagement.manager"),
            ("bmcuser", "secret.hardwaremanagementuser"),
            ("switchuser", "secret.hardwaremanagementuser"),
            ("bmcpass", "secret.hardwaremanagementpassword"),
            ("switchpass", "secret.hardwaremanagementpassword"),
            ("hm.method", "hardwaremanagement.method"),
            ("hm.manager_tls_name", "hardwaremanagement.manager_tls_name"),
        ];
        for (alias, canonical) in cases {
            assert_eq!(canonical_name(alias).as_deref(), Ok(canonical), "{alias}");
        }
        assert!(canonical_name("hm.nonsense").is_err());
        assert!(canonical_name("bmc.x").is_err());
    }

    #[test]
    fn net_and_power_families_accept_free_middle_segments() {
        for name in [
            "net.eth0.ipv4_address",
            "net.compute.mgmt.hwaddr",
            "net.0.switch",
            "net.ib-0.bootable",
            "power.psu1.pdu",
            "power.a.outlet",
        ] {
            assert_eq!(canonical_name(name).as_deref(), Ok(name));
        }
        assert_eq!(spec("net.compute.mgmt.hwaddr"), spec("net.hwaddr"));
        assert_eq!(
            spec("net.eth0.bootable").map(|s| s.kind),
            Some(ValueKind::Bool)
        );
        assert_eq!(spec("power.psu1.pdu"), spec("power.pdu"));
        assert!(canonical_name("net.eth0.nonsense").is_err());
        assert!(canonical_name("power.psu1.hwaddr").is_err());
        assert!(canonical_name("location.x.rack").is_err());
        let empty_middle = canonical_name("net..hwaddr");
        assert!(empty_middle.is_err_and(|e| e.reason.is_some()));
        assert!(canonical_name("net.eth 0.hwaddr").is_err());
    }

    #[test]
    fn custom_attributes_are_free_form() {
        assert_eq!(
            canonical_name("custom.rack_owner").as_deref(),
            Ok("custom.rack_owner")
        );
        assert_eq!(
            canonical_name("custom.a.b.c").as_deref(),
            Ok("custom.a.b.c")
        );
        assert_eq!(spec("custom.anything"), Some(&CUSTOM_ATTRIBUTE));
        assert_eq!(spec("custom.nodesecret.token"), Some(&CUSTOM_NODE_SECRET));
        assert_eq!(sensitivity("custom.nodesecret.token"), Sensitivity::Secret);
        assert_eq!(sensitivity("custom.anything"), Sensitivity::Plain);
        assert!(canonical_name("custom.").is_err());
        assert!(canonical_name("custom.nodesecret").is_err());
        assert!(canonical_name("custom.nodesecret.").is_err());
        assert!(canonical_name("custom.a=b").is_err());
        assert_eq!(ok("custom.anything", "  free text  "), "  free text  ");
    }

    #[test]
    fn wildcards_are_not_names() {
        let error = canonical_name("net.*switch").unwrap_err();
        assert!(error.to_string().contains("wildcards"), "{error}");
    }

    #[test]
    fn suggestions_for_typos() {
        let cases = [
            ("loction.rack", "location.rack"),
            ("hardwaremanagment.manager", "hardwaremanagement.manager"),
            ("net.eth0.hwadr", "net.eth0.hwaddr"),
            (
                "net.compute.mgmt.ipv4_adress",
                "net.compute.mgmt.ipv4_address",
            ),
            ("nte.eth0.hwaddr", "net.eth0.hwaddr"),
            ("power.psu1.pdy", "power.psu1.pdu"),
            ("Location.Rack", "location.rack"),
            ("hm.manger", "hardwaremanagement.manager"),
            ("bmcusr", "bmcuser"),
            ("custon.foo", "custom.foo"),
            ("console.metod", "console.method"),
            ("net.hwadr", "net.hwaddr"),
        ];
        for (typo, expected) in cases {
            let error = canonical_name(typo).unwrap_err();
            assert_eq!(error.suggestion.as_deref(), Some(expected), "{typo}");
        }
        assert_eq!(
            canonical_name("loction.rack").unwrap_err().to_string(),
            "unknown attribute 'loction.rack' (did you mean 'location.rack'?)"
        );
        let far = canonical_name("completely.unrelated").unwrap_err();
        assert_eq!(far.suggestion, None);
        assert_eq!(far.to_string(), "unknown attribute 'completely.unrelated'");
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ABC", "abc"), 0);
    }

    #[test]
    fn sensitivity_and_expression_support() {
        assert_eq!(
            sensitivity("secret.hardwaremanagementpassword"),
            Sensitivity::Secret
        );
        assert_eq!(sensitivity("secret.selfapiarmtoken"), Sensitivity::Secret);
        assert_eq!(sensitivity("crypted.rootpassword"), Sensitivity::Crypted);
        assert_eq!(sensitivity("net.hwaddr"), Sensitivity::Plain);
        assert_eq!(
            spec("crypted.grubpassword").map(AttributeSpec::sensitivity),
            Some(Sensitivity::Crypted)
        );
        for name in [
            "secret.ipmikg",
            "crypted.selfapikey",
            "custom.nodesecret.x",
            "groups",
            "nodes",
            "noderange",
            "unknown.thing",
        ] {
            assert!(!supports_expressions(name), "{name}");
        }
        for name in [
            "hardwaremanagement.manager",
            "net.eth0.ipv4_address",
            "custom.x",
            "alias",
        ] {
            assert!(supports_expressions(name), "{name}");
        }
    }

    #[test]
    fn empty_value_is_always_valid() {
        for spec in all() {
            assert_eq!(validate(spec.name, ""), Ok(String::new()), "{}", spec.name);
        }
        assert_eq!(ok("net.hwaddr", "   "), "");
    }

    #[test]
    fn unknown_attribute_value_is_rejected() {
        let error = rejected("no.such", "x");
        assert!(error.reason.contains("catalogue"));
    }

    #[test]
    fn text_is_kept_verbatim() {
        assert_eq!(
            ok("info.note", " line one\nline two "),
            " line one\nline two "
        );
    }

    #[test]
    fn booleans() {
        for word in ["true", "1", "y", "YES", "Enable", "enabled", "on", " On "] {
            assert_eq!(ok("net.bootable", word), "true", "{word}");
        }
        for word in ["false", "0", "n", "No", "DISABLE", "disabled", "off"] {
            assert_eq!(ok("net.eth0.bootable", word), "false", "{word}");
        }
        for word in ["2", "maybe", "truee", "yess"] {
            rejected("net.bootable", word);
        }
    }

    #[test]
    fn integers() {
        assert_eq!(ok("id.index", "42"), "42");
        assert_eq!(ok("location.u", "007"), "7");
        for bad in ["-1", "+1", "1.5", "ten", "99999999999999999999999"] {
            rejected("id.index", bad);
        }
        assert_eq!(ok("net.vlan_id", "4094"), "4094");
        assert_eq!(ok("net.vlan_id", "1"), "1");
        let error = rejected("net.vlan_id", "4095");
        assert_eq!(error.reason, "expected an integer from 1 to 4094");
        rejected("net.vlan_id", "0");
        assert_eq!(ok("net.mtu", "9000"), "9000");
        rejected("net.mtu", "65536");
        assert_eq!(ok("hardwaremanagement.vlan", "100"), "100");
    }

    #[test]
    fn free_lists() {
        assert_eq!(ok("alias", " a , b,,a ,c "), "a,b,c");
        assert_eq!(
            ok("net.hostname", "n1-eth0,n1-eth0.example.com"),
            "n1-eth0,n1-eth0.example.com"
        );
    }

    #[test]
    fn valid_values() {
        assert_eq!(ok("console.method", "IPMI"), "ipmi");
        assert_eq!(ok("net.team_mode", " LACP "), "lacp");
        assert_eq!(ok("type", "Switch"), "switch");
        assert_eq!(ok("hardwaremanagement.method", "Redfish"), "redfish");
        assert_eq!(ok("deployment.encryptboot", "TPM2"), "tpm2");
        assert_eq!(ok("deployment.encryptboot", "tpm2:pcr7"), "tpm2:pcr7");
        assert_eq!(ok("pubkeys.addpolicy", "ca-only"), "ca-only");
        let error = rejected("console.logging", "verbose");
        assert_eq!(
            error.to_string(),
            "invalid value 'verbose' for console.logging: expected one of full, memory, interactive, none"
        );
        rejected("deployment.encryptboot", "luks");
        rejected("net.ipv4_method", "dhcp,static");
    }

    #[test]
    fn valid_values_or_timestamp() {
        assert_eq!(ok("deployment.apiarmed", "Once"), "once");
        assert_eq!(ok("deployment.apiarmed", "continuous"), "continuous");
        assert_eq!(
            ok("deployment.apiarmed", "2030-01-02T03:04:05Z"),
            "2030-01-02T03:04:05Z"
        );
        let error = rejected("deployment.apiarmed", "twice");
        assert!(error.reason.contains("ISO-8601"), "{error}");
    }

    #[test]
    fn valid_lists() {
        assert_eq!(ok("discovery.policy", "Manual, PXE,manual"), "manual,pxe");
        assert_eq!(ok("discovery.policy", "open,verified"), "open,verified");
        let error = rejected("discovery.policy", "manual,bogus");
        assert_eq!(
            error.reason,
            "'bogus' is not one of manual, permissive, pxe, open, verified"
        );
    }

    #[test]
    fn valid_list_keys() {
        assert_eq!(
            ok(
                "discovery.passwordrules",
                "Expiration=no, loginfailures = no,complexity=no,reuse=no"
            ),
            "expiration=no,loginfailures=no,complexity=no,reuse=no"
        );
        let error = rejected("discovery.passwordrules", "lockout=5");
        assert!(
            error.reason.contains("'lockout' is not a known key"),
            "{error}"
        );
        rejected("discovery.passwordrules", "expiration");
        rejected("discovery.passwordrules", "expiration=");
    }

    #[test]
    fn mac_addresses() {
        let expected = "00:1a:2b:3c:4d:5e";
        for form in [
            "00:1a:2b:3c:4d:5e",
            "00:1A:2B:3C:4D:5E",
            "00-1a-2b-3c-4d-5e",
            "001a.2b3c.4d5e",
            "001A2B3C4D5E",
            "0:1a:2b:3c:4d:5e",
            " 00:1a:2b:3c:4d:5e ",
        ] {
            assert_eq!(ok("net.hwaddr", form), expected, "{form}");
        }
        assert_eq!(ok("net.eth0.hwaddr", "0:1:2:3:4:5"), "00:01:02:03:04:05");
        for bad in [
            "00:1a:2b:3c:4d",
            "00:1a:2b:3c:4d:5e:6f",
            "00:1a:2b:3c:4d:5g",
            "001a2b3c4d5",
            "00:1a-2b:3c:4d:5e",
            "001a.2b3c.4d5",
            "+0:1a:2b:3c:4d:5e",
            "000:1a:2b:3c:4d:5e",
            "00::2b:3c:4d:5e",
            "ü0:1a:2b:3c:4d:5e",
        ] {
            rejected("net.hwaddr", bad);
        }
        assert_eq!(
            rejected("net.hwaddr", "xx").to_string(),
            "invalid value 'xx' for net.hwaddr: expected a MAC address like 00:11:22:33:44:55"
        );
    }

    #[test]
    fn ipv4_with_prefix() {
        assert_eq!(ok("net.ipv4_address", "172.17.0.5"), "172.17.0.5");
        assert_eq!(
            ok("net.eth0.ipv4_address", "172.17.0.5/16"),
            "172.17.0.5/16"
        );
        assert_eq!(ok("net.ipv4_address", "10.0.0.1/0"), "10.0.0.1/0");
        assert_eq!(ok("net.ipv4_address", "10.0.0.1/32"), "10.0.0.1/32");
        let error = rejected("net.ipv4_address", "10.0.0.1/33");
        assert_eq!(error.reason, "prefix length 33 is out of range 0-32");
        for bad in [
            "10.0.0.256",
            "10.0.0",
            "2001:db8::1",
            "10.0.0.1/",
            "10.0.0.1/x",
            "010.0.0.1",
        ] {
            rejected("net.ipv4_address", bad);
        }
    }

    #[test]
    fn ipv6_with_prefix() {
        assert_eq!(ok("net.ipv6_address", "2001:DB8:0:0::1"), "2001:db8::1");
        assert_eq!(ok("net.ipv6_address", "2001:db8::1/64"), "2001:db8::1/64");
        rejected("net.ipv6_address", "2001:db8::1/129");
        rejected("net.ipv6_address", "10.0.0.1");
        rejected("net.ipv6_address", "2001:db8:::1");
    }

    #[test]
    fn bare_addresses() {
        assert_eq!(ok("net.ipv4_gateway", "192.0.2.1"), "192.0.2.1");
        rejected("net.ipv4_gateway", "192.0.2.1/24");
        assert_eq!(ok("net.ipv6_gateway", "FE80::1"), "fe80::1");
        assert_eq!(ok("net.ipv6_gateway", "fe80::1%eth0"), "fe80::1%eth0");
        assert_eq!(
            ok("net.ipv6_gateway", "fe80::1%eth0.100"),
            "fe80::1%eth0.100"
        );
        rejected("net.ipv6_gateway", "fe80::1%eth 0");
        rejected("net.ipv6_gateway", "fe80::1%");
        rejected("net.ipv6_gateway", "fe80::1/64");
        assert_eq!(ok("deployment.client_ip", "192.0.2.7"), "192.0.2.7");
        assert_eq!(ok("deployment.client_ip", "2001:db8::7"), "2001:db8::7");
        rejected("deployment.client_ip", "host.example.com");
    }

    #[test]
    fn ip_lists() {
        assert_eq!(
            ok("dns.servers", "192.0.2.53, 2001:DB8::53,ns1.example.com"),
            "192.0.2.53,2001:db8::53,ns1.example.com"
        );
        assert_eq!(ok("ntp.servers", "pool.ntp.org"), "pool.ntp.org");
        let error = rejected("ntp.servers", "192.0.2.1,10.0.0.300");
        assert!(error.reason.contains("'10.0.0.300'"), "{error}");
        rejected("dns.servers", "bad name");
        rejected("dns.servers", "-bad.example.com");
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            ok("trusted.subnets", "192.0.2.0/24, 2001:DB8::/32"),
            "192.0.2.0/24,2001:db8::/32"
        );
        rejected("trusted.subnets", "192.0.2.0");
        rejected("trusted.subnets", "192.0.2.0/40");
        rejected("trusted.subnets", "2001:db8::/129");
        rejected("trusted.subnets", "example.com/24");
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("10.0.0.5", "10.0.0.5"),
            ("10.0.0.5/24", "10.0.0.5/24"),
            ("10.0.0.5:623", "10.0.0.5:623"),
            ("2001:DB8::5", "2001:db8::5"),
            ("2001:db8::5/64", "2001:db8::5/64"),
            ("[2001:db8::5]", "[2001:db8::5]"),
            ("[2001:db8::5]:443", "[2001:db8::5]:443"),
            ("n1-bmc", "n1-bmc"),
            ("n1-bmc.example.com:8443", "n1-bmc.example.com:8443"),
        ];
        for (input, expected) in cases {
            assert_eq!(ok("hardwaremanagement.manager", input), expected, "{input}");
        }
        assert_eq!(ok("hardwaremanagement.manager", "N1-BMC"), "N1-BMC");
        for bad in [
            "10.0.0.5/33",
            "10.0.0.5:0",
            "10.0.0.5:70000",
            "[10.0.0.5]:80",
            "[2001:db8::5]443",
            "bad host",
            "10.0.0.256",
            "host:",
        ] {
            rejected("hardwaremanagement.manager", bad);
        }
    }

    #[test]
    fn group_and_node_lists() {
        assert_eq!(
            ok("groups", "rack1, compute,everything,rack1"),
            "rack1,compute,everything"
        );
        assert_eq!(ok("nodes", "n1,n2,n3"), "n1,n2,n3");
        for bad in ["rack 1", "a@b", "n[1-3]", "loc=1", "(x)", "~re"] {
            rejected("groups", bad);
            rejected("nodes", bad);
        }
    }

    #[test]
    fn noderanges() {
        assert_eq!(
            ok("ssh.trustnodes", "rack1,-(console.logging=full@compute)"),
            "rack1,-(console.logging=full@compute)"
        );
        assert_eq!(ok("noderange", " r[1-3]u[01-10] "), "r[1-3]u[01-10]");
        rejected("noderange", "rack1,(compute");
        rejected("noderange", "rack1)");
        rejected("noderange", "n[1-3");
        rejected("collective.managercandidates", "a b");
    }

    #[test]
    fn timestamps() {
        for (input, expected) in [
            ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
            ("2024-05-01t12:00:00z", "2024-05-01T12:00:00Z"),
            ("2024-02-29T23:59:60", "2024-02-29T23:59:60"),
            (
                "2024-05-01T12:00:00.123456+02:00",
                "2024-05-01T12:00:00.123456+02:00",
            ),
            ("2024-05-01T12:00:00-05:30", "2024-05-01T12:00:00-05:30"),
        ] {
            assert_eq!(
                ok("deployment.state_last_updated", input),
                expected,
                "{input}"
            );
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01 12:00:00",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01",
            "yesterday",
            "2024-05-01T12:00:00Zjunk",
        ] {
            rejected("deployment.state_last_updated", bad);
        }
    }

    #[test]
    fn uuids() {
        let expected = "01234567-89ab-cdef-0123-456789abcdef";
        assert_eq!(
            ok("id.uuid", "01234567-89AB-CDEF-0123-456789ABCDEF"),
            expected
        );
        assert_eq!(ok("id.uuid", "0123456789abcdef0123456789abcdef"), expected);
        for bad in [
            "01234567-89ab-cdef-0123-456789abcde",
            "0123456789abcdef0123456789abcdeg",
            "01234567089ab-cdef-0123-456789abcdef",
        ] {
            rejected("id.uuid", bad);
        }
    }

    #[test]
    fn secret_values_are_masked_in_errors() {
        let error = InvalidValueError {
            attribute: "secret.ipmikg".to_owned(),
            value: shown_value("secret.ipmikg", "hunter2"),
            reason: "test".to_owned(),
        };
        assert!(!error.to_string().contains("hunter2"));
        assert_eq!(ok("secret.ipmikg", " spaced secret "), " spaced secret ");
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(10_000);
        let error = rejected("net.hwaddr", &long);
        assert!(error.to_string().len() < 200);
    }

    #[test]
    fn wildcard_matching() {
        assert!(wildcard_match("net.*switch", "net.eth0.switch"));
        assert!(wildcard_match("net.*switch", "net.switch"));
        assert!(!wildcard_match("net.*switch", "net.eth0.switchport"));
        assert!(wildcard_match("net.*", "net.a.b.c"));
        assert!(wildcard_match("secret.*", "secret.ipmikg"));
        assert!(wildcard_match("location.?", "location.u"));
        assert!(!wildcard_match("location.?", "location.uu"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("**a**", "bab"));
        assert!(!wildcard_match("", "a"));
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("Net.*", "net.x"));
        assert!(wildcard_match("custom.ü*", "custom.über"));
        assert!(wildcard_match("custom.?ber", "custom.über"));
        assert!(is_wildcard("net.*switch"));
        assert!(is_wildcard("location.?"));
        assert!(!is_wildcard("location.u"));
    }

    #[test]
    fn wildcard_matching_is_not_exponential() {
        let name = "a".repeat(2_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!wildcard_match(&pattern, &name));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn validate_never_panics(name_index in 0usize..200, value in ".{0,80}") {
                let names: Vec<&str> = all().iter().map(|s| s.name).collect();
                let name = names.get(name_index % names.len()).copied().unwrap_or("info.note");
                let _ = validate(name, &value);
            }

            #[test]
            fn normalised_values_are_fixed_points(name_index in 0usize..200, value in "[0-9a-fA-F:./ ,=-]{0,40}") {
                let names: Vec<&str> = all().iter().map(|s| s.name).collect();
                let name = names.get(name_index % names.len()).copied().unwrap_or("info.note");
                if let Ok(normalised) = validate(name, &value) {
                    prop_assert_eq!(validate(name, &normalised), Ok(normalised.clone()));
                }
            }

            #[test]
            fn canonical_name_never_panics(name in ".{0,60}") {
                let _ = canonical_name(&name);
            }

            #[test]
            fn star_matches_everything(name in ".{0,40}") {
                prop_assert!(wildcard_match("*", &name));
                prop_assert!(wildcard_match(&name.replace(['*', '?'], ""), &name.replace(['*', '?'], "")));
            }

            #[test]
            fn mac_round_trip(octets in proptest::array::uniform6(any::<u8>())) {
                let colon: Vec<String> = octets.iter().map(|o| format!("{o:02X}")).collect();
                let expected = colon.join(":").to_ascii_lowercase();
                prop_assert_eq!(validate("net.hwaddr", &colon.join("-")), Ok(expected.clone()));
                prop_assert_eq!(validate("net.hwaddr", &colon.concat()), Ok(expected));
            }
        }
    }
}
