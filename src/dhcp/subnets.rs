//! Subnets and pools as configuration objects: what clients on a subnet get (pool ranges,
//! routers, DNS, domain, NTP, MTU, lease time, mode), whether the subnet is attached to a served
//! interface or reached through a relay.
//!
//! Each object is a configuration global `dhcp.subnet.<cidr>` holding the JSON of a
//! [`SubnetObject`], so it is journaled, survives a crash, and is part of snapshots and dumps
//! like every other setting. The service re-reads them from a config watcher and rebuilds its
//! scopes ([`Subnet::apply_to`]). A served subnet without an object keeps the default pool.
//!
//! Pure: no I/O here (the API and the service do the reading and writing).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::policy::{Mode, Pool, Scope};
use crate::config::Store;

/// Prefix of the configuration globals holding subnet objects.
pub const GLOBAL_PREFIX: &str = "dhcp.subnet.";

/// One subnet object as stored and as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SubnetObject {
    pub subnet: Ipv4Net,
    /// Dynamic address ranges, `FIRST-LAST` (inclusive). Empty: the default pool (the upper
    /// half of the subnet); `none`: no pool at all (reservations only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp_servers: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time: Option<u32>,
    /// `full`, `proxy` or `off`; overrides the mode of the interface the subnet is served on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// Why a subnet object is refused.
#[derive(Debug, thiserror::Error)]
pub enum SubnetObjectError {
    #[error("invalid pool range '{0}' (want FIRST-LAST inside the subnet, FIRST <= LAST)")]
    Pool(String),
    #[error("pool ranges {0} and {1} overlap")]
    Overlap(String, String),
    #[error("invalid mode '{0}' (want full, proxy or off)")]
    Mode(String),
    #[error("lease time {0} s is shorter than 60 s")]
    LeaseTime(u32),
    #[error("MTU {0} is below the IPv4 minimum of 68")]
    Mtu(u16),
    #[error("invalid domain name '{0}'")]
    Domain(String),
    #[error("invalid subnet object")]
    Json(#[source] serde_json::Error),
}

/// A validated object: the pools parsed, the mode known.
#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub object: SubnetObject,
    /// `None`: the default pool.
    pub pools: Option<Vec<Pool>>,
    pub mode: Option<Mode>,
}

impl SubnetObject {
    /// The configuration global that stores this object.
    pub fn key(&self) -> String {
        key_of(self.subnet)
    }

    /// Check every field; the subnet is truncated to its network address.
    pub fn validate(mut self) -> Result<Subnet, SubnetObjectError> {
        self.subnet = self.subnet.trunc();
        let pools = match self.pools.as_slice() {
            [] => None,
            [none] if none == "none" => Some(Vec::new()),
            ranges => {
                let mut pools = Vec::new();
                for text in ranges {
                    let pool = parse_range(text)
                        .filter(|pool| {
                            self.subnet.contains(&pool.first) && self.subnet.contains(&pool.last)
                        })
                        .ok_or_else(|| SubnetObjectError::Pool(text.clone()))?;
                    pools.push(pool);
                }
                for (index, pool) in pools.iter().enumerate() {
                    if let Some(other) = pools
                        .iter()
                        .skip(index + 1)
                        .find(|other| other.first <= pool.last && pool.first <= other.last)
                    {
                        return Err(SubnetObjectError::Overlap(
                            format!("{}-{}", pool.first, pool.last),
                            format!("{}-{}", other.first, other.last),
                        ));
                    }
                }
                Some(pools)
            }
        };
        let mode = match self.mode.as_deref() {
            None => None,
            Some(text @ ("full" | "proxy" | "off")) => text.parse().ok(),
            Some(other) => return Err(SubnetObjectError::Mode(other.to_string())),
        };
        if let Some(seconds) = self.lease_time
            && seconds < 60
        {
            return Err(SubnetObjectError::LeaseTime(seconds));
        }
        if let Some(mtu) = self.mtu
            && mtu < 68
        {
            return Err(SubnetObjectError::Mtu(mtu));
        }
        if let Some(domain) = &self.domain
            && (domain.is_empty()
                || domain.len() > 253
                || !domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(SubnetObjectError::Domain(domain.clone()));
        }
        Ok(Subnet {
            object: self,
            pools,
            mode,
        })
    }
}

/// The global key of a subnet's object.
pub fn key_of(subnet: Ipv4Net) -> String {
    format!("{GLOBAL_PREFIX}{}", subnet.trunc())
}

/// `FIRST-LAST` with FIRST <= LAST.
fn parse_range(text: &str) -> Option<Pool> {
    let (first, last) = text.split_once('-')?;
    let first: Ipv4Addr = first.trim().parse().ok()?;
    let last: Ipv4Addr = last.trim().parse().ok()?;
    (first <= last).then_some(Pool { first, last })
}

/// Every valid subnet object of a configuration, most specific subnet first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subnets {
    subnets: Vec<Subnet>,
}

impl Subnets {
    /// Read the objects from the configuration globals; an invalid one (only possible through
    /// a hand-edited dump) is skipped and returned with its error.
    pub fn from_store(store: &Store) -> (Subnets, Vec<(String, SubnetObjectError)>) {
        let mut subnets = Vec::new();
        let mut invalid = Vec::new();
        for (key, value) in store.globals() {
            if !key.starts_with(GLOBAL_PREFIX) {
                continue;
            }
            match serde_json::from_value::<SubnetObject>(value.clone())
                .map_err(SubnetObjectError::Json)
                .and_then(SubnetObject::validate)
            {
                Ok(subnet) => subnets.push(subnet),
                Err(error) => invalid.push((key.to_string(), error)),
            }
        }
        subnets.sort_by_key(|subnet| std::cmp::Reverse(subnet.object.subnet.prefix_len()));
        (Subnets { subnets }, invalid)
    }

    /// The object of exactly this subnet.
    pub fn get(&self, subnet: Ipv4Net) -> Option<&Subnet> {
        self.subnets
            .iter()
            .find(|candidate| candidate.object.subnet == subnet.trunc())
    }

    /// The most specific object whose subnet contains `address` (a relay's `giaddr`).
    pub fn containing(&self, address: Ipv4Addr) -> Option<&Subnet> {
        self.subnets
            .iter()
            .find(|candidate| candidate.object.subnet.contains(&address))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.iter()
    }
}

impl Subnet {
    /// Apply this object to a scope of its subnet: what is set here replaces the scope's value.
    pub fn apply_to(&self, scope: &mut Scope) {
        let object = &self.object;
        if let Some(pools) = &self.pools {
            scope.pools.clone_from(pools);
        }
        if !object.routers.is_empty() {
            scope.routers.clone_from(&object.routers);
        }
        if !object.dns_servers.is_empty() {
            scope.dns_servers.clone_from(&object.dns_servers);
        }
        if object.domain.is_some() {
            scope.domain_name.clone_from(&object.domain);
        }
        if !object.ntp_servers.is_empty() {
            scope.ntp_servers.clone_from(&object.ntp_servers);
        }
        if object.mtu.is_some() {
            scope.mtu = object.mtu;
        }
        if let Some(seconds) = object.lease_time {
            scope.lease_seconds = seconds;
        }
        if let Some(mode) = self.mode {
            scope.mode = mode;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: serde_json::Value) -> Result<Subnet, SubnetObjectError> {
        serde_json::from_value::<SubnetObject>(json)
            .map_err(SubnetObjectError::Json)
            .and_then(SubnetObject::validate)
    }

    fn scope() -> Scope {
        Scope {
            mode: Mode::Full,
            server_address: Ipv4Addr::new(10, 1, 0, 1),
            subnet: "10.1.0.0/24".parse().unwrap(),
            pools: Pool::default_for("10.1.0.0/24".parse().unwrap())
                .into_iter()
                .collect(),
            routers: Vec::new(),
            dns_servers: Vec::new(),
            domain_name: None,
            ntp_servers: Vec::new(),
            mtu: None,
            lease_seconds: 3600,
        }
    }

    #[test]
    fn an_object_replaces_what_it_sets_and_keeps_the_rest() {
        let subnet = object(serde_json::json!({
            "subnet": "10.1.0.7/24",
            "pools": ["10.1.0.10-10.1.0.19", "10.1.0.40-10.1.0.40"],
            "routers": ["10.1.0.254"],
            "lease_time": 600,
            "mode": "proxy",
        }))
        .unwrap();
        assert_eq!(subnet.object.key(), "dhcp.subnet.10.1.0.0/24");
        let mut scope = scope();
        subnet.apply_to(&mut scope);
        assert_eq!(scope.pools.len(), 2);
        assert_eq!(scope.pools[1].first, Ipv4Addr::new(10, 1, 0, 40));
        assert_eq!(scope.routers, vec![Ipv4Addr::new(10, 1, 0, 254)]);
        assert_eq!(scope.lease_seconds, 600);
        assert_eq!(scope.mode, Mode::Proxy);
        assert!(scope.dns_servers.is_empty());
        // `none`: reservations only.
        let mut scope = self::scope();
        object(serde_json::json!({"subnet": "10.1.0.0/24", "pools": ["none"]}))
            .unwrap()
            .apply_to(&mut scope);
        assert!(scope.pools.is_empty());
    }

    #[test]
    fn invalid_objects_are_refused_with_the_reason() {
        let refused = |json| object(json).unwrap_err();
        assert!(matches!(
            refused(serde_json::json!({"subnet": "10.1.0.0/24", "pools": ["10.2.0.1-10.2.0.9"]})),
            SubnetObjectError::Pool(range) if range == "10.2.0.1-10.2.0.9"
        ));
        assert!(matches!(
            refused(serde_json::json!({"subnet": "10.1.0.0/24", "pools": ["10.1.0.9-10.1.0.1"]})),
            SubnetObjectError::Pool(range) if range == "10.1.0.9-10.1.0.1"
        ));
        assert!(matches!(
            refused(
                serde_json::json!({"subnet": "10.1.0.0/24", "pools": ["10.1.0.1-10.1.0.9", "10.1.0.5-10.1.0.6"]})
            ),
            SubnetObjectError::Overlap(..)
        ));
        assert!(matches!(
            refused(serde_json::json!({"subnet": "10.1.0.0/24", "mode": "auto"})),
            SubnetObjectError::Mode(mode) if mode == "auto"
        ));
        assert!(matches!(
            refused(serde_json::json!({"subnet": "10.1.0.0/24", "lease_time": 5})),
            SubnetObjectError::LeaseTime(5)
        ));
        assert!(matches!(
            refused(serde_json::json!({"subnet": "10.1.0.0/24", "colour": "blue"})),
            SubnetObjectError::Json(_)
        ));
    }

    #[test]
    fn the_most_specific_subnet_contains_a_relay() {
        let mut subnets = Subnets::default();
        for json in [
            serde_json::json!({"subnet": "10.0.0.0/8"}),
            serde_json::json!({"subnet": "10.5.0.0/16"}),
        ] {
            subnets.subnets.push(object(json).unwrap());
        }
        subnets
            .subnets
            .sort_by_key(|subnet| std::cmp::Reverse(subnet.object.subnet.prefix_len()));
        let found = subnets.containing(Ipv4Addr::new(10, 5, 3, 1)).unwrap();
        assert_eq!(
            found.object.subnet,
            "10.5.0.0/16".parse::<Ipv4Net>().unwrap()
        );
        assert!(subnets.containing(Ipv4Addr::new(192, 168, 0, 1)).is_none());
    }
}
