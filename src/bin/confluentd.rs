//! `confluentd`: the daemon. Parses the command line, sets up logging, and hands over to
//! [`confluent::daemon`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use confluent::config::EngineOptions;
use confluent::daemon::{Daemon, DaemonOptions, StatePaths};
use zeroize::Zeroizing;

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    name = "confluentd",
    version,
    about = "Confluent bare-metal provisioning daemon",
    args_override_self = true
)]
struct Arguments {
    /// Keep everything the daemon writes (configuration, keys, logs, run/api.sock) under DIR.
    /// Default: ./confluent-state.
    #[arg(long, value_name = "DIR", conflicts_with = "system")]
    state_dir: Option<PathBuf>,
    /// Use the system layout: /etc/confluent, /var/lib/confluent, /var/log/confluent,
    /// /run/confluent (requires root).
    #[arg(long)]
    system: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), overridden by RUST_LOG.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// File holding the passphrase that protects the master key.
    #[arg(long, value_name = "FILE")]
    key_passphrase_file: Option<PathBuf>,
    /// Snapshot the configuration after this many changes.
    #[arg(long, default_value_t = 100_000)]
    snapshot_every: u64,
    /// Snapshot the configuration at least this often (seconds) when it changed.
    #[arg(long, default_value_t = 300)]
    snapshot_interval: u64,
    /// Permission bits of run/api.sock, in octal (peers are still identified and authorized).
    #[arg(long, default_value = "666", value_parser = parse_mode)]
    socket_mode: u32,
    /// Plain HTTP listener for the API ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:4005", value_parser = parse_listen)]
    http: Listen,
    /// Serve the API over the plain HTTP listener too (by default it serves only the public boot
    /// paths /boot/ and /confluent-public/). For a trusted network, or behind a reverse proxy
    /// that terminates TLS on the same host.
    #[arg(long)]
    http_allow_api: bool,
    /// Serve /metrics (Prometheus) without authentication, on plain HTTP too: for a scrape
    /// target on a trusted network. Otherwise it needs a Monitor (or higher) over HTTPS.
    #[arg(long)]
    metrics_public: bool,
    /// HTTPS listener for the API ("off" to disable).
    #[arg(long, default_value = "[::]:4443", value_parser = parse_listen)]
    https: Listen,
    /// TLS socket listener for remote CLI use ("off" to disable).
    #[arg(long, default_value = "[::]:13001", value_parser = parse_listen)]
    tls_socket: Listen,
    /// HTTP sessions end after this many seconds without a request (sliding expiry).
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    session_idle_timeout: u64,
    /// Minimum length of new user passwords.
    #[arg(long, default_value_t = 8)]
    password_min_length: usize,
    /// Complexity of new user passwords: 0 none, 1 a letter, 2 and a digit, 3 and two of upper
    /// case, lower case and special, 4 and not the user name, 5 and no triple repeats.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=5))]
    password_complexity: u8,
    /// PAM service authenticating OS accounts (/etc/pam.d/NAME; libpam uses "other" when the
    /// file does not exist).
    #[arg(long, default_value = "confluent", value_name = "NAME")]
    pam_service: String,
    /// Password hashes verified in parallel (default: half the cores). A login storm uses at
    /// most this many cores.
    #[arg(long, value_name = "N")]
    password_workers: Option<usize>,
    /// Forward the event and audit logs to a syslog collector (RFC 5424):
    /// udp://HOST:PORT or tcp://HOST:PORT (octet-counted framing).
    #[arg(long, value_name = "URL")]
    syslog: Option<confluent::eventlog::syslog::SyslogTarget>,
    /// Start a new event log segment beyond this many MiB.
    #[arg(long, default_value_t = 64)]
    log_segment_mib: u64,
    /// Keep at most this many MiB of each event log (oldest segments are deleted first).
    #[arg(long, default_value_t = 8192)]
    log_retain_mib: u64,
    /// Delete event log segments older than this many days.
    #[arg(long, default_value_t = 90)]
    log_retain_days: u64,
    /// Serve DHCP on an interface: IFACE=full (addresses and boot files), IFACE=proxy (boot
    /// files only, next to another DHCP server), IFACE=auto (proxy while another DHCP server
    /// answers a probe on the segment, full otherwise) or IFACE=off. Repeatable.
    #[arg(long, value_name = "IFACE=MODE")]
    dhcp: Vec<confluent::dhcp::InterfaceMode>,
    /// DHCP lease time in seconds.
    #[arg(long, default_value_t = 3600)]
    dhcp_lease_time: u32,
    /// A subnet behind a DHCP relay (CIDR), served with its default pool. Repeatable.
    #[arg(long, value_name = "CIDR")]
    dhcp_relayed_subnet: Vec<ipnet::Ipv4Net>,
    /// TFTP listener serving the boot loaders under lib/tftpboot/ ("off" to disable).
    /// Default: 0.0.0.0:69 when DHCP is served on an interface, otherwise off.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    tftp: Option<Listen>,
    /// Most TFTP transfers in progress at once; more requests get a "server busy" error.
    #[arg(long, default_value_t = 4096)]
    tftp_max_transfers: usize,
    /// Seconds between probes for another DHCP server on IFACE=auto interfaces.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    dhcp_probe_interval: u64,
}

/// A listen address, or `off`.
#[derive(Clone, Copy)]
struct Listen(Option<std::net::SocketAddr>);

fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen(None));
    }
    text.parse()
        .map(|address| Listen(Some(address)))
        .map_err(|_| format!("invalid listen address '{text}' (want ADDRESS:PORT or off)"))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("invalid octal mode '{text}'"))
}

fn init_logging(arguments: &Arguments) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&arguments.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match arguments.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let arguments = Arguments::parse();
    init_logging(&arguments);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("confluentd")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %confluent::error::Chain(&error), "failed to start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(arguments)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "confluentd failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(arguments: Arguments) -> anyhow::Result<()> {
    let paths = if arguments.system {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!("--system needs root (the system layout lives under /etc and /var)");
        }
        StatePaths::system()
    } else {
        let dir = arguments
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(confluent::state::paths::DEFAULT_STATE_DIR));
        let dir = std::path::absolute(&dir)
            .with_context(|| format!("invalid state directory {}", dir.display()))?;
        StatePaths::under(&dir)
    };
    let passphrase = match &arguments.key_passphrase_file {
        Some(file) => Some(Zeroizing::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("failed to read passphrase file {}", file.display()))?
                .trim_end_matches('\n')
                .as_bytes()
                .to_vec(),
        )),
        None => None,
    };
    let tftp = match arguments.tftp {
        Some(Listen(address)) => address,
        None if arguments
            .dhcp
            .iter()
            .any(|served| served.mode != confluent::dhcp::policy::Mode::Off) =>
        {
            Some(std::net::SocketAddr::from((
                std::net::Ipv4Addr::UNSPECIFIED,
                confluent::proto::tftp::SERVER_PORT,
            )))
        }
        None => None,
    };
    tracing::info!(version = confluent::VERSION, etc = %paths.etc.display(), run = %paths.run.display(), "confluentd starting");
    let daemon = Daemon::start(DaemonOptions {
        paths,
        engine: EngineOptions {
            passphrase,
            snapshot_every: arguments.snapshot_every.max(1),
            ..EngineOptions::default()
        },
        snapshot_interval: Duration::from_secs(arguments.snapshot_interval.max(1)),
        socket_mode: arguments.socket_mode,
        http: arguments.http.0,
        http_allow_api: arguments.http_allow_api,
        metrics_public: arguments.metrics_public,
        auth: confluent::auth::AuthOptions {
            session_idle: Duration::from_secs(arguments.session_idle_timeout.max(1)),
            password_policy: confluent::auth::password::PasswordPolicy {
                min_length: arguments.password_min_length,
                complexity: arguments.password_complexity,
            },
            pam_service: arguments.pam_service.clone(),
            hash_workers: arguments
                .password_workers
                .unwrap_or_else(confluent::auth::default_hash_workers)
                .max(1),
            ..confluent::auth::AuthOptions::default()
        },
        https: arguments.https.0,
        tls_socket: arguments.tls_socket.0,
        syslog: arguments.syslog.clone(),
        event_logs: confluent::eventlog::LogOptions {
            max_segment_bytes: arguments.log_segment_mib.max(1) << 20,
            retain_bytes: arguments.log_retain_mib.max(1) << 20,
            retain_age: Duration::from_secs(arguments.log_retain_days.max(1) * 86_400),
            ..confluent::eventlog::LogOptions::default()
        },
        dhcp: arguments.dhcp.clone(),
        dhcp_lease_seconds: arguments.dhcp_lease_time.max(60),
        dhcp_relayed_subnets: arguments.dhcp_relayed_subnet.clone(),
        tftp,
        tftp_limits: confluent::tftp::TftpLimits {
            max_transfers: arguments.tftp_max_transfers.max(1),
            ..confluent::tftp::TftpLimits::default()
        },
        dhcp_probe_interval: std::time::Duration::from_secs(arguments.dhcp_probe_interval.max(1)),
    })
    .await?;
    tracing::info!("confluentd ready");
    daemon.run_until_signalled().await
}
