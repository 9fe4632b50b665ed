//! Which interfaces the DHCP service serves, and in which mode: the `--dhcp IFACE=MODE` flags,
//! overridden per interface by configuration globals `dhcp.interface.<name>` (`{"mode": ...}`),
//! which the API and `confluent dhcpinterface` change at run time. Also the table of what is
//! served now, shared with the API. Pure apart from that table's lock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::InterfaceMode;
use super::policy::Mode;
use crate::config::model::Store;

/// Prefix of the configuration globals holding per-interface modes.
pub const GLOBAL_PREFIX: &str = "dhcp.interface.";

/// The global holding `interface`'s mode.
pub fn key_of(interface: &str) -> String {
    format!("{GLOBAL_PREFIX}{interface}")
}

/// A Linux interface name: 1 to 15 bytes, no `/`, whitespace, `=` or `:`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'/' | b'=' | b':'))
}

/// Where an interface's mode comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `--dhcp` on the command line.
    Flag,
    /// A `dhcp.interface.<name>` global.
    Configuration,
}

/// The mode stored in a `dhcp.interface.<name>` global value.
pub fn mode_of(value: &serde_json::Value) -> Option<Mode> {
    value.get("mode")?.as_str()?.parse().ok()
}

/// The interfaces to serve and their modes: the flags, then the globals (which win). Entries
/// whose mode is `off` are kept, so that the API can show them.
pub fn desired(flags: &[InterfaceMode], store: &Store) -> BTreeMap<String, (Mode, Source)> {
    let mut wanted: BTreeMap<String, (Mode, Source)> = flags
        .iter()
        .map(|flag| (flag.interface.clone(), (flag.mode, Source::Flag)))
        .collect();
    for (key, value) in store.globals() {
        let Some(name) = key.strip_prefix(GLOBAL_PREFIX) else {
            continue;
        };
        match mode_of(value) {
            Some(mode) if valid_name(name) => {
                wanted.insert(name.to_string(), (mode, Source::Configuration));
            }
            _ => {
                tracing::warn!(key = %key, value = %value, "ignoring an invalid DHCP interface setting")
            }
        }
    }
    wanted
}

/// One interface as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// The configured mode.
    pub mode: &'static str,
    pub source: Source,
    /// The mode served now (`auto` until its first probe ends); `null` when not served.
    pub serving: Option<&'static str>,
    pub address: Option<Ipv4Addr>,
    pub subnet: Option<String>,
    /// Why it is not served, when it should be.
    pub error: Option<String>,
}

/// What the service serves now, for the API.
#[derive(Debug, Default)]
pub struct InterfaceTable {
    entries: parking_lot::Mutex<Vec<InterfaceStatus>>,
}

impl InterfaceTable {
    pub fn snapshot(&self) -> Vec<InterfaceStatus> {
        self.entries.lock().clone()
    }

    pub fn replace(&self, entries: Vec<InterfaceStatus>) {
        *self.entries.lock() = entries;
    }

    /// Record the mode an auto interface serves after a probe.
    pub fn set_serving(&self, name: &str, mode: Mode) {
        if let Some(entry) = self
            .entries
            .lock()
            .iter_mut()
            .find(|entry| entry.name == name)
        {
            entry.serving = Some(mode.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Op;

    #[test]
    fn globals_override_flags_and_invalid_ones_are_skipped() {
        let mut store = Store::default();
        for (key, value) in [
            (key_of("eth1"), serde_json::json!({"mode": "proxy"})),
            (key_of("eth2"), serde_json::json!({"mode": "auto"})),
            (key_of("eth3"), serde_json::json!({"mode": "sometimes"})),
            (key_of("a/b"), serde_json::json!({"mode": "full"})),
        ] {
            store.apply(&Op::GlobalSet {
                key: key.as_str().into(),
                value: Some(value),
            });
        }
        let flags = vec![
            "eth0".parse::<InterfaceMode>().unwrap(),
            "eth1=full".parse::<InterfaceMode>().unwrap(),
        ];
        let wanted = desired(&flags, &store);
        assert_eq!(wanted["eth0"], (Mode::Full, Source::Flag));
        assert_eq!(wanted["eth1"], (Mode::Proxy, Source::Configuration));
        assert_eq!(wanted["eth2"], (Mode::Auto, Source::Configuration));
        assert_eq!(wanted.len(), 3, "{wanted:?}");
    }

    #[test]
    fn interface_names() {
        assert!(valid_name("eth0"));
        assert!(valid_name("enp0s31f6"));
        assert!(valid_name("br-lab.100"));
        for bad in ["", ".", "..", "a/b", "a b", "a=b", "sixteen-chars-xx"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
