//! Node identity for deployment: which node a booting machine is (by MAC, UUID, reserved
//! address or name), kept current from the configuration for the DHCP service and the HTTP and
//! TFTP boot routes alike ([`directory`], [`live`]), and the short links DHCP hands out
//! ([`links`]), and which boot phase a served file stands for ([`phase`]). The deployment state machine (a node's progress through its install, reported
//! by the node itself) lands here with the OS image issue.
//!
//! **API boundary:** no sockets; services read the directory, they never build their own.

pub mod directory;
pub mod links;
pub mod live;
pub mod phase;

pub use links::ShortLinks;
