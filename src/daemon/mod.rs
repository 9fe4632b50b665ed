//! The composition root of `confluentd`: where state lives, start-up (pid lock, configuration,
//! services), systemd readiness and watchdog, and graceful shutdown on SIGTERM/SIGINT.
//!
//! Only this module spawns long-lived tasks. Every network service plugs in through the
//! [`Service`] seam: it binds in its constructor (failing start-up early), then runs under a
//! cancellation token until the daemon shuts down.

pub mod snapshotter;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::engine::{ConfigEngine, EngineOptions};
use crate::eventlog::domain::{DaemonStarted, DaemonStopped, DomainEvent};
use crate::eventlog::{Event, EventLogs};

use crate::service::Service;
pub use crate::state::StatePaths;
use crate::state::pidlock;

/// What the composition root keeps of what it built: the state layout, the site CA, the
/// API's context (shared with every transport) and the boot files.
#[derive(Clone)]
pub struct Context {
    pub paths: Arc<StatePaths>,
    pub site_ca: Arc<crate::pki::SiteCa>,
    pub api: crate::api::Context,
    /// Boot files, profiles and the live node directory.
    pub boot: Arc<crate::boot::Boot>,
}

/// Daemon settings decided by the command line.
pub struct DaemonOptions {
    pub paths: StatePaths,
    pub engine: EngineOptions,
    /// How often the snapshotter compacts the journal even when few changes arrive.
    pub snapshot_interval: Duration,
    /// Permission bits of `run/api.sock`.
    pub socket_mode: u32,
    /// Plain HTTP listener (`None`: off).
    pub http: Option<std::net::SocketAddr>,
    /// Serve the API (not only public boot files) over plain HTTP.
    pub http_allow_api: bool,
    /// Serve `/metrics` without authentication, on plain HTTP too.
    pub metrics_public: bool,
    /// Sessions, password policy, PAM service, login throttling.
    pub auth: crate::auth::AuthOptions,
    /// HTTPS listener.
    pub https: Option<std::net::SocketAddr>,
    /// TLS socket API listener (TLV protocol, default port 13001).
    pub tls_socket: Option<std::net::SocketAddr>,
    /// Forward the event and audit logs to this syslog collector.
    pub syslog: Option<crate::eventlog::syslog::SyslogTarget>,
    /// Rotation, retention and queue sizes of the logs.
    pub event_logs: crate::eventlog::LogOptions,
    /// Interfaces served by the DHCP service (none: the service does not run).
    pub dhcp: Vec<crate::dhcp::InterfaceMode>,
    /// Lease time handed out by the DHCP service.
    pub dhcp_lease_seconds: u32,
    /// Subnets reached through DHCP relays.
    pub dhcp_relayed_subnets: Vec<ipnet::Ipv4Net>,
    /// TFTP listener serving `lib/tftpboot/` (`None`: off).
    pub tftp: Option<std::net::SocketAddr>,
    /// Transfer cap and retransmission settings of the TFTP service.
    pub tftp_limits: crate::tftp::TftpLimits,
    /// How often auto-mode DHCP interfaces probe for another DHCP server.
    pub dhcp_probe_interval: Duration,
}

/// A started daemon: configuration loaded, pid lock held, services running.
pub struct Daemon {
    pub context: Context,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _pid_lock: pidlock::PidLock,
}

impl Daemon {
    /// Start-up: create the state directories, take the pid lock, load the configuration,
    /// bind and start the services.
    pub async fn start(options: DaemonOptions) -> anyhow::Result<Daemon> {
        let paths = options.paths;
        paths
            .create()
            .context("failed to prepare the state directories")?;
        let pid_lock = pidlock::PidLock::acquire(&paths.pid_file())
            .context("failed to take the daemon pid lock")?;
        raise_fd_limit();
        // Built first: the configuration engine and the event logs count from the start.
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let cfg_dir = paths.cfg_dir();
        let key_file = paths.master_key_file();
        let mut engine_options = options.engine;
        engine_options.commits = metrics.config_commits.clone();
        let config = tokio::task::spawn_blocking(move || {
            ConfigEngine::open(&cfg_dir, &key_file, engine_options)
        })
        .await
        .context("configuration loader panicked")?
        .context("failed to open the configuration")?;
        let admin_token =
            crate::auth::token::AdminToken::load_or_create(&paths.etc.join("keys/admin.token"))
                .context("failed to prepare the administrator token")?;
        let site_ca = crate::pki::SiteCa::load_or_create(
            &paths.etc.join("tls"),
            &paths.lib.join("public/site/tls/ca.pem"),
        )
        .context("failed to prepare the site certificate authority")?;
        let log_dir = paths.log.clone();
        let log_options = options.event_logs;
        let events = tokio::task::spawn_blocking(move || EventLogs::open(&log_dir, log_options))
            .await
            .context("event log loader panicked")?
            .context("failed to open the event logs")?;
        let events = Arc::new(events.counting_appends(
            metrics.event_log_appends("events"),
            metrics.event_log_appends("audit"),
        ));
        let (directory, refresher) =
            crate::deploy::live::LiveDirectory::start(&config, paths.lib.join("public/os"));
        let boot = crate::boot::Boot::new(directory, &paths.lib)
            .context("failed to prepare the boot file directories")?;
        let roles_file = paths.etc.join("authorization.yaml");
        let roles = crate::auth::roles::RoleTable::load(&roles_file)
            .context("failed to load the custom roles")?;
        let mut auth_options = options.auth;
        auth_options.sessions_gauge = metrics.sessions.clone();
        let auth = Arc::new(crate::auth::Authenticator::new(auth_options, roles));
        let api = crate::api::Context {
            auth,
            config,
            admin_token: Arc::new(admin_token),
            dhcp_exchanges: Arc::new(
                crate::dhcp::ExchangeLog::with_events(events.clone())
                    .with_metrics(&metrics.dhcp, metrics.boot_phases.clone()),
            ),
            dhcp_interfaces: Arc::default(),
            events,
            metrics: metrics.clone(),
        };
        let context = Context {
            paths: Arc::new(paths),
            site_ca: Arc::new(site_ca),
            api,
            boot: Arc::new(boot),
        };
        let http_context = crate::http::Context::new(context.api.clone(), context.boot.clone())
            .with_public_metrics(options.metrics_public);
        let api_socket = crate::api::socket::UnixSocketService::bind(
            &context.paths.api_socket(),
            options.socket_mode,
            context.api.clone(),
        )
        .context("failed to start the api socket")?;
        let mut services: Vec<Box<dyn Service>> = vec![
            Box::new(snapshotter::Snapshotter::new(
                context.api.config.clone(),
                options.snapshot_interval,
            )),
            Box::new(api_socket),
            Box::new(refresher),
        ];
        if let Some(target) = options.syslog {
            let forwarder = crate::eventlog::syslog::SyslogForwarder::bind(
                target.clone(),
                context.api.events.clone(),
            )
            .await
            .with_context(|| format!("failed to start syslog forwarding to {}", target.address))?;
            services.push(Box::new(forwarder));
        }
        let mut listeners: BTreeMap<String, String> = BTreeMap::new();
        // Boot URLs handed out by DHCP point at the listeners as bound.
        let mut boot_settings = crate::dhcp::policy::BootSettings::default();
        if let Some(address) = options.http {
            let service = crate::http::HttpService::bind(address, None, http_context.clone())
                .await
                .context("failed to start the HTTP listener")?
                .allow_plain_api(options.http_allow_api);
            let bound = service.local_addr()?;
            boot_settings.http_port = bound.port();
            listeners.insert("http".into(), bound.to_string());
            services.push(Box::new(service));
        }
        if let Some(address) = options.https {
            let tls = context.site_ca.server_config(true)?;
            let service = crate::http::HttpService::bind(address, Some(tls), http_context.clone())
                .await
                .context("failed to start the HTTPS listener")?;
            let bound = service.local_addr()?;
            boot_settings.https_port = bound.port();
            listeners.insert("https".into(), bound.to_string());
            services.push(Box::new(service));
        }
        if let Some(address) = options.tls_socket {
            let tls = context.site_ca.server_config(false)?;
            let service =
                crate::api::socket::TlsSocketService::bind(address, tls, context.api.clone())
                    .await
                    .with_context(|| {
                        format!("failed to listen on {address} for the TLS api socket")
                    })?;
            listeners.insert("tls_socket".into(), service.local_addr()?.to_string());
            services.push(Box::new(service));
        }
        // Always running, so that interfaces set in the configuration are served at run time;
        // with none it holds no socket.
        {
            let settings = crate::dhcp::DhcpSettings {
                interfaces: options.dhcp.clone(),
                interface_table: context.api.dhcp_interfaces.clone(),
                boot: boot_settings,
                lease_seconds: options.dhcp_lease_seconds,
                lease_dir: context.paths.lib.join("dhcp"),
                port: crate::proto::dhcp::SERVER_PORT,
                pxe_port: crate::proto::dhcp::PXE_SERVER_PORT,
                probe_interval: options.dhcp_probe_interval,
                relayed_subnets: options.dhcp_relayed_subnets.clone(),
                exchanges: context.api.dhcp_exchanges.clone(),
                short_links: context.boot.short_links.clone(),
                config: context.api.config.clone(),
            };
            let service = crate::dhcp::DhcpService::bind(settings, context.boot.directory.clone())
                .context("failed to start the DHCP service")?;
            services.push(Box::new(service));
        }
        if let Some(address) = options.tftp {
            // GRUB's configurations and the profiles' boot files, for the Secure Boot chain.
            let files: Arc<dyn crate::tftp::VirtualFiles> = Arc::new(crate::boot::TftpBootFiles {
                boot: context.boot.clone(),
                events: context.api.events.clone(),
            });
            let service = crate::tftp::TftpService::bind_counted(
                address,
                &context.paths.tftp_root(),
                files,
                options.tftp_limits.clone(),
                Arc::new(crate::tftp::TftpStats::counting_into(&metrics.tftp)),
                Some(metrics.boot_phases.clone()),
            )
            .context("failed to start the TFTP service")?;
            listeners.insert("tftp".into(), service.local_addr().to_string());
            services.push(Box::new(service));
        }
        // Where each listener ended up (port 0 picks a free port): for tests and tools.
        let listeners_file = context.paths.run.join("listeners.json");
        let listeners_json =
            serde_json::to_string(&listeners).context("failed to encode the listeners")?;
        std::fs::write(&listeners_file, listeners_json)
            .with_context(|| format!("failed to write {}", listeners_file.display()))?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        for service in services {
            let name = service.name();
            let token = shutdown.clone();
            let on_failure = shutdown.clone();
            tracker.spawn(async move {
                tracing::debug!(service = name, "service started");
                if let Err(error) = service.run(token).await {
                    tracing::error!(
                        service = name,
                        error = format!("{error:#}"),
                        "service failed; shutting down"
                    );
                    on_failure.cancel();
                }
            });
        }
        tracker.close();
        let _ = context
            .api
            .events
            .events
            .append(Event::from(DomainEvent::DaemonStart(DaemonStarted {
                version: crate::VERSION.to_string(),
                pid: std::process::id(),
                listeners,
            })));
        Ok(Daemon {
            context,
            shutdown,
            tracker,
            _pid_lock: pid_lock,
        })
    }

    /// A token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve until SIGTERM/SIGINT (or a failed service), then shut down gracefully.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        notify_systemd_ready();
        let watchdog = spawn_watchdog(self.shutdown.clone());
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("failed to install the SIGTERM handler")?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            () = self.shutdown.cancelled() => tracing::info!("shutdown requested"),
        }
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        self.stop().await
    }

    /// Stop every service, then flush the configuration to disk.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        self.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(20), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("services did not stop within 20 s; flushing the configuration anyway");
        }
        let config = self.context.api.config.clone();
        tokio::task::spawn_blocking(move || config.close())
            .await
            .context("configuration flush panicked")?;
        let events = self.context.api.events.clone();
        let stop = Event::from(DomainEvent::DaemonStop(DaemonStopped {
            pid: std::process::id(),
        }));
        if let Err(error) = events.events.append_durable(stop).await {
            tracing::warn!(error = %crate::error::Chain(&error), "failed to record the daemon stop");
        }
        tokio::task::spawn_blocking(move || events.close())
            .await
            .context("event log flush panicked")?;
        tracing::info!("confluentd stopped");
        Ok(())
    }
}

fn notify_systemd_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(error) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %crate::error::Chain(&error), "failed to notify systemd of readiness");
        } else {
            tracing::debug!("notified systemd: READY=1");
        }
    }
}

/// Ping the systemd watchdog at half its interval when the unit asks for one.
fn spawn_watchdog(shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                () = shutdown.cancelled() => break,
            }
        }
    }))
}

/// Raise the open-file limit to the hard limit: one daemon serves thousands of connections.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
