//! The daemon's metrics, served at `/metrics` in the OpenMetrics text format (which Prometheus
//! scrapes): one [`Metrics`] built by the daemon, holding the registry and every metric
//! family, whose small handles ([`Counter`], [`Gauge`], the per-service structs below) are
//! passed explicitly to the services that count.
//!
//! API boundary: a leaf. It imports no module of the crate, so that every layer (the
//! configuration engine and the event log included) can hold a handle; what a label means is
//! decided by the service that counts, and label values are fixed strings or small enums so
//! that no series is ever created per node, per path or per client.
//!
//! INVARIANT: the registry is complete when [`Metrics::new`] returns and is never changed
//! afterwards, so encoding needs no lock; hot paths only touch pre-resolved atomic counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;

/// The media type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the daemon, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub dhcp: DhcpMetrics,
    pub tftp: TftpMetrics,
    pub http_boot: HttpBootMetrics,
    /// API requests by route pattern, operation and status.
    pub api_requests: Family<ApiRequestLabels, Counter>,
    /// Events accepted by each event log.
    pub event_log_appends: Family<EventLogLabels, Counter>,
    /// Configuration transactions made durable.
    pub config_commits: Counter,
    /// HTTP sessions held.
    pub sessions: Gauge,
    pub boot_phases: std::sync::Arc<BootPhases>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family, registered under the `confluent_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("confluent");
        let dhcp = DhcpMetrics::default();
        registry.register(
            "dhcp_received",
            "DHCP datagrams received on the served sockets",
            dhcp.received.clone(),
        );
        registry.register(
            "dhcp_undecodable",
            "DHCP datagrams dropped because they did not decode as a request",
            dhcp.undecodable.clone(),
        );
        registry.register("dhcp_replies", "DHCP replies sent", dhcp.replies.clone());
        registry.register(
            "dhcp_reply_failures",
            "DHCP replies that could not be encoded or sent, or were dropped because the lease journal failed",
            dhcp.reply_failures.clone(),
        );
        registry.register(
            "dhcp_exchanges",
            "DHCP requests decided, by reply sent (none: not answered) and the reason of the decision",
            dhcp.exchanges.clone(),
        );
        let tftp = TftpMetrics::default();
        registry.register(
            "tftp_requests",
            "TFTP read and write requests received",
            tftp.requests.clone(),
        );
        registry.register(
            "tftp_transfers",
            "TFTP requests by outcome",
            tftp.transfers.clone(),
        );
        registry.register(
            "tftp_malformed",
            "Datagrams on the TFTP listening socket that are not a valid request",
            tftp.malformed.clone(),
        );
        registry.register(
            "tftp_bytes",
            "File bytes of completed TFTP transfers",
            tftp.bytes.clone(),
        );
        let http_boot = HttpBootMetrics::default();
        registry.register(
            "http_boot_transfers",
            "Boot files and scripts answered over HTTP(S), by kind",
            http_boot.transfers.clone(),
        );
        registry.register(
            "http_boot_bytes",
            "Body bytes of boot files and scripts handed to HTTP(S) connections, by how they were sent",
            http_boot.bytes.clone(),
        );
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by route pattern, operation and status",
            api_requests.clone(),
        );
        let event_log_appends = Family::<EventLogLabels, Counter>::default();
        registry.register(
            "event_log_appends",
            "Events accepted by each event log (queued for its writer)",
            event_log_appends.clone(),
        );
        let config_commits = Counter::default();
        registry.register(
            "config_commits",
            "Configuration transactions committed (durable in the journal)",
            config_commits.clone(),
        );
        let sessions = Gauge::default();
        registry.register("sessions", "HTTP sessions held", sessions.clone());
        let boot_phases = BootPhases::default();
        registry.register(
            "boot_phase_duration_seconds",
            "Time between consecutive phases of one boot attempt (dhcp, loader, script, kernel, initramfs), by the phase reached, the one before it and the firmware",
            boot_phases.durations.clone(),
        );
        Metrics {
            registry,
            dhcp,
            tftp,
            http_boot,
            api_requests,
            event_log_appends,
            config_commits,
            sessions,
            boot_phases: std::sync::Arc::new(boot_phases),
        }
    }

    /// The counter of the event log called `log`.
    pub fn event_log_appends(&self, log: &'static str) -> Counter {
        self.event_log_appends
            .get_or_create(&EventLogLabels { log })
            .clone()
    }

    /// Everything, in the OpenMetrics text format (media type [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; a metric that failed to encode would be a bug in
        // its label set, and the rest is still worth serving.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %error, "failed to encode the metrics");
        }
        text
    }
}

/// Labels of `confluent_dhcp_exchanges_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DhcpExchangeLabels {
    /// The reply's message type in lower case, or `none`.
    pub reply: &'static str,
    /// The decision's stable reason code.
    pub reason: &'static str,
}

/// The DHCP service's counters. The first four are its `/networking/dhcp/counters`, the same
/// atomics, so nothing is counted twice.
#[derive(Clone, Debug, Default)]
pub struct DhcpMetrics {
    pub received: Counter,
    pub undecodable: Counter,
    pub replies: Counter,
    pub reply_failures: Counter,
    pub exchanges: Family<DhcpExchangeLabels, Counter>,
}

impl DhcpMetrics {
    /// The exchange counters of every (reply, reason) pair, resolved once: the DHCP hot path
    /// then increments an atomic found by index, with no lock and no allocation.
    pub fn exchange_table(
        &self,
        replies: &[&'static str],
        reasons: &[&'static str],
    ) -> CounterTable {
        let mut cells = Vec::with_capacity(replies.len() * reasons.len());
        for reply in replies {
            for reason in reasons {
                let labels = DhcpExchangeLabels { reply, reason };
                cells.push(self.exchanges.get_or_create(&labels).clone());
            }
        }
        CounterTable {
            columns: reasons.len(),
            cells,
        }
    }
}

/// Counters of a two-label family resolved in advance, addressed by the labels' indexes.
#[derive(Clone, Debug, Default)]
pub struct CounterTable {
    columns: usize,
    cells: Vec<Counter>,
}

impl CounterTable {
    pub fn get(&self, row: usize, column: usize) -> Option<&Counter> {
        if column >= self.columns {
            return None;
        }
        self.cells.get(row * self.columns + column)
    }
}

/// Labels of `confluent_tftp_transfers_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The TFTP service's counters (its `TftpStats` are these handles).
#[derive(Clone, Debug, Default)]
pub struct TftpMetrics {
    pub requests: Counter,
    pub transfers: Family<OutcomeLabels, Counter>,
    pub malformed: Counter,
    pub bytes: Counter,
}

impl TftpMetrics {
    /// The counter of transfers that ended with `outcome`.
    pub fn outcome(&self, outcome: &'static str) -> Counter {
        self.transfers
            .get_or_create(&OutcomeLabels { outcome })
            .clone()
    }
}

/// Labels of `confluent_http_boot_transfers_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Labels of `confluent_http_boot_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SenderLabels {
    pub sender: &'static str,
}

/// Boot files and scripts over HTTP(S), resolved once so that a download only adds to atomics.
#[derive(Clone, Debug)]
pub struct HttpBootMetrics {
    pub transfers: Family<KindLabels, Counter>,
    pub bytes: Family<SenderLabels, Counter>,
    /// Files answered (200 or 206 with a body).
    pub files: Counter,
    /// Boot scripts rendered (`boot.ipxe`, `grub.cfg`).
    pub scripts: Counter,
    /// Bytes handed to hyper (files and scripts).
    pub bytes_http: Counter,
    /// Bytes sent with `sendfile(2)` on plain HTTP.
    pub bytes_sendfile: Counter,
}

impl Default for HttpBootMetrics {
    fn default() -> HttpBootMetrics {
        let transfers = Family::<KindLabels, Counter>::default();
        let bytes = Family::<SenderLabels, Counter>::default();
        let transfer = |kind| transfers.get_or_create(&KindLabels { kind }).clone();
        let sent = |sender| bytes.get_or_create(&SenderLabels { sender }).clone();
        HttpBootMetrics {
            files: transfer("file"),
            scripts: transfer("script"),
            bytes_http: sent("http"),
            bytes_sendfile: sent("sendfile"),
            transfers,
            bytes,
        }
    }
}

/// Labels of `confluent_api_requests_total`: a route pattern of the tree (never the path
/// asked for), the operation and the status answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    pub route: &'static str,
    pub operation: &'static str,
    pub status: u16,
}

/// Labels of `confluent_event_log_appends_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLogLabels {
    pub log: &'static str,
}

/// The phases of a network boot, in the order a machine goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootPhase {
    /// The firmware's DHCP exchange ended (ACK, or the proxyDHCP answer).
    Dhcp,
    /// A boot loader was requested (iPXE, shim, GRUB, or a `boot.img`).
    Loader,
    /// A boot script or configuration was requested (`boot.ipxe`, `grub.cfg`).
    Script,
    /// The kernel was requested.
    Kernel,
    /// An initramfs was requested.
    Initramfs,
}

impl BootPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BootPhase::Dhcp => "dhcp",
            BootPhase::Loader => "loader",
            BootPhase::Script => "script",
            BootPhase::Kernel => "kernel",
            BootPhase::Initramfs => "initramfs",
        }
    }
}

/// The kind of machine booting, as its DHCP request says (the node kind of the boot phase
/// histograms; never the node's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Firmware {
    Bios,
    Uefi,
    UefiHttp,
    Unknown,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiHttp => "uefi_http",
            Firmware::Unknown => "unknown",
        }
    }
}

/// Labels of `confluent_boot_phase_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BootPhaseLabels {
    /// The phase reached.
    pub phase: &'static str,
    /// The phase before it in the same attempt.
    pub from: &'static str,
    pub firmware: &'static str,
}

/// Boot attempts are forgotten this long after their last phase.
const ATTEMPT_TTL: Duration = Duration::from_secs(30 * 60);
/// Most boot attempts followed at once (a boot storm of a large site); beyond it new attempts
/// go unmeasured rather than growing the map.
const MAX_ATTEMPTS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Attempt {
    phase: BootPhase,
    firmware: Firmware,
    at: Instant,
}

/// Follows boot attempts by client address (the address DHCP gave is what the machine then
/// fetches its loader, script, kernel and initramfs from) and observes the time from each
/// phase to the next one reached. Phases only move forward: a repeated or earlier phase (a
/// second initramfs, GRUB after shim) is not a new step.
///
/// Only booting machines reach it (once per phase, not per packet), so the short lock of the
/// attempt map is off every hot path.
#[derive(Debug)]
pub struct BootPhases {
    durations: Family<BootPhaseLabels, Histogram>,
    attempts: parking_lot::Mutex<HashMap<IpAddr, Attempt>>,
}

impl Default for BootPhases {
    fn default() -> BootPhases {
        BootPhases {
            // 0.1 s to about 14 min: a loader follows DHCP within a second, an initramfs may
            // follow a kernel minutes later on a slow link.
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.1, 2.0, 14))
            }),
            attempts: parking_lot::Mutex::default(),
        }
    }
}

impl BootPhases {
    /// A boot attempt of `client` starts: its firmware's DHCP exchange ended.
    pub fn start(&self, client: IpAddr, firmware: Firmware, now: Instant) {
        let mut attempts = self.attempts.lock();
        if attempts.len() >= MAX_ATTEMPTS && !attempts.contains_key(&client) {
            attempts.retain(|_, attempt| now.duration_since(attempt.at) < ATTEMPT_TTL);
            if attempts.len() >= MAX_ATTEMPTS {
                return;
            }
        }
        attempts.insert(
            client,
            Attempt {
                phase: BootPhase::Dhcp,
                firmware,
                at: now,
            },
        );
    }

    /// `client` reached `phase`; observed when it is later than the attempt's last phase.
    pub fn reached(&self, client: IpAddr, phase: BootPhase, now: Instant) {
        let mut attempts = self.attempts.lock();
        let Some(attempt) = attempts.get_mut(&client) else {
            return;
        };
        let elapsed = now.saturating_duration_since(attempt.at);
        if elapsed >= ATTEMPT_TTL {
            attempts.remove(&client);
            return;
        }
        if phase <= attempt.phase {
            return;
        }
        let labels = BootPhaseLabels {
            phase: phase.as_str(),
            from: attempt.phase.as_str(),
            firmware: attempt.firmware.as_str(),
        };
        attempt.phase = phase;
        attempt.at = now;
        drop(attempts);
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_phases_measure_forward_steps_only() {
        let metrics = Metrics::new();
        let phases = &metrics.boot_phases;
        let client: IpAddr = "10.0.0.5".parse().unwrap();
        let t0 = Instant::now();
        // Unknown clients are not followed.
        phases.reached(client, BootPhase::Loader, t0);
        phases.start(client, Firmware::Bios, t0);
        phases.reached(client, BootPhase::Loader, t0 + Duration::from_millis(500));
        phases.reached(client, BootPhase::Loader, t0 + Duration::from_secs(1));
        phases.reached(client, BootPhase::Kernel, t0 + Duration::from_secs(3));
        phases.reached(client, BootPhase::Script, t0 + Duration::from_secs(4));
        let text = metrics.encode();
        assert!(
            text.contains(r#"confluent_boot_phase_duration_seconds_count{phase="loader",from="dhcp",firmware="bios"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"confluent_boot_phase_duration_seconds_sum{phase="kernel",from="loader",firmware="bios"} 2.5"#),
            "{text}"
        );
        assert!(!text.contains(r#"phase="script""#), "{text}");
    }

    #[test]
    fn counter_table_addresses_every_pair() {
        let metrics = Metrics::new();
        let table = metrics
            .dhcp
            .exchange_table(&["offer", "none"], &["a", "b", "c"]);
        table.get(1, 2).unwrap().inc();
        assert!(table.get(2, 0).is_none());
        assert!(table.get(0, 3).is_none());
        assert!(
            metrics
                .encode()
                .contains(r#"confluent_dhcp_exchanges_total{reply="none",reason="c"} 1"#)
        );
    }
}
