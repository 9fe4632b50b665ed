//! The DHCPv4 boot service: who gets which address and boot file ([`policy`], a pure function
//! over a [`directory`] of nodes and the leases), and the leases themselves.

pub mod directory;
pub mod leases;
pub mod policy;
