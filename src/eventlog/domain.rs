//! Domain events: the one typed vocabulary of what the `events` and `audit` logs record.
//!
//! A record has a dotted type (`dhcp.discover`, `api.denied`, ...) and a `detail` object.
//! Producers build a [`DomainEvent`] variant with typed fields; the writer stores it as `type`
//! and `detail` ([`DomainEvent::into_parts`]), so the record format of
//! `docs/eventlog-format.md` and the JSON API clients see are those of the untyped records
//! before them, field for field. Readers get the typed event back with
//! [`DomainEvent::decode`]; filters, subscriptions and boot timelines work on [`EventKind`].
//!
//! Stability: kinds and fields are only ever added, never renamed or removed, because records
//! outlive the daemon that wrote them and subscribers filter on them. Every kind is documented
//! for API clients in `docs/events.md` (a unit test keeps that list equal to
//! [`EventKind::ALL`]). A record whose type this daemon does not know (written by a newer
//! daemon, or imported), or whose detail does not have the documented fields, decodes as
//! [`DomainEvent::Raw`] and is served unchanged.
//!
//! API boundary: vocabulary only; no I/O. Nothing here knows the services that emit the events.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::query::type_matches;
use crate::proto::dhcp::{MacAddress, MessageType};

// One list of kinds and their names: `ALL` (what filters validate against and what the
// documentation test compares with) cannot then miss a variant.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// The documented event types (the `type` of a record), without their fields.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)+
        }

        impl EventKind {
            /// Every kind, in the order of `docs/events.md`.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)+];

            /// The `type` of records of this kind.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)+
                }
            }
        }
    };
}

event_kinds! {
    /// The daemon started serving.
    DaemonStart = "daemon.start",
    /// The daemon stopped after a clean shutdown.
    DaemonStop = "daemon.stop",
    /// A DHCP DISCOVER of a booting machine or known node.
    DhcpDiscover = "dhcp.discover",
    /// A DHCP OFFER received (from another server; clients do not send it).
    DhcpOffer = "dhcp.offer",
    /// A DHCP REQUEST.
    DhcpRequest = "dhcp.request",
    /// A DHCP DECLINE.
    DhcpDecline = "dhcp.decline",
    /// A DHCP ACK received (from another server).
    DhcpAck = "dhcp.ack",
    /// A DHCP NAK received (from another server).
    DhcpNak = "dhcp.nak",
    /// A DHCP RELEASE.
    DhcpRelease = "dhcp.release",
    /// A DHCP INFORM.
    DhcpInform = "dhcp.inform",
    /// An auto-mode interface switched between full and proxy DHCP.
    DhcpMode = "dhcp.mode",
    /// A boot configuration asked for over TFTP.
    BootTftp = "boot.tftp",
    /// A boot script or image asked for over HTTP(S).
    BootHttp = "boot.http",
    /// A TLS handshake failed for lack of a common key exchange (old UEFI firmware).
    BootTls = "boot.tls",
    /// An audited API request ran (audit log).
    ApiRequest = "api.request",
    /// An API request was refused (audit log).
    ApiDenied = "api.denied",
}

impl EventKind {
    /// The kind named `text`, if it is a documented one.
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == text)
    }

    /// The `dhcp.<message>` kind of an exchange whose request had this message type.
    pub fn of_dhcp_message(message_type: MessageType) -> EventKind {
        match message_type {
            MessageType::Discover => EventKind::DhcpDiscover,
            MessageType::Offer => EventKind::DhcpOffer,
            MessageType::Request => EventKind::DhcpRequest,
            MessageType::Decline => EventKind::DhcpDecline,
            MessageType::Ack => EventKind::DhcpAck,
            MessageType::Nak => EventKind::DhcpNak,
            MessageType::Release => EventKind::DhcpRelease,
            MessageType::Inform => EventKind::DhcpInform,
        }
    }

    /// Where a record of this kind sits in a boot attempt; `None` for events that are not
    /// boot steps.
    pub fn boot_phase(self) -> Option<BootPhase> {
        match self {
            EventKind::DhcpDiscover => Some(BootPhase::Start),
            EventKind::DhcpOffer
            | EventKind::DhcpRequest
            | EventKind::DhcpDecline
            | EventKind::DhcpAck
            | EventKind::DhcpNak
            | EventKind::DhcpRelease
            | EventKind::DhcpInform => Some(BootPhase::Dhcp),
            EventKind::BootTftp | EventKind::BootHttp | EventKind::BootTls => {
                Some(BootPhase::Loader)
            }
            EventKind::DaemonStart
            | EventKind::DaemonStop
            | EventKind::DhcpMode
            | EventKind::ApiRequest
            | EventKind::ApiDenied => None,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The steps of a node's boot attempt, as boot timelines see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPhase {
    /// The firmware asks for an address: the start of an attempt (or a retransmission of it).
    Start,
    /// The rest of the DHCP exchange.
    Dhcp,
    /// What the firmware or boot loader fetched: configurations, scripts, images.
    Loader,
    /// The installer reporting progress (`deploy.*`, with the deployment state machine).
    Deploy,
}

/// Type prefixes under which boot steps are recorded: the documented kinds with a
/// [`BootPhase`], and the families of steps newer daemons may add.
pub const BOOT_FAMILIES: &[&str] = &["boot.", "dhcp.", "tftp.", "http.", "deploy."];

/// The boot phase of a record's type: by its kind when this daemon knows it; otherwise by its
/// family, so that a timeline still shows the steps of records written by a newer daemon (or
/// imported).
pub fn boot_phase(kind: &str) -> Option<BootPhase> {
    if let Some(known) = EventKind::parse(kind) {
        return known.boot_phase();
    }
    if kind == "boot.start" {
        return Some(BootPhase::Start);
    }
    match kind.split_once('.')?.0 {
        "dhcp" => Some(BootPhase::Dhcp),
        "boot" | "tftp" | "http" => Some(BootPhase::Loader),
        "deploy" => Some(BootPhase::Deploy),
        _ => None,
    }
}

/// A type filter naming no documented kind: a typo would otherwise silently match nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown event type '{pattern}' (known types: {}; or a prefix such as dhcp.*)",
    known_kinds()
)]
pub struct UnknownEventType {
    pub pattern: String,
}

fn known_kinds() -> String {
    EventKind::ALL
        .iter()
        .map(|kind| kind.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check a filter's type pattern (`dhcp.discover`, `dhcp.*`, `dhcp.`, `*`, see
/// [`type_matches`]): it must match at least one documented kind.
pub fn check_type_pattern(pattern: &str) -> Result<(), UnknownEventType> {
    if EventKind::ALL
        .iter()
        .any(|kind| type_matches(pattern, kind.as_str()))
    {
        Ok(())
    } else {
        Err(UnknownEventType {
            pattern: pattern.to_string(),
        })
    }
}

/// What happened, with the fields of its kind. See `docs/events.md` for the JSON of each.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// `daemon.start`.
    DaemonStart(DaemonStarted),
    /// `daemon.stop`.
    DaemonStop(DaemonStopped),
    /// `dhcp.<message>`: one variant for the eight kinds, whose kind is the exchange's
    /// `message_type`, so the type and the detail cannot disagree.
    DhcpExchange(DhcpExchange),
    /// `dhcp.mode`.
    DhcpMode(DhcpModeChanged),
    /// `boot.tftp`.
    BootTftp(BootServed),
    /// `boot.http`.
    BootHttp(BootServed),
    /// `boot.tls`.
    BootTls(TlsIncompatible),
    /// `api.request`.
    ApiRequest(ApiCall),
    /// `api.denied`.
    ApiDenied(ApiDenial),
    /// A record of a type this daemon does not know, or whose detail lacks the documented
    /// fields (older or newer daemons, imports, tests): kept as it was written.
    Raw { kind: String, detail: Value },
}

impl DomainEvent {
    /// The documented kind; `None` for [`DomainEvent::Raw`].
    pub fn event_kind(&self) -> Option<EventKind> {
        Some(match self {
            DomainEvent::DaemonStart(_) => EventKind::DaemonStart,
            DomainEvent::DaemonStop(_) => EventKind::DaemonStop,
            DomainEvent::DhcpExchange(exchange) => {
                EventKind::of_dhcp_message(exchange.message_type)
            }
            DomainEvent::DhcpMode(_) => EventKind::DhcpMode,
            DomainEvent::BootTftp(_) => EventKind::BootTftp,
            DomainEvent::BootHttp(_) => EventKind::BootHttp,
            DomainEvent::BootTls(_) => EventKind::BootTls,
            DomainEvent::ApiRequest(_) => EventKind::ApiRequest,
            DomainEvent::ApiDenied(_) => EventKind::ApiDenied,
            DomainEvent::Raw { .. } => return None,
        })
    }

    /// The record's `type`.
    pub fn kind(&self) -> &str {
        match self {
            DomainEvent::Raw { kind, .. } => kind,
            typed => typed.event_kind().map_or("", EventKind::as_str),
        }
    }

    /// The node the event is about, when its fields name one (the record's `node` then
    /// defaults to it).
    pub fn node(&self) -> Option<&str> {
        match self {
            DomainEvent::DhcpExchange(exchange) => exchange.node.as_deref(),
            _ => None,
        }
    }

    /// The record's `detail`.
    pub fn detail(&self) -> Value {
        match self {
            DomainEvent::DaemonStart(fields) => detail_of(fields),
            DomainEvent::DaemonStop(fields) => detail_of(fields),
            DomainEvent::DhcpExchange(fields) => detail_of(fields),
            DomainEvent::DhcpMode(fields) => detail_of(fields),
            DomainEvent::BootTftp(fields) | DomainEvent::BootHttp(fields) => detail_of(fields),
            DomainEvent::BootTls(fields) => detail_of(fields),
            DomainEvent::ApiRequest(fields) => detail_of(fields),
            DomainEvent::ApiDenied(fields) => detail_of(fields),
            DomainEvent::Raw { detail, .. } => detail.clone(),
        }
    }

    /// `type` and `detail` as stored.
    pub fn into_parts(self) -> (String, Value) {
        match self {
            DomainEvent::Raw { kind, detail } => (kind, detail),
            typed => (typed.kind().to_string(), typed.detail()),
        }
    }

    /// The typed event of a stored `type` and `detail`; [`DomainEvent::Raw`] when the type is
    /// unknown or the detail lacks a documented field.
    pub fn decode(kind: &str, detail: &Value) -> DomainEvent {
        let typed = match EventKind::parse(kind) {
            Some(EventKind::DaemonStart) => fields(detail).map(DomainEvent::DaemonStart),
            Some(EventKind::DaemonStop) => fields(detail).map(DomainEvent::DaemonStop),
            Some(EventKind::DhcpMode) => fields(detail).map(DomainEvent::DhcpMode),
            Some(EventKind::BootTftp) => fields(detail).map(DomainEvent::BootTftp),
            Some(EventKind::BootHttp) => fields(detail).map(DomainEvent::BootHttp),
            Some(EventKind::BootTls) => fields(detail).map(DomainEvent::BootTls),
            Some(EventKind::ApiRequest) => fields(detail).map(DomainEvent::ApiRequest),
            Some(EventKind::ApiDenied) => fields(detail).map(DomainEvent::ApiDenied),
            Some(
                dhcp @ (EventKind::DhcpDiscover
                | EventKind::DhcpOffer
                | EventKind::DhcpRequest
                | EventKind::DhcpDecline
                | EventKind::DhcpAck
                | EventKind::DhcpNak
                | EventKind::DhcpRelease
                | EventKind::DhcpInform),
            ) => fields::<DhcpExchange>(detail)
                .filter(|exchange| EventKind::of_dhcp_message(exchange.message_type) == dhcp)
                .map(DomainEvent::DhcpExchange),
            None => None,
        };
        typed.unwrap_or_else(|| DomainEvent::Raw {
            kind: kind.to_string(),
            detail: detail.clone(),
        })
    }
}

fn detail_of<T: Serialize>(fields: &T) -> Value {
    // INVARIANT: these structs serialize to JSON objects without fail (string keys, no I/O);
    // should one ever fail, the record keeps its type with a null detail rather than being
    // lost.
    serde_json::to_value(fields).unwrap_or(Value::Null)
}

fn fields<T: DeserializeOwned>(detail: &Value) -> Option<T> {
    T::deserialize(detail).ok()
}

/// `daemon.start`: the daemon is serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStarted {
    /// The daemon's version.
    pub version: String,
    pub pid: u32,
    /// Listener name (`http`, `https`, `tls_socket`, `tftp`) → bound address, as in
    /// `run/listeners.json`.
    pub listeners: BTreeMap<String, String>,
}

/// `daemon.stop`: the daemon stopped its services and flushed its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStopped {
    pub pid: u32,
}

/// `dhcp.<message>`: one DHCP exchange of a booting machine or known node: what came in, what
/// was decided and why. Also what the DHCP service keeps in its exchange ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpExchange {
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub interface: String,
    /// The port the request arrived on: 67, or 4011 (PXE boot server requests in proxy mode).
    pub server_port: u16,
    /// Transaction id, 8 lower-case hex digits.
    #[serde(with = "xid_hex")]
    pub xid: u32,
    /// `chaddr`, when it is a 6-byte hardware address.
    #[serde(default, with = "optional_text")]
    pub mac: Option<MacAddress>,
    /// Option 53 of the request, upper case (`DISCOVER`); the kind is `dhcp.` + it in lower
    /// case.
    #[serde(with = "text")]
    pub message_type: MessageType,
    pub node: Option<String>,
    /// Client system architecture (option 93).
    pub architecture: Option<u16>,
    /// Option 60.
    pub vendor_class: Option<String>,
    /// Option 77.
    pub user_class: Option<String>,
    /// `giaddr`, when relayed.
    pub relay: Option<Ipv4Addr>,
    /// The reply sent, upper case; null when none.
    #[serde(default, with = "optional_text")]
    pub reply: Option<MessageType>,
    /// `yiaddr` of the reply.
    pub address: Option<Ipv4Addr>,
    /// Boot file (or URL) of the reply.
    pub boot_file: Option<String>,
    /// Stable code of the decision (`offer_pxe`, `mode_off`, ...).
    pub reason_code: String,
    /// The decision in words.
    pub reason: String,
}

/// A DHCP interface's serving mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServingMode {
    Full,
    Proxy,
    Off,
    Auto,
}

/// `dhcp.mode`: an auto-mode interface's probe decided how it is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpModeChanged {
    pub interface: String,
    /// The interface's setting (`auto`).
    pub configured: ServingMode,
    /// Served now: `full` or `proxy`.
    pub mode: ServingMode,
    /// Served before (`auto` before the first probe result).
    pub previous: ServingMode,
    /// The other DHCP server that answered the probe; null when none did.
    pub foreign_server: Option<Ipv4Addr>,
}

/// `boot.tftp` and `boot.http`: what a booting machine asked for and was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootServed {
    /// The requested name below the boot root (`boot/by-mac/<mac>/grub.cfg`,
    /// `by-mac/<mac>/boot.ipxe`, ...).
    pub request: String,
    /// The node's pending profile: `Some(None)` (JSON null) when none is pending; `None`
    /// (absent) when the machine is unknown.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub profile: Option<Option<String>>,
    /// `unknown machine`, `local boot`, `boot script`, `boot image`, or the error that kept the
    /// profile from being served.
    pub outcome: String,
}

impl BootServed {
    /// A request from a machine that is no known node.
    pub fn unknown_machine(request: String) -> BootServed {
        BootServed {
            request,
            profile: None,
            outcome: "unknown machine".to_string(),
        }
    }

    /// A request of a known node whose pending profile is `profile`.
    pub fn for_node(request: String, profile: Option<&str>, outcome: &str) -> BootServed {
        BootServed {
            request,
            profile: Some(profile.map(str::to_string)),
            outcome: outcome.to_string(),
        }
    }
}

/// `boot.tls`: a TLS client offered no cipher suite or key exchange group in common.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsIncompatible {
    pub peer: SocketAddr,
    pub outcome: String,
    /// What to do about it.
    pub hint: String,
}

/// How an audited request ended: `"ok"`, or `{"status", "code"}` of the API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Value", try_from = "Value")]
pub enum ApiOutcome {
    Ok,
    Failed { status: u16, code: String },
}

impl From<ApiOutcome> for Value {
    fn from(outcome: ApiOutcome) -> Value {
        match outcome {
            ApiOutcome::Ok => Value::from("ok"),
            ApiOutcome::Failed { status, code } => {
                serde_json::json!({"status": status, "code": code})
            }
        }
    }
}

impl TryFrom<Value> for ApiOutcome {
    type Error = String;
    fn try_from(value: Value) -> Result<ApiOutcome, String> {
        if value == "ok" {
            return Ok(ApiOutcome::Ok);
        }
        let status = value.get("status").and_then(Value::as_u64);
        let code = value.get("code").and_then(Value::as_str);
        match (status.and_then(|status| u16::try_from(status).ok()), code) {
            (Some(status), Some(code)) => Ok(ApiOutcome::Failed {
                status,
                code: code.to_string(),
            }),
            _ => Err(format!("not an API outcome: {value}")),
        }
    }
}

/// `api.request` (and `api.denied` of an identified caller): an audited API request. Who asked
/// is the record's `user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCall {
    /// `create`, `retrieve`, `update`, `delete`, `start`, `shutdown`.
    pub operation: String,
    /// The canonical API path.
    pub target: String,
    /// Names of the request's parameters, never their values (they may hold passwords).
    pub parameters: Vec<String>,
    pub tenant: Option<String>,
    /// The caller's role; null for trusted local callers and nodes.
    pub role: Option<String>,
    /// False for `api.denied`.
    pub allowed: bool,
    pub outcome: ApiOutcome,
}

/// `api.denied` of a peer without valid credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnauthenticatedPeer {
    /// The operation (`connect` for a refused socket peer) or the HTTP method.
    pub operation: String,
    pub target: String,
    /// The tenant of the claimed user name, if it has one.
    pub tenant: Option<String>,
    /// Always false.
    pub allowed: bool,
    /// `socket`, `http`, `https`.
    pub transport: String,
    pub reason: String,
    /// `{"status": 401, "code": "unauthenticated"}`.
    pub outcome: ApiOutcome,
}

/// The two shapes of `api.denied`, told apart by their fields (`parameters` or `transport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiDenial {
    Caller(ApiCall),
    Unauthenticated(UnauthenticatedPeer),
}

/// Deserialize a field that is present (possibly null) as `Some`, so `Option<Option<T>>` tells
/// an absent field (`None`, through `#[serde(default)]`) from a null one (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Fields stored as their text (DHCP message names) through `Display` and `FromStr`.
mod text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        String::deserialize(deserializer)?
            .parse()
            .map_err(D::Error::custom)
    }
}

/// [`text`] for optional fields (null when absent).
mod optional_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(deserializer)?
            .map(|text| text.parse().map_err(D::Error::custom))
            .transpose()
    }
}

/// A DHCP `xid` as 8 lower-case hex digits, as `dhcpd` logs and packet captures show it.
mod xid_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(xid: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{xid:08x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text = String::deserialize(deserializer)?;
        u32::from_str_radix(&text, 16).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `docs/events.md` documents every kind under a `### ` heading naming it in backquotes.
    #[test]
    fn docs_events_md_lists_exactly_the_kinds() {
        let docs = include_str!("../../docs/events.md");
        let mut documented: Vec<&str> = docs
            .lines()
            .filter_map(|line| line.strip_prefix("### "))
            .flat_map(|heading| heading.split('`').skip(1).step_by(2))
            .collect();
        documented.sort_unstable();
        let mut kinds: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
        kinds.sort_unstable();
        assert_eq!(
            documented, kinds,
            "docs/events.md must have one `### ` heading per kind of EventKind::ALL"
        );
    }

    #[test]
    fn kinds_parse_back_and_are_unique() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
        }
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }

    fn exchange() -> DhcpExchange {
        DhcpExchange {
            time: 1_764_095_421,
            interface: "eth1".into(),
            server_port: 67,
            xid: 0x00ab_cdef,
            mac: MacAddress::parse("52:54:00:12:34:56"),
            message_type: MessageType::Discover,
            node: Some("n1".into()),
            architecture: Some(7),
            vendor_class: Some("PXEClient:Arch:00007:UNDI:003016".into()),
            user_class: None,
            relay: None,
            reply: Some(MessageType::Offer),
            address: Some(Ipv4Addr::new(10, 0, 0, 21)),
            boot_file: Some("confluent/ipxe.efi".into()),
            reason_code: "offer_pxe".into(),
            reason: "PXE firmware gets iPXE".into(),
        }
    }

    /// The detail is the JSON the untyped producers wrote, field for field.
    #[test]
    fn dhcp_exchange_detail_is_the_historic_json() {
        let event = DomainEvent::DhcpExchange(exchange());
        assert_eq!(event.kind(), "dhcp.discover");
        assert_eq!(event.node(), Some("n1"));
        let detail = event.detail();
        assert_eq!(
            detail,
            json!({
                "time": 1_764_095_421u64, "interface": "eth1", "server_port": 67,
                "xid": "00abcdef", "mac": "52:54:00:12:34:56", "message_type": "DISCOVER",
                "node": "n1", "architecture": 7,
                "vendor_class": "PXEClient:Arch:00007:UNDI:003016", "user_class": null,
                "relay": null, "reply": "OFFER", "address": "10.0.0.21",
                "boot_file": "confluent/ipxe.efi", "reason_code": "offer_pxe",
                "reason": "PXE firmware gets iPXE",
            })
        );
        assert_eq!(DomainEvent::decode("dhcp.discover", &detail), event);
        // The type and the message type must agree, or the record stays raw.
        assert!(matches!(
            DomainEvent::decode("dhcp.request", &detail),
            DomainEvent::Raw { .. }
        ));
    }

    #[test]
    fn every_typed_shape_round_trips() {
        let events = [
            DomainEvent::DaemonStart(DaemonStarted {
                version: "1.0".into(),
                pid: 42,
                listeners: [("http".to_string(), "127.0.0.1:80".to_string())].into(),
            }),
            DomainEvent::DaemonStop(DaemonStopped { pid: 42 }),
            DomainEvent::DhcpMode(DhcpModeChanged {
                interface: "eth1".into(),
                configured: ServingMode::Auto,
                mode: ServingMode::Proxy,
                previous: ServingMode::Full,
                foreign_server: Some(Ipv4Addr::new(10, 0, 0, 2)),
            }),
            DomainEvent::BootTftp(BootServed::unknown_machine("boot/by-mac/x/grub.cfg".into())),
            DomainEvent::BootHttp(BootServed::for_node(
                "by-node/n1/boot.ipxe".into(),
                None,
                "local boot",
            )),
            DomainEvent::BootTls(TlsIncompatible {
                peer: "10.0.0.5:50000".parse().unwrap(),
                outcome: "no TLS key exchange in common".into(),
                hint: "newer firmware".into(),
            }),
            DomainEvent::ApiRequest(ApiCall {
                operation: "create".into(),
                target: "/nodes/".into(),
                parameters: vec!["name".into()],
                tenant: None,
                role: Some("Administrator".into()),
                allowed: true,
                outcome: ApiOutcome::Ok,
            }),
            DomainEvent::ApiDenied(ApiDenial::Caller(ApiCall {
                operation: "update".into(),
                target: "/nodes/n1/attributes/current".into(),
                parameters: vec![],
                tenant: Some("acme".into()),
                role: None,
                allowed: false,
                outcome: ApiOutcome::Failed {
                    status: 403,
                    code: "forbidden".into(),
                },
            })),
            DomainEvent::ApiDenied(ApiDenial::Unauthenticated(UnauthenticatedPeer {
                operation: "connect".into(),
                target: "/".into(),
                tenant: None,
                allowed: false,
                transport: "socket".into(),
                reason: "unknown user".into(),
                outcome: ApiOutcome::Failed {
                    status: 401,
                    code: "unauthenticated".into(),
                },
            })),
        ];
        for event in events {
            let (kind, detail) = event.clone().into_parts();
            assert_eq!(
                DomainEvent::decode(&kind, &detail),
                event,
                "{kind} {detail}"
            );
        }
    }

    #[test]
    fn absent_and_null_fields_keep_their_historic_shapes() {
        let unknown = DomainEvent::BootTftp(BootServed::unknown_machine("r".into())).detail();
        assert_eq!(
            unknown,
            json!({"request": "r", "outcome": "unknown machine"})
        );
        let local =
            DomainEvent::BootHttp(BootServed::for_node("r".into(), None, "local boot")).detail();
        assert_eq!(
            local,
            json!({"request": "r", "profile": null, "outcome": "local boot"})
        );
        assert_eq!(
            Value::from(ApiOutcome::Failed {
                status: 404,
                code: "not_found".into()
            }),
            json!({"status": 404, "code": "not_found"})
        );
        assert_eq!(Value::from(ApiOutcome::Ok), json!("ok"));
    }

    #[test]
    fn unknown_kinds_and_odd_details_stay_raw() {
        let detail = json!({"file": "boot.ipxe"});
        for kind in ["tftp.read", "dhcp.discover", "api.request"] {
            let event = DomainEvent::decode(kind, &detail);
            assert_eq!(
                event,
                DomainEvent::Raw {
                    kind: kind.into(),
                    detail: detail.clone()
                }
            );
            assert_eq!(event.into_parts(), (kind.to_string(), detail.clone()));
        }
    }

    #[test]
    fn boot_phases_come_from_the_kind() {
        assert_eq!(boot_phase("dhcp.discover"), Some(BootPhase::Start));
        assert_eq!(boot_phase("dhcp.ack"), Some(BootPhase::Dhcp));
        assert_eq!(boot_phase("boot.http"), Some(BootPhase::Loader));
        assert_eq!(boot_phase("dhcp.mode"), None);
        assert_eq!(boot_phase("api.denied"), None);
        // Types of newer daemons, by family.
        assert_eq!(boot_phase("boot.start"), Some(BootPhase::Start));
        assert_eq!(boot_phase("tftp.read"), Some(BootPhase::Loader));
        assert_eq!(boot_phase("deploy.progress"), Some(BootPhase::Deploy));
        assert_eq!(boot_phase("power.on"), None);
        for kind in EventKind::ALL {
            if kind.boot_phase().is_some() {
                assert!(
                    BOOT_FAMILIES
                        .iter()
                        .any(|family| type_matches(family, kind.as_str())),
                    "{kind} is a boot step outside BOOT_FAMILIES"
                );
            }
        }
    }

    #[test]
    fn type_patterns_are_checked_against_the_kinds() {
        for pattern in [
            "*",
            "dhcp.*",
            "dhcp.",
            "api.denied",
            "daemon.start",
            "boot.*",
        ] {
            assert!(check_type_pattern(pattern).is_ok(), "{pattern}");
        }
        for pattern in ["dhcp.discovery", "power.*", "tftp.read", ""] {
            let error = check_type_pattern(pattern).unwrap_err();
            assert!(
                error.to_string().contains(&format!("'{pattern}'")),
                "{error}"
            );
        }
    }
}
