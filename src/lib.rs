//! Confluent: a bare-metal provisioning appliance in one daemon.
//!
//! Code map, in reading order:
//! - [`config`]: the configuration engine (nodes, groups, attributes, noderange, expressions,
//!   journal, secrets, watchers);
//! - [`proto`]: pure protocol codecs (the TLV framing of the socket API, DHCPv4, TFTP);
//! - [`eventlog`]: the sequential log facility (events, audit, subscriptions, boot timelines,
//!   syslog forwarding);
//! - [`dhcp`]: the DHCPv4 service: node directory, reply policy, leases, socket loop;
//! - [`boot`]: OS profiles, per-node boot scripts, the live node directory for HTTP boot;
//! - [`tftp`]: the read-only TFTP service (boot-loader directory and virtual files);
//! - [`api`]: the one resource tree, its authorization decision and its socket transports;
//! - [`auth`]: users, PAM, sessions, roles, tenants, node API keys;
//! - [`metrics`]: the Prometheus metrics every service counts into, served at `/metrics`;
//! - [`daemon`]: the composition root of `confluentd` (state paths, pid lock, services, shutdown);
//! - [`cli`]: the multi-call `confluent` command.

pub mod api;
pub mod auth;
pub mod boot;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod dhcp;
pub mod error;
pub mod eventlog;
pub mod fsroot;
pub mod http;
pub mod metrics;
pub mod osimage;
pub mod pki;
pub mod proto;
pub mod service;
pub mod state;
pub mod tftp;

/// Version reported by the daemon and the CLI.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
