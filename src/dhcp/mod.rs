//! The DHCPv4 boot service: who gets which address and boot file ([`policy`], a pure function
//! over a [`directory`](crate::deploy::directory) of nodes and the [`leases`]), and the
//! [`worker`] thread that feeds it packets from the served interfaces ([`socket`]) and sends its
//! replies; [`DhcpService`] starts it and runs the rest (auto-mode probes, subnet object
//! changes, lease expiry and compaction) on the runtime.
//!
//! Per packet (`handle_datagram`): decode ([`crate::proto::dhcp`]), decide under the
//! directory read lock and the lease lock, apply the lease change and append its journal
//! record. A reply that depends on a record (an ACK) waits for the worker's next group commit;
//! the others (OFFERs, proxy replies, NAKs) go out at once. Every exchange is logged and kept
//! in a small in-memory ring ([`ExchangeLog`]). A bad packet is counted and logged at debug;
//! only socket failures end the service.

pub mod interfaces;
pub mod leases;
pub mod policy;
pub mod probe;
pub mod socket;
pub mod subnets;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::deploy::live::LiveDirectory;
use crate::eventlog::domain::{DhcpModeChanged, DomainEvent, ServingMode};
use crate::proto::dhcp::{self as wire, MessageType};
use leases::{LeaseJournal, Leases};
use policy::{Action, BootSettings, Ingress, LeaseChange, Mode, Pool, Scope};
use probe::Prober;
pub use socket::DhcpBindError;
use socket::{InterfaceSocket, Outgoing};
use subnets::Subnets;
/// Exchanges kept for the API.
const EXCHANGE_LOG_CAPACITY: usize = 1024;

/// One interface to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceMode {
    pub interface: String,
    pub mode: Mode,
}

impl std::str::FromStr for InterfaceMode {
    type Err = String;
    /// `IFACE=MODE`, or `IFACE` alone for full.
    fn from_str(text: &str) -> Result<InterfaceMode, String> {
        let (interface, mode) = match text.split_once('=') {
            Some((interface, mode)) => (interface, mode.parse()?),
            None => (text, Mode::Full),
        };
        if interface.is_empty() {
            return Err(format!("missing interface name in '{text}'"));
        }
        Ok(InterfaceMode {
            interface: interface.to_string(),
            mode,
        })
    }
}

/// Service settings from the daemon.
#[derive(Clone)]
pub struct DhcpSettings {
    /// `--dhcp` flags; `dhcp.interface.<name>` globals override them ([`interfaces`]).
    pub interfaces: Vec<InterfaceMode>,
    /// What is served now, for the API.
    pub interface_table: Arc<interfaces::InterfaceTable>,
    pub boot: BootSettings,
    pub lease_seconds: u32,
    /// Where `leases.json` and the lease journal live.
    pub lease_dir: PathBuf,
    /// Server port (67; tests may use another).
    pub port: u16,
    /// PXE boot server port for proxy mode (4011).
    pub pxe_port: u16,
    /// How often auto-mode interfaces probe for another DHCP server (also once at start-up).
    pub probe_interval: Duration,
    /// Subnets behind DHCP relays (not attached to a served interface), served in the mode of
    /// the interface their relayed requests arrive on, with the relay as router.
    pub relayed_subnets: Vec<ipnet::Ipv4Net>,
    /// Where exchanges are recorded (shared with the API).
    pub exchanges: Arc<ExchangeLog>,
    /// Where short boot URLs are registered for the HTTP boot routes to resolve.
    pub short_links: Arc<crate::deploy::ShortLinks>,
    /// The configuration holding the subnet objects ([`subnets`]), watched for changes.
    pub config: Arc<crate::config::ConfigEngine>,
}

/// One recorded exchange: what came in, what was decided and why. The ring and the event log
/// keep the same typed record (the `detail` of a `dhcp.<message>` event).
pub use crate::eventlog::domain::DhcpExchange as Exchange;

/// The most recent exchanges, oldest first. Boot attempts (PXE/HTTP/iPXE clients) and exchanges
/// of known nodes are also recorded in the event log (when one is attached) as typed
/// `dhcp.<message>` events, which is what the boot timeline ("why didn't node X boot?") is
/// built from.
#[derive(Default)]
pub struct ExchangeLog {
    entries: parking_lot::Mutex<VecDeque<Exchange>>,
    events: Option<Arc<crate::eventlog::EventLogs>>,
    /// The service's packet counters (`/networking/dhcp/counters`).
    pub counters: DhcpCounters,
    /// Exchanges by reply and reason (`confluent_dhcp_exchanges_total`), indexed by
    /// [`reply_index`] and [`REASON_CODES`].
    exchange_counters: crate::metrics::CounterTable,
    /// Boot attempts start with the firmware's DHCP exchange.
    boot_phases: Option<Arc<crate::metrics::BootPhases>>,
}

impl std::fmt::Debug for ExchangeLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ExchangeLog")
            .field("entries", &self.entries.lock().len())
            .finish()
    }
}

impl ExchangeLog {
    /// An exchange log that also writes every exchange to `events`.
    pub fn with_events(events: Arc<crate::eventlog::EventLogs>) -> ExchangeLog {
        ExchangeLog {
            entries: parking_lot::Mutex::default(),
            events: Some(events),
            counters: DhcpCounters::default(),
            exchange_counters: crate::metrics::CounterTable::default(),
            boot_phases: None,
        }
    }

    /// Count into `metrics` (the counters of `/networking/dhcp/counters` become its counters)
    /// and start boot attempts in `boot_phases`.
    pub fn with_metrics(
        mut self,
        metrics: &crate::metrics::DhcpMetrics,
        boot_phases: Arc<crate::metrics::BootPhases>,
    ) -> ExchangeLog {
        self.counters = DhcpCounters {
            received: metrics.received.clone(),
            undecodable: metrics.undecodable.clone(),
            replies: metrics.replies.clone(),
            reply_failures: metrics.reply_failures.clone(),
        };
        self.exchange_counters = metrics.exchange_table(&REPLY_LABELS, &REASON_CODES);
        self.boot_phases = Some(boot_phases);
        self
    }

    /// Count one decided exchange: one atomic increment, found by index.
    fn count(&self, reply: Option<MessageType>, reason: &'static str) {
        let column = REASON_CODES
            .iter()
            .position(|code| *code == reason)
            .unwrap_or(REASON_CODES.len() - 1);
        if let Some(counter) = self.exchange_counters.get(reply_index(reply), column) {
            counter.inc();
        }
    }

    fn push(&self, exchange: Exchange) {
        // The event log keeps boot attempts and known nodes (what boot timelines and "why
        // didn't it boot?" need); ordinary DHCP clients stay in this ring and the trace log.
        let boot_attempt = exchange.node.is_some()
            || exchange.architecture.is_some()
            || exchange.vendor_class.as_deref().is_some_and(|class| {
                class.starts_with("PXEClient") || class.starts_with("HTTPClient")
            })
            || exchange.user_class.as_deref() == Some("iPXE");
        if boot_attempt && let Some(events) = &self.events {
            // A `dhcp.<message>` event of the exchange's node.
            let event = crate::eventlog::Event::from(DomainEvent::DhcpExchange(exchange.clone()));
            // Never blocks: a full event queue is counted and reported by the log itself.
            if let Err(error) = events.events.append(event) {
                tracing::debug!(error = %crate::error::Chain(&error), "dhcp exchange not recorded in the event log");
            }
        }
        let mut entries = self.entries.lock();
        if entries.len() >= EXCHANGE_LOG_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(exchange);
    }

    /// Record a service event (not an exchange) in the event log, when one is attached.
    fn record_event(&self, event: DomainEvent) {
        if let Some(events) = &self.events {
            let kind = event.kind().to_string();
            if let Err(error) = events.events.append(crate::eventlog::Event::from(event)) {
                tracing::debug!(error = %crate::error::Chain(&error), kind, "dhcp event not recorded in the event log");
            }
        }
    }

    /// A copy of the recorded exchanges.
    pub fn snapshot(&self) -> Vec<Exchange> {
        self.entries.lock().iter().cloned().collect()
    }
}

/// Label values of the reply in `confluent_dhcp_exchanges_total`, by [`reply_index`].
const REPLY_LABELS: [&str; 5] = ["offer", "ack", "nak", "other", "none"];

fn reply_index(reply: Option<MessageType>) -> usize {
    match reply {
        Some(MessageType::Offer) => 0,
        Some(MessageType::Ack) => 1,
        Some(MessageType::Nak) => 2,
        Some(_) => 3,
        None => 4,
    }
}

/// Every [`policy::Reason::code`], and `other` last for a code missing here (a unit test
/// keeps the list complete).
const REASON_CODES: [&str; 24] = [
    "mode_off",
    "auto_probing",
    "pxe_port_not_proxy",
    "not_ethernet",
    "not_a_client_message",
    "boot_chain",
    "secure_boot_chain",
    "discovery_boot",
    "nothing_pending",
    "discovery_not_allowed",
    "not_a_boot_client",
    "insecure_refused",
    "unsupported_architecture",
    "pool_exhausted",
    "no_pool",
    "other_server_selected",
    "wrong_address",
    "request_without_address",
    "proxy_not_addressed",
    "unknown_relay_subnet",
    "released",
    "declined",
    "inform",
    "other",
];

/// The firmware kind of the boot phase metrics, from the client's architecture (option 93).
fn firmware_kind(request: &wire::DhcpRequest) -> crate::metrics::Firmware {
    use crate::metrics::Firmware;
    use wire::{BootTransport, Firmware as Family};
    match request
        .architecture()
        .map(|architecture| architecture.describe())
    {
        Some((Family::PcBios, BootTransport::Tftp, _)) => Firmware::Bios,
        Some((Family::Other | Family::PcBios, _, _)) | None => Firmware::Unknown,
        Some((_, BootTransport::Http, _)) => Firmware::UefiHttp,
        Some((_, BootTransport::Tftp, _)) => Firmware::Uefi,
    }
}

/// What the service has received and sent since it started. These are the handles of the
/// daemon's metrics (`confluent_dhcp_*_total`) when it has any: one atomic each, counted once.
#[derive(Default)]
pub struct DhcpCounters {
    /// Datagrams received on the served sockets.
    pub received: crate::metrics::Counter,
    /// Datagrams dropped because they did not decode as a DHCP request.
    pub undecodable: crate::metrics::Counter,
    /// Replies sent.
    pub replies: crate::metrics::Counter,
    /// Replies that could not be encoded or sent, or were dropped because the lease journal
    /// failed.
    pub reply_failures: crate::metrics::Counter,
}

impl DhcpCounters {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let read = |counter: &crate::metrics::Counter| counter.get();
        serde_json::json!({
            "received": read(&self.received),
            "undecodable": read(&self.undecodable),
            "replies": read(&self.replies),
            "reply_failures": read(&self.reply_failures),
        })
    }
}

struct LeaseTable {
    leases: Leases,
    journal: LeaseJournal,
}

/// State shared by every interface loop.
struct Shared {
    /// Every directly served subnet and every `--dhcp-relayed-subnet`.
    relay_subnets: parking_lot::RwLock<Arc<Vec<ipnet::Ipv4Net>>>,
    interface_table: Arc<interfaces::InterfaceTable>,
    /// The subnet objects, replaced when the configuration changes.
    subnets: parking_lot::RwLock<Arc<Subnets>>,
    directory: Arc<LiveDirectory>,
    leases: parking_lot::Mutex<LeaseTable>,
    boot: BootSettings,
    lease_seconds: u32,
    exchanges: Arc<ExchangeLog>,
    short_links: Arc<crate::deploy::ShortLinks>,
}

/// One served interface: its network, its configured mode, and the scope served there now
/// (replaced when a probe changes an auto interface's mode).
struct Interface {
    name: String,
    server_address: Ipv4Addr,
    subnet: ipnet::Ipv4Net,
    /// `full`, `proxy` or `auto` (from `--dhcp`).
    configured: Mode,
    /// Auto mode: the prober, and what the last conclusive probe found (the mode chosen and
    /// the foreign server that answered, if any); `None` until the first probe ends.
    prober: Option<Prober>,
    probed: parking_lot::Mutex<Option<(Mode, Option<Ipv4Addr>)>>,
    /// The port-67 socket (probes are sent from it).
    socket: Arc<InterfaceSocket>,
    scope: parking_lot::RwLock<Arc<Scope>>,
}

impl Interface {
    /// The mode served now: the configured one, or for auto what the last probe chose.
    fn effective_mode(&self) -> Mode {
        match self.configured {
            Mode::Auto => self
                .probed
                .lock()
                .map_or(Mode::Auto, |(mode, _foreign)| mode),
            configured => configured,
        }
    }

    /// The scope served here: the attached subnet's defaults, then its subnet object.
    fn build_scope(&self, subnets: &Subnets, lease_seconds: u32) -> Scope {
        let mut scope = attached_scope(
            self.effective_mode(),
            self.server_address,
            self.subnet,
            lease_seconds,
        );
        if let Some(subnet) = subnets.get(self.subnet) {
            subnet.apply_to(&mut scope);
        }
        scope
    }

    fn scope(&self) -> Arc<Scope> {
        self.scope.read().clone()
    }
}

/// The scope of a directly attached subnet: its default pool, no routers of its own.
fn attached_scope(
    mode: Mode,
    server_address: Ipv4Addr,
    subnet: ipnet::Ipv4Net,
    lease_seconds: u32,
) -> Scope {
    {
        Scope {
            mode,
            server_address,
            subnet,
            pools: Pool::default_for(subnet).into_iter().collect(),
            routers: Vec::new(),
            dns_servers: Vec::new(),
            domain_name: None,
            ntp_servers: Vec::new(),
            mtu: None,
            lease_seconds,
        }
    }
}

struct Served {
    socket: Arc<InterfaceSocket>,
    interface: Arc<Interface>,
    /// This is the PXE boot server socket (port 4011).
    pxe_port: bool,
}

/// A served interface, and what stops its probe loop (auto mode, once started).
struct Running {
    interface: Arc<Interface>,
    probe: Option<CancellationToken>,
}

/// The DHCP service: two sockets (ports 67 and 4011) per served interface, served by the
/// [`worker`] thread; the set of interfaces follows the configuration at run time.
pub struct DhcpService {
    /// Sockets opened at start-up, handed to the worker when it starts.
    bound: Vec<Served>,
    running: BTreeMap<String, Running>,
    shared: Arc<Shared>,
    flags: Vec<InterfaceMode>,
    port: u16,
    pxe_port: u16,
    relayed_subnets: Vec<ipnet::Ipv4Net>,
    probe_interval: Duration,
    config: Arc<crate::config::ConfigEngine>,
    /// Changes of the subnet objects and of the interface settings.
    changes: tokio::sync::mpsc::UnboundedReceiver<Arc<crate::config::watch::ChangeSet>>,
}

/// Why the DHCP service could not start.
#[derive(Debug, thiserror::Error)]
pub enum DhcpStartError {
    #[error("cannot serve DHCP on {interface}")]
    Bind {
        interface: String,
        #[source]
        source: DhcpBindError,
    },
    #[error("failed to open the DHCP leases")]
    Leases(#[source] leases::LeaseOpenError),
}

/// What [`DhcpService::reconcile`] changed.
#[derive(Default)]
struct Reconciled {
    opened: Vec<Served>,
    closed: Vec<String>,
}

impl DhcpService {
    /// Open the sockets of the interfaces to serve and load the leases; nodes come from the
    /// shared `directory`. An interface given by a `--dhcp` flag that cannot be served is an
    /// error; one from the configuration is logged and shown by the API.
    pub fn bind(
        settings: DhcpSettings,
        directory: Arc<LiveDirectory>,
    ) -> Result<DhcpService, DhcpStartError> {
        // Watch first, then read: no change between the two is missed.
        let changes = settings.config.watch(crate::config::watch::WatchFilter {
            globals: vec![
                format!("{}*", subnets::GLOBAL_PREFIX),
                format!("{}*", interfaces::GLOBAL_PREFIX),
            ],
            ..crate::config::watch::WatchFilter::default()
        });
        let subnets = Arc::new(read_subnets(&settings.config));
        let (leases, journal) =
            LeaseJournal::open(&settings.lease_dir, tokio::time::Instant::now())
                .map_err(DhcpStartError::Leases)?;
        let shared = Arc::new(Shared {
            relay_subnets: parking_lot::RwLock::default(),
            interface_table: settings.interface_table.clone(),
            subnets: parking_lot::RwLock::new(subnets),
            directory,
            leases: parking_lot::Mutex::new(LeaseTable { leases, journal }),
            boot: settings.boot,
            lease_seconds: settings.lease_seconds,
            exchanges: settings.exchanges.clone(),
            short_links: settings.short_links.clone(),
        });
        let mut service = DhcpService {
            bound: Vec::new(),
            running: BTreeMap::new(),
            shared,
            flags: settings.interfaces,
            port: settings.port,
            pxe_port: settings.pxe_port,
            relayed_subnets: settings.relayed_subnets,
            probe_interval: settings.probe_interval,
            config: settings.config,
            changes,
        };
        let reconciled = service.reconcile(true)?;
        service.bound = reconciled.opened;
        Ok(service)
    }

    /// Open one interface's sockets (ports 67 and 4011) and its scope.
    fn open_interface(
        &self,
        name: &str,
        mode: Mode,
    ) -> Result<(Arc<Interface>, Vec<Served>), DhcpBindError> {
        let (server_address, subnet) = socket::interface_address(name)?;
        let socket = Arc::new(InterfaceSocket::bind(name, self.port)?);
        // proxyDHCP clients send their boot server REQUEST to port 4011 (PXE 2.1). Bound up
        // front on every served interface: an auto interface may turn proxy at run time.
        let pxe_socket = Arc::new(InterfaceSocket::bind(name, self.pxe_port)?);
        let lease_seconds = self.shared.lease_seconds;
        let interface = Interface {
            name: name.to_string(),
            server_address,
            subnet,
            configured: mode,
            prober: (mode == Mode::Auto).then(Prober::new),
            probed: parking_lot::Mutex::new(None),
            socket: socket.clone(),
            scope: parking_lot::RwLock::new(Arc::new(attached_scope(
                mode,
                server_address,
                subnet,
                lease_seconds,
            ))),
        };
        let subnets = self.shared.subnets.read().clone();
        let scope = interface.build_scope(&subnets, lease_seconds);
        tracing::info!(
            interface = %name,
            mode = mode.name(),
            server = %server_address,
            subnet = %subnet,
            mode_served = scope.mode.name(),
            pools = ?scope.pools,
            "serving DHCP"
        );
        *interface.scope.write() = Arc::new(scope);
        let interface = Arc::new(interface);
        let served = vec![
            Served {
                socket: pxe_socket,
                interface: interface.clone(),
                pxe_port: true,
            },
            Served {
                socket,
                interface: interface.clone(),
                pxe_port: false,
            },
        ];
        Ok((interface, served))
    }

    /// Serve what the flags and the configuration ask for now: close interfaces no longer
    /// wanted (or whose mode changed), open new ones, publish the table. With `strict`, a
    /// flag's interface that cannot be opened is an error.
    fn reconcile(&mut self, strict: bool) -> Result<Reconciled, DhcpStartError> {
        let wanted = self
            .config
            .read(|store| interfaces::desired(&self.flags, store));
        let mut reconciled = Reconciled::default();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                wanted.get(*name).is_none_or(|(mode, _)| {
                    *mode == Mode::Off || *mode != running.interface.configured
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(running) = self.running.remove(&name) {
                if let Some(probe) = running.probe {
                    probe.cancel();
                }
                tracing::info!(interface = %name, "no longer serving DHCP");
                reconciled.closed.push(name);
            }
        }
        let mut table = Vec::new();
        for (name, (mode, source)) in &wanted {
            let mut error = None;
            if *mode != Mode::Off && !self.running.contains_key(name) {
                match self.open_interface(name, *mode) {
                    Ok((interface, served)) => {
                        reconciled.opened.extend(served);
                        self.running.insert(
                            name.clone(),
                            Running {
                                interface,
                                probe: None,
                            },
                        );
                    }
                    Err(source_error) if strict && *source == interfaces::Source::Flag => {
                        return Err(DhcpStartError::Bind {
                            interface: name.clone(),
                            source: source_error,
                        });
                    }
                    Err(bind_error) => {
                        let text = match std::error::Error::source(&bind_error) {
                            Some(cause) => format!("{bind_error}: {cause}"),
                            None => bind_error.to_string(),
                        };
                        tracing::warn!(interface = %name, error = %text, "cannot serve DHCP on a configured interface");
                        error = Some(text);
                    }
                }
            }
            let running = self.running.get(name).map(|running| &running.interface);
            table.push(interfaces::InterfaceStatus {
                name: name.clone(),
                mode: mode.name(),
                source: *source,
                serving: running.map(|interface| interface.effective_mode().name()),
                address: running.map(|interface| interface.server_address),
                subnet: running.map(|interface| interface.subnet.to_string()),
                error,
            });
        }
        self.shared.interface_table.replace(table);
        let mut relay_subnets: Vec<ipnet::Ipv4Net> = self
            .running
            .values()
            .map(|running| running.interface.subnet)
            .collect();
        relay_subnets.extend(self.relayed_subnets.iter().copied());
        *self.shared.relay_subnets.write() = Arc::new(relay_subnets);
        Ok(reconciled)
    }

    /// Start the probe loop of every auto interface that has none yet.
    fn start_probes(
        &mut self,
        probes: &mut tokio::task::JoinSet<anyhow::Result<()>>,
        shutdown: &CancellationToken,
    ) {
        for running in self.running.values_mut() {
            if running.interface.prober.is_none() || running.probe.is_some() {
                continue;
            }
            let stop = shutdown.child_token();
            running.probe = Some(stop.clone());
            let (interface, shared) = (running.interface.clone(), self.shared.clone());
            let interval = self.probe_interval;
            probes.spawn(async move { probe_loop(interface, shared, interval, stop).await });
        }
    }

    /// The exchange log, for the API.
    pub fn exchanges(&self) -> Arc<ExchangeLog> {
        self.shared.exchanges.clone()
    }

    async fn serve(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Until the node index is built every node would look unknown: packets queue instead.
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = self.shared.directory.wait_ready() => {}
        }
        let mut worker =
            worker::Worker::start(std::mem::take(&mut self.bound), self.shared.clone()).map_err(
                |error| anyhow::Error::new(error).context("failed to start the DHCP worker"),
            )?;
        let mut probes = tokio::task::JoinSet::new();
        self.start_probes(&mut probes, &shutdown);
        let mut expiry = tokio::time::interval(Duration::from_secs(60));
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                Some(_changes) = self.changes.recv() => {
                    // Subnet objects changed: rebuild every scope; the next packet uses them.
                    let subnets = Arc::new(read_subnets(&self.config));
                    *self.shared.subnets.write() = subnets.clone();
                    for running in self.running.values() {
                        let scope = running.interface.build_scope(&subnets, self.shared.lease_seconds);
                        *running.interface.scope.write() = Arc::new(scope);
                    }
                    // Interface settings changed: close and open sockets to match.
                    let reconciled = match self.reconcile(false) {
                        Ok(reconciled) => reconciled,
                        Err(error) => break Err(anyhow::Error::new(error)),
                    };
                    for name in reconciled.closed {
                        worker.remove(name);
                    }
                    if !reconciled.opened.is_empty() {
                        worker.add(reconciled.opened);
                    }
                    self.start_probes(&mut probes, &shutdown);
                    tracing::info!(subnets = subnets.iter().count(), interfaces = self.running.len(), "DHCP configuration applied");
                }
                _ = expiry.tick() => expire_and_compact(&self.shared).await,
                ended = worker.finished() => break ended,
                Some(_) = probes.join_next() => {}
            }
        };
        shutdown.cancel();
        while probes.join_next().await.is_some() {}
        let stopped = worker.stop().await;
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.leases.lock().journal.close()).await;
        result.and(stopped)
    }
}

/// Drop expired leases and offers; compact the lease journal when it has grown. Blocking work
/// (the lease lock may be held through a commit, compaction syncs files) runs off the runtime.
async fn expire_and_compact(shared: &Arc<Shared>) {
    let locked = shared.clone();
    let compaction = tokio::task::spawn_blocking(move || {
        let now = tokio::time::Instant::now();
        let mut table = locked.leases.lock();
        let dropped = table.leases.expire(now);
        if dropped > 0 {
            tracing::debug!(dropped, "expired DHCP leases and offers");
        }
        let LeaseTable { leases, journal } = &mut *table;
        journal
            .wants_compaction()
            .then(|| journal.begin_compaction(leases, now))
    })
    .await;
    // The snapshot is written outside the lock: packets keep flowing meanwhile.
    let result = match compaction {
        Ok(None) => return,
        Ok(Some(Ok(compaction))) => compaction.finish().await,
        Ok(Some(Err(error))) => Err(error),
        Err(_) => Err(leases::LeaseWriteError::Stopped),
    };
    match result {
        Ok(()) => tracing::debug!("DHCP lease journal compacted"),
        Err(error) => {
            tracing::warn!(error = %crate::error::Chain(&error), "DHCP lease journal compaction failed")
        }
    }
}

impl crate::service::Service for DhcpService {
    fn name(&self) -> &'static str {
        "dhcp"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin((*self).serve(shutdown))
    }
}

/// Auto mode: probe the segment now and every `interval`; serve as proxy while another DHCP
/// server answers, in full mode otherwise. A probe that cannot be sent changes nothing.
async fn probe_loop(
    interface: Arc<Interface>,
    shared: Arc<Shared>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(prober) = &interface.prober else {
        return Ok(());
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let probed = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            probed = prober.probe(&interface.socket, interface.server_address, probe::PROBE_WAIT) => probed,
        };
        match probed {
            Ok(foreign) => switch_mode(&interface, &shared, foreign),
            Err(error) => tracing::warn!(
                interface = %interface.name,
                error = %crate::error::Chain(&error),
                "DHCP probe for another server failed; mode unchanged"
            ),
        }
    }
}

/// Apply a probe's result to an auto interface: proxy when `foreign` answered, full otherwise.
/// A change (and the first result) is logged and recorded as a `dhcp.mode` event.
fn switch_mode(interface: &Interface, shared: &Shared, foreign: Option<Ipv4Addr>) {
    let mode = if foreign.is_some() {
        Mode::Proxy
    } else {
        Mode::Full
    };
    let previous = interface.probed.lock().replace((mode, foreign));
    let previous_mode = previous.map_or(Mode::Auto, |(mode, _)| mode);
    if previous_mode == mode {
        return;
    }
    let subnets = shared.subnets.read().clone();
    *interface.scope.write() = Arc::new(interface.build_scope(&subnets, shared.lease_seconds));
    shared.interface_table.set_serving(&interface.name, mode);
    let foreign_text = foreign.map(|server| server.to_string());
    tracing::info!(
        interface = %interface.name,
        mode = mode.name(),
        previous = previous_mode.name(),
        foreign_server = foreign_text.as_deref().unwrap_or("-"),
        "DHCP auto mode: serving {} ({})",
        mode.name(),
        match foreign {
            Some(server) => format!("DHCP server {server} answers on the segment"),
            None => "no other DHCP server answers on the segment".to_string(),
        }
    );
    shared
        .exchanges
        .record_event(DomainEvent::DhcpMode(DhcpModeChanged {
            interface: interface.name.clone(),
            configured: Mode::Auto.into(),
            mode: mode.into(),
            previous: previous_mode.into(),
            foreign_server: foreign,
        }));
}

impl From<Mode> for ServingMode {
    fn from(mode: Mode) -> ServingMode {
        match mode {
            Mode::Full => ServingMode::Full,
            Mode::Proxy => ServingMode::Proxy,
            Mode::Off => ServingMode::Off,
            Mode::Auto => ServingMode::Auto,
        }
    }
}

/// The valid subnet objects of the configuration; invalid ones are logged and skipped.
fn read_subnets(config: &crate::config::ConfigEngine) -> Subnets {
    let (subnets, invalid) = config.read(Subnets::from_store);
    for (key, error) in invalid {
        tracing::warn!(key, error = %crate::error::Chain(&error), "ignoring an invalid DHCP subnet object");
    }
    subnets
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What [`handle_datagram`] did with one datagram.
#[derive(Default)]
struct Handled {
    /// The reply to send.
    reply: Option<Outgoing>,
    /// A lease record was appended: the reply may be sent only once the journal has been
    /// committed.
    journaled: bool,
}

/// Decode, decide, apply, append the lease record; return the reply to send.
fn handle_datagram(
    served: &Served,
    shared: &Shared,
    datagram: &[u8],
    source: SocketAddrV4,
    now: tokio::time::Instant,
) -> Handled {
    let interface = &served.socket.interface;
    let ingress_interface = &served.interface;
    // BOOTREPLY on the server port: another server answering an auto-mode probe.
    if datagram.first() == Some(&2) {
        if let Some(prober) = &ingress_interface.prober
            && let Ok(reply) = wire::decode_reply(datagram)
        {
            prober.answer(&reply, *source.ip(), ingress_interface.server_address);
        }
        return Handled::default();
    }
    let request = match wire::decode_request(datagram) {
        Ok(request) => request,
        Err(error) => {
            shared.exchanges.counters.undecodable.inc();
            tracing::debug!(interface = %interface, error = %crate::error::Chain(&error), "ignoring an undecodable DHCP datagram");
            return Handled::default();
        }
    };
    // One span per exchange, at DEBUG: under the default `info` filter it is disabled, which
    // costs a level check, and its field expressions are not even evaluated. When enabled, the
    // fields are lazy `Display`s, formatted only if a subscriber records them. `node` is
    // recorded once the directory has been consulted.
    let span = tracing::debug_span!(
        "dhcp_exchange",
        xid = %format_args!("{:08x}", request.xid),
        mac = request.mac.map(tracing::field::display),
        iface = %interface,
        node = tracing::field::Empty,
    );
    let _in_span = span.enter();
    if ingress_interface
        .prober
        .as_ref()
        .is_some_and(|prober| prober.is_own(&request))
    {
        return Handled::default();
    }
    let served_scope = ingress_interface.scope();
    // RFC 2131 section 4.3.1: a relayed client is on the relay's (giaddr's) subnet.
    let relayed_scope;
    let scope: &Scope = if request.giaddr.is_unspecified()
        || served_scope.subnet.contains(&request.giaddr)
    {
        &served_scope
    } else {
        let subnets = shared.subnets.read().clone();
        let object = subnets.containing(request.giaddr);
        let subnet = object.map(|object| object.object.subnet).or_else(|| {
            shared
                .relay_subnets
                .read()
                .iter()
                .copied()
                .find(|subnet| subnet.contains(&request.giaddr))
        });
        match subnet {
            Some(subnet) => {
                // Served in the ingress interface's mode, with the relay as router, unless
                // the subnet's object says otherwise.
                let mut scope = Scope {
                    subnet,
                    pools: Pool::default_for(subnet).into_iter().collect(),
                    routers: vec![request.giaddr],
                    dns_servers: Vec::new(),
                    domain_name: None,
                    ntp_servers: Vec::new(),
                    mtu: None,
                    lease_seconds: shared.lease_seconds,
                    ..(*served_scope).clone()
                };
                if let Some(object) = object {
                    object.apply_to(&mut scope);
                }
                relayed_scope = scope;
                &relayed_scope
            }
            None => {
                let decision = policy::Decision::silent(
                    policy::Reason::UnknownRelaySubnet(request.giaddr),
                    None,
                );
                tracing::info!(interface = %interface, xid = %format!("{:08x}", request.xid), reason = decision.reason.code(), "DHCP exchange: {}", decision.reason);
                return Handled::default();
            }
        }
    };
    let ingress = Ingress {
        scope,
        boot: &shared.boot,
        pxe_port: served.pxe_port,
    };
    let (decision, journaled) = {
        let directory = shared.directory.read();
        let mut table = shared.leases.lock();
        let decision = policy::reply(&directory, &table.leases.at(now), &ingress, &request);
        span.record("node", decision.node.as_deref());
        if let Some(link) = &decision.short_link {
            shared.short_links.insert(&link.id, &link.target);
        }
        let mut journaled = false;
        if let (Some(mac), change) = (request.mac, decision.lease)
            && change != LeaseChange::None
        {
            let reserved_for_mac = match change {
                LeaseChange::Offer { address } | LeaseChange::Bind { address, .. } => directory
                    .reserved_for(address)
                    .is_some_and(|node| Some(&node.name) == decision.node.as_ref()),
                _ => false,
            };
            match table.leases.apply(mac, change, reserved_for_mac, now) {
                Ok(Some(record)) => match table.journal.append(&record) {
                    Ok(()) => journaled = true,
                    Err(error) => {
                        tracing::error!(error = %crate::error::Chain(&error), "lease journal refused a record; not replying");
                        return Handled::default();
                    }
                },
                Ok(None) => {}
                Err(conflict) => {
                    tracing::warn!(interface = %interface, error = %conflict, mac = %mac, "lease conflict; not replying");
                    return Handled::default();
                }
            }
        }
        (decision, journaled)
    };
    let (reply_type, fields) = match &decision.action {
        Action::Respond {
            message_type,
            fields,
        } => (Some(*message_type), Some(fields)),
        Action::NoResponse => (None, None),
    };
    shared.exchanges.count(reply_type, decision.reason.code());
    // A boot attempt starts when the firmware is offered a boot file (the ACK that follows an
    // OFFER restarts it, so the DHCP phase ends at the last reply); iPXE's own DHCP is a step
    // inside the attempt, not a new one. It is followed by the address the machine then
    // fetches its files from: the one given, or for proxyDHCP the one it already has.
    if let Some(boot_phases) = &shared.exchanges.boot_phases
        && let Some(fields) = fields
        && fields.boot_file.is_some()
        && request.user_class.as_deref() != Some(b"iPXE".as_slice())
        && matches!(reply_type, Some(MessageType::Offer | MessageType::Ack))
    {
        let client = fields
            .yiaddr
            .filter(|address| !address.is_unspecified())
            .unwrap_or(request.ciaddr);
        if !client.is_unspecified() {
            boot_phases.start(
                std::net::IpAddr::V4(client),
                firmware_kind(&request),
                std::time::Instant::now(),
            );
        }
    }
    let exchange = Exchange {
        time: unix_now(),
        interface: interface.clone(),
        server_port: served.socket.port,
        xid: request.xid,
        mac: request.mac,
        message_type: request.message_type,
        node: decision.node.as_deref().map(str::to_string),
        architecture: request.architecture().map(|architecture| architecture.0),
        vendor_class: request.vendor_class_text(),
        user_class: request
            .user_class
            .as_deref()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
        relay: (!request.giaddr.is_unspecified()).then_some(request.giaddr),
        reply: reply_type,
        address: fields.and_then(|fields| fields.yiaddr),
        boot_file: fields.and_then(|fields| fields.boot_file.clone()),
        reason_code: decision.reason.code().to_string(),
        reason: decision.reason.to_string(),
    };
    tracing::info!(
        interface = %exchange.interface,
        xid = %format_args!("{:08x}", exchange.xid),
        mac = %exchange.mac.map_or_else(|| "-".to_string(), |mac| mac.to_string()),
        msg_type = exchange.message_type.name(),
        node = exchange.node.as_deref().unwrap_or("-"),
        arch = ?exchange.architecture,
        vendor_class = exchange.vendor_class.as_deref().unwrap_or("-"),
        relay = ?exchange.relay,
        reply = exchange.reply.map_or("none", MessageType::name),
        address = ?exchange.address,
        boot_file = exchange.boot_file.as_deref().unwrap_or("-"),
        reason = %exchange.reason_code,
        "DHCP exchange: {}",
        exchange.reason
    );
    shared.exchanges.push(exchange);
    let reply = encode_reply(shared, &request, &decision).map(|(message_type, payload)| Outgoing {
        payload,
        destination: reply_destination(served, &request, message_type, source),
        source_address: served_scope.server_address,
    });
    Handled { reply, journaled }
}

/// Where a reply goes (RFC 2131 section 4.1): a port-4011 request back to its sender; relayed
/// to the relay's server port; a client with an address (renewing, INFORM) by unicast;
/// otherwise broadcast on the ingress interface.
fn reply_destination(
    served: &Served,
    request: &wire::DhcpRequest,
    message_type: MessageType,
    source: SocketAddrV4,
) -> SocketAddrV4 {
    if served.pxe_port && !source.ip().is_unspecified() {
        source
    } else if !request.giaddr.is_unspecified() {
        SocketAddrV4::new(request.giaddr, wire::SERVER_PORT)
    } else if !request.ciaddr.is_unspecified() && message_type != MessageType::Nak {
        SocketAddrV4::new(request.ciaddr, wire::CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, wire::CLIENT_PORT)
    }
}

/// The encoded reply of a decision that answers (an encoding failure is counted and logged).
fn encode_reply(
    shared: &Shared,
    request: &wire::DhcpRequest,
    decision: &policy::Decision,
) -> Option<(MessageType, Vec<u8>)> {
    let Action::Respond {
        message_type,
        fields,
    } = &decision.action
    else {
        return None;
    };
    match wire::encode_reply(request, *message_type, fields) {
        Ok(payload) => Some((*message_type, payload)),
        Err(error) => {
            shared.exchanges.counters.reply_failures.inc();
            tracing::warn!(error = %crate::error::Chain(&error), "failed to encode a DHCP reply");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_mode_parses() {
        assert_eq!(
            "eth0=proxy".parse::<InterfaceMode>().unwrap(),
            InterfaceMode {
                interface: "eth0".into(),
                mode: Mode::Proxy
            }
        );
        assert_eq!("br0".parse::<InterfaceMode>().unwrap().mode, Mode::Full);
        assert!("eth0=sometimes".parse::<InterfaceMode>().is_err());
        assert!("=full".parse::<InterfaceMode>().is_err());
    }

    #[test]
    fn every_reason_code_has_a_metrics_label() {
        use policy::Reason;
        let address = Ipv4Addr::new(10, 0, 0, 1);
        let profile: Arc<str> = Arc::from("p");
        let reasons = [
            Reason::ModeOff,
            Reason::AutoProbing,
            Reason::PxePortNotProxy,
            Reason::NotEthernet,
            Reason::NotAClientMessage(MessageType::Offer),
            Reason::BootChain {
                profile: profile.clone(),
            },
            Reason::SecureBootChain {
                profile,
                disk_image: true,
            },
            Reason::DiscoveryBoot,
            Reason::NothingPending,
            Reason::DiscoveryNotAllowed,
            Reason::NotABootClient,
            Reason::InsecureRefused,
            Reason::UnsupportedArchitecture(99),
            Reason::PoolExhausted,
            Reason::NoPool,
            Reason::OtherServerSelected,
            Reason::WrongAddress { requested: address },
            Reason::RequestWithoutAddress,
            Reason::ProxyNotAddressed,
            Reason::UnknownRelaySubnet(address),
            Reason::Released,
            Reason::Declined,
            Reason::Inform,
        ];
        for reason in &reasons {
            assert!(REASON_CODES.contains(&reason.code()), "{}", reason.code());
        }
        assert_eq!(reasons.len() + 1, REASON_CODES.len());
    }

    #[test]
    fn exchange_log_is_bounded() {
        let log = ExchangeLog::default();
        for index in 0..(EXCHANGE_LOG_CAPACITY + 5) {
            log.push(Exchange {
                time: 0,
                interface: "x".into(),
                server_port: 67,
                xid: u32::try_from(index).unwrap(),
                mac: None,
                message_type: MessageType::Discover,
                node: None,
                architecture: None,
                vendor_class: None,
                user_class: None,
                relay: None,
                reply: None,
                address: None,
                boot_file: None,
                reason_code: "mode_off".into(),
                reason: String::new(),
            });
        }
        let entries = log.snapshot();
        assert_eq!(entries.len(), EXCHANGE_LOG_CAPACITY);
        assert_eq!(entries[0].xid, 5);
    }
}
