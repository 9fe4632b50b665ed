//! Boot serving shared by the HTTP(S) listeners and the TFTP server: which node a booting
//! machine is (by MAC, UUID or name, through the live node [`LiveDirectory`]), which profile it
//! should boot ([`profile`]), and the scripts that take it there ([`scripts`]).
//!
//! Layout under the data directory (`lib/`, `/var/lib/confluent` in the system layout):
//! `public/os/<profile>/` (profiles, served unauthenticated under `/confluent-public/`),
//! `distributions/` (imported media that profiles may link into), `tftpboot/` (boot
//! loaders, installed by `bootloaders/install.sh`) and `cache/boot-images/` (the `boot.img` of
//! each `bootloader: shim` profile, built on demand by [`image`], never served raw).

pub mod image;
pub mod scripts;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fsroot::{ConfinedRoot, ConfinedRootError};
use crate::osimage::profile;

use crate::deploy::directory::NodeBoot;
use crate::deploy::live::LiveDirectory;
use crate::eventlog::domain::{BootServed, DomainEvent};
use crate::proto::dhcp::MacAddress;

/// Where boot files live and who is booting.
pub struct Boot {
    pub directory: Arc<LiveDirectory>,
    /// `lib/public`: served under `/confluent-public/`; its symlinks may lead into
    /// `lib/public` and `lib/distributions` (imported media profiles link into).
    pub public: ConfinedRoot,
    /// `lib/distributions`, as configured.
    pub distributions: PathBuf,
    /// `lib/tftpboot`: boot loaders (`x86_64/undionly.kpxe`, `x86_64/ipxe.efi`, ...); its
    /// symlinks may lead only within itself.
    pub loaders: ConfinedRoot,
    pub short_links: Arc<crate::deploy::ShortLinks>,
    /// `boot.img` of the profiles with `bootloader: shim`, cached under `lib/cache/boot-images`.
    pub images: image::BootImages,
}

/// Why the boot file directories could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum BootSetupError {
    #[error("failed to create the directory {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open a boot file directory")]
    Root(#[source] ConfinedRootError),
}

fn create_dir(path: &Path) -> Result<(), BootSetupError> {
    std::fs::create_dir_all(path).map_err(|source| BootSetupError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// How a boot URL names the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Mac(MacAddress),
    Uuid(String),
    Node(String),
}

impl Identity {
    /// `by-mac`/`by-uuid`/`by-node` and the id from the URL.
    pub fn parse(kind: &str, id: &str) -> Option<Identity> {
        match kind {
            "by-mac" => MacAddress::parse(id).map(Identity::Mac),
            "by-uuid" => Some(Identity::Uuid(id.trim().to_ascii_lowercase())),
            "by-node" => Some(Identity::Node(id.to_string())),
            _ => None,
        }
    }
}

impl Boot {
    /// Create the directories under `lib` if needed and open them as confined roots, once.
    pub fn new(directory: Arc<LiveDirectory>, lib: &Path) -> Result<Boot, BootSetupError> {
        let public = lib.join("public");
        let distributions = lib.join("distributions");
        let loaders = lib.join("tftpboot");
        for dir in [&public.join("os"), &distributions, &loaders] {
            create_dir(dir)?;
        }
        let public_root = ConfinedRoot::with_link_targets(&public, &[&public, &distributions])
            .map_err(BootSetupError::Root)?;
        let loaders = ConfinedRoot::new(&loaders).map_err(BootSetupError::Root)?;
        let images = image::BootImages::new(
            lib.join("cache/boot-images"),
            public_root.clone(),
            loaders.clone(),
        )?;
        Ok(Boot {
            directory,
            images,
            public: public_root,
            distributions,
            loaders,
            short_links: Arc::new(crate::deploy::ShortLinks::default()),
        })
    }

    /// `lib/public/os` (canonical).
    pub fn profiles(&self) -> PathBuf {
        self.public.path().join("os")
    }

    /// The node a boot URL names, once the directory is built.
    pub async fn identify(&self, identity: &Identity) -> Option<Arc<NodeBoot>> {
        self.directory.wait_ready().await;
        let directory = self.directory.read();
        match identity {
            Identity::Mac(mac) => directory.by_mac(mac),
            Identity::Uuid(uuid) => directory.by_uuid(uuid),
            Identity::Node(name) => directory.by_name(name),
        }
        .cloned()
    }

    /// The node an address is reserved for (TFTP clients are known by address only).
    pub async fn node_at(&self, address: std::net::Ipv4Addr) -> Option<Arc<NodeBoot>> {
        self.directory.wait_ready().await;
        self.directory.read().reserved_for(address).cloned()
    }
}

/// What the TFTP server answers besides the boot loaders in its root, for the Secure Boot
/// chain (shim, then Debian's signed network GRUB, which has no HTTP client):
///
/// - `boot/by-mac/<mac>/grub.cfg`: the node's GRUB configuration for its pending profile,
///   loading kernel and initramfs over TFTP ([`scripts::grub_tftp`]), or the "boot from local
///   disk" one; recorded as a `boot.tftp` event of the node;
/// - any other `grub.cfg` or `grub.cfg-*` (wherever GRUB's prefix points; Debian's looks for
///   `grub/grub.cfg`): a configuration chaining to the one above with GRUB's
///   `$net_default_mac` ([`scripts::grub_chain`]);
/// - `os/<profile>/boot/<file>`: the profile's `lib/public/os/<profile>/boot/<file>`, read-only,
///   confined to that directory, whose symlinks may lead only into `lib/public` and
///   `lib/distributions` (as over HTTP, where the same files are public).
pub struct TftpBootFiles {
    pub boot: Arc<Boot>,
    pub events: Arc<crate::eventlog::EventLogs>,
}

impl TftpBootFiles {
    /// A profile's boot file; `rest` is already normalized (no `..`, no empty components).
    fn profile_file(
        &self,
        profile: &str,
        rest: &str,
    ) -> Result<crate::tftp::VirtualFile, crate::tftp::TftpOpenError> {
        use crate::tftp::{TftpOpenError, VirtualFile};
        if !profile::valid_name(profile) {
            return Err(TftpOpenError::Escapes);
        }
        // The profile's boot/ as a root of its own: a symlink there may lead into lib/public
        // and lib/distributions, but a request cannot climb out of boot/ by name.
        let root = self
            .boot
            .public
            .subdirectory(&format!("os/{profile}/boot"))?;
        let (file, size) = crate::tftp::root::open(&root, rest)?;
        Ok(VirtualFile::Opened(file, size))
    }

    /// The per-node GRUB configuration over TFTP.
    fn node_grub(&self, mac: &str) -> Result<crate::tftp::VirtualFile, crate::tftp::TftpOpenError> {
        use crate::tftp::{TftpOpenError, VirtualFile};
        let mac = MacAddress::parse(mac).ok_or(TftpOpenError::NotFound)?;
        // No waiting here: before the directory's first build every machine is unknown.
        let node = self.boot.directory.read().by_mac(&mac).cloned();
        let request = format!("boot/by-mac/{mac}/grub.cfg");
        let Some(node) = node else {
            self.record(None, BootServed::unknown_machine(request));
            return Err(TftpOpenError::NotFound);
        };
        let pending = node.pending_profile.as_deref();
        let outcome = |text: &str| BootServed::for_node(request.clone(), pending, text);
        let Some(profile_name) = pending else {
            self.record(Some(&node.name), outcome("local boot"));
            return Ok(VirtualFile::Memory(bytes::Bytes::from(
                scripts::grub_local(&node.name),
            )));
        };
        match profile::load(&self.boot.profiles(), profile_name) {
            Ok(profile) => {
                self.record(Some(&node.name), outcome("boot script"));
                Ok(VirtualFile::Memory(bytes::Bytes::from(scripts::grub_tftp(
                    &profile,
                ))))
            }
            Err(error) => {
                self.record(Some(&node.name), outcome(&error.to_string()));
                Err(TftpOpenError::NotFound)
            }
        }
    }

    /// Record what a booting machine was given, for "why did node X not boot?".
    fn record(&self, node: Option<&str>, served: BootServed) {
        let mut event = crate::eventlog::Event::from(DomainEvent::BootTftp(served));
        if let Some(node) = node {
            event = event.node(node);
        }
        // Never blocks; a full queue is counted by the log itself.
        let _ = self.events.events.append(event);
    }
}

impl crate::tftp::VirtualFiles for TftpBootFiles {
    fn lookup(
        &self,
        path: &str,
        _client: std::net::IpAddr,
    ) -> Option<Result<crate::tftp::VirtualFile, crate::tftp::TftpOpenError>> {
        let components: Vec<&str> = path.split('/').collect();
        match components.as_slice() {
            ["boot", "by-mac", mac, "grub.cfg"] => return Some(self.node_grub(mac)),
            ["os", profile, "boot", rest @ ..] if !rest.is_empty() => {
                return Some(self.profile_file(profile, &rest.join("/")));
            }
            _ => {}
        }
        let name = components.last()?;
        (*name == "grub.cfg" || name.starts_with("grub.cfg-")).then(|| {
            Ok(crate::tftp::VirtualFile::Memory(bytes::Bytes::from(
                scripts::grub_chain(),
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_from_urls() {
        assert_eq!(
            Identity::parse("by-mac", "52-54-00-AA-bb-01"),
            MacAddress::parse("52:54:00:aa:bb:01").map(Identity::Mac)
        );
        assert_eq!(Identity::parse("by-mac", "nonsense"), None);
        assert_eq!(
            Identity::parse("by-uuid", "ABC-def"),
            Some(Identity::Uuid("abc-def".into()))
        );
        assert_eq!(Identity::parse("by-ip", "x"), None);
    }
}
