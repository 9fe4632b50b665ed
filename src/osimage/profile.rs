//! The minimal shape of an OS profile (reference 11.3): a directory
//! `lib/public/os/<profile>/` holding `profile.yaml` and `boot/` (`kernel`, `initramfs/*`,
//! optionally `efi/boot/BOOTX64.EFI` and `grubx64.efi`).
//!
//! `profile.yaml` keys read here:
//! - `label`: the menu title (default: the profile name);
//! - `kernelargs`: the kernel command line;
//! - `bootloader`: `ipxe` (the default) or `shim`. With `shim`, UEFI machines booting the
//!   profile get the Secure Boot chain: the Microsoft-signed shim, then Debian's signed network
//!   GRUB, which has no HTTP support: over PXE it loads the kernel and initramfs over TFTP, over
//!   UEFI HTTP boot all of it comes in the profile's `boot.img` (`boot::image`); BIOS
//!   machines and clients already running iPXE still get iPXE. See [`BootLoader`].
//!
//! [`ProfileScan`] keeps the `bootloader` setting of every profile current for the DHCP
//! service without reading files per packet. Importing distributions and stock profiles belong
//! to the OS image service.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// What `profile.yaml` may say (unknown keys are kept for other readers and ignored here).
#[derive(Debug, Default, Deserialize)]
struct ProfileFile {
    label: Option<String>,
    kernelargs: Option<String>,
    bootloader: Option<BootLoader>,
}

/// The first boot loader the DHCP service offers machines booting a profile (`bootloader` in
/// `profile.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootLoader {
    /// iPXE (`undionly.kpxe`, `ipxe.efi` or `snponly.efi`, and iPXE for UEFI HTTP boot), which
    /// fetches the per-node iPXE script over HTTP. iPXE is not signed for Secure Boot.
    #[default]
    Ipxe,
    /// For UEFI: `shimx64.efi`/`shimaa64.efi` (signed by Microsoft), which loads the signed
    /// `grubx64.efi`/`grubaa64.efi` from the same place, which loads the node's GRUB
    /// configuration; the kernel must be signed by a key shim trusts (Debian's, for Debian's
    /// shim). BIOS has no Secure Boot and keeps iPXE.
    Shim,
}

impl BootLoader {
    /// The value as written in `profile.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            BootLoader::Ipxe => "ipxe",
            BootLoader::Shim => "shim",
        }
    }
}

/// A profile ready to be booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// Menu title (`label`, or the name).
    pub label: String,
    /// Kernel command line (`kernelargs`).
    pub kernel_args: String,
    /// File names under `boot/initramfs/`, in name order (the order they are loaded).
    pub initramfs: Vec<String>,
    /// `bootloader`.
    pub boot_loader: BootLoader,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0:?} is not a valid profile name")]
    InvalidName(String),
    #[error("profile {name} does not exist (no {})", path.display())]
    Missing { name: String, path: PathBuf },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid YAML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("profile {name} has no boot/kernel")]
    NoKernel { name: String },
}

impl ProfileError {
    /// What a client is told: the problem with the profile, never a server path or OS error.
    pub fn client_message(&self) -> String {
        match self {
            ProfileError::InvalidName(_) | ProfileError::NoKernel { .. } => self.to_string(),
            ProfileError::Missing { name, .. } => format!("profile {name} does not exist"),
            ProfileError::Read { .. } => "the profile cannot be read".into(),
            ProfileError::Parse { .. } => "the profile's profile.yaml is not valid YAML".into(),
        }
    }
}

/// A profile name is one path component of printable characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@'))
}

/// Read the profile `name` under `profiles` (the `os/` directory).
pub fn load(profiles: &Path, name: &str) -> Result<Profile, ProfileError> {
    if !valid_name(name) {
        return Err(ProfileError::InvalidName(name.to_string()));
    }
    let dir = profiles.join(name);
    let yaml = dir.join("profile.yaml");
    let text = match std::fs::read_to_string(&yaml) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ProfileError::Missing {
                name: name.to_string(),
                path: yaml,
            });
        }
        Err(source) => return Err(ProfileError::Read { path: yaml, source }),
    };
    let file = parse_profile_file(&yaml, &text)?;
    if !dir.join("boot/kernel").exists() {
        return Err(ProfileError::NoKernel {
            name: name.to_string(),
        });
    }
    let mut initramfs = Vec::new();
    match std::fs::read_dir(dir.join("boot/initramfs")) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let Ok(file_name) = entry.file_name().into_string() else {
                    continue;
                };
                if !file_name.starts_with('.') && entry.path().is_file() {
                    initramfs.push(file_name);
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ProfileError::Read {
                path: dir.join("boot/initramfs"),
                source,
            });
        }
    }
    initramfs.sort();
    Ok(Profile {
        name: name.to_string(),
        label: file
            .label
            .filter(|label| !label.trim().is_empty())
            .unwrap_or_else(|| name.to_string()),
        kernel_args: file.kernelargs.unwrap_or_default().trim().to_string(),
        initramfs,
        boot_loader: file.bootloader.unwrap_or_default(),
    })
}

/// Parse the text of `profile.yaml` (read from `path`, named in errors). An unknown
/// `bootloader` value is an error naming the accepted ones.
fn parse_profile_file(path: &Path, text: &str) -> Result<ProfileFile, ProfileError> {
    if text.trim().is_empty() {
        return Ok(ProfileFile::default());
    }
    serde_saphyr::from_str(text).map_err(|error| ProfileError::Parse {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

/// What identifies one version of a `profile.yaml` without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified_ns: i128,
    changed_ns: i128,
    inode: u64,
    size: u64,
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            changed_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
            inode: metadata.ino(),
            size: metadata.size(),
        }
    }
}

/// The `bootloader` setting of every profile under `os/`, for the DHCP service, which must
/// not read files per packet. [`ProfileScan::rescan`] stats each `profile.yaml` and parses
/// only those whose size, times or inode changed since the previous scan; the daemon runs it
/// every [`ProfileScan::INTERVAL`] off the async workers (`dhcp::live`).
#[derive(Debug)]
pub struct ProfileScan {
    profiles: PathBuf,
    seen: HashMap<String, (FileStamp, BootLoader)>,
    scanned: bool,
}

impl ProfileScan {
    /// How often the daemon rescans: a changed `bootloader` applies to DHCP within this time.
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

    /// A scanner of `profiles` (the `os/` directory, which need not exist yet).
    pub fn new(profiles: PathBuf) -> ProfileScan {
        ProfileScan {
            profiles,
            seen: HashMap::new(),
            scanned: false,
        }
    }

    /// Look at every profile. When anything changed since the last call (or on the first
    /// call), return the profiles whose boot loader is not the default; `None` otherwise.
    /// A `profile.yaml` that cannot be read or parsed counts as the default (iPXE) and is
    /// logged once per change. Blocking: call from `spawn_blocking`.
    pub fn rescan(&mut self) -> Option<HashMap<Arc<str>, BootLoader>> {
        let mut changed = !self.scanned;
        self.scanned = true;
        let mut present: HashMap<String, (FileStamp, BootLoader)> = HashMap::new();
        let entries = match std::fs::read_dir(&self.profiles) {
            Ok(entries) => entries.flatten().collect(),
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(
                        path = %self.profiles.display(),
                        error = %crate::error::Chain(&error),
                        "failed to list the profiles; DHCP offers iPXE to every profile"
                    );
                }
                Vec::new()
            }
        };
        for entry in entries {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !valid_name(&name) {
                continue;
            }
            let yaml = entry.path().join("profile.yaml");
            let Ok(metadata) = std::fs::metadata(&yaml) else {
                continue;
            };
            let stamp = FileStamp::of(&metadata);
            let loader = match self.seen.get(&name) {
                Some((seen, loader)) if *seen == stamp => *loader,
                _ => {
                    changed = true;
                    read_boot_loader(&name, &yaml)
                }
            };
            present.insert(name, (stamp, loader));
        }
        changed |= present.len() != self.seen.len();
        self.seen = present;
        changed.then(|| {
            self.seen
                .iter()
                .filter(|(_, (_, loader))| *loader != BootLoader::default())
                .map(|(name, (_, loader))| (Arc::from(name.as_str()), *loader))
                .collect()
        })
    }
}

/// The `bootloader` of one `profile.yaml`, the default when it cannot be read or parsed.
fn read_boot_loader(name: &str, yaml: &Path) -> BootLoader {
    let parsed = std::fs::read_to_string(yaml)
        .map_err(|source| ProfileError::Read {
            path: yaml.to_path_buf(),
            source,
        })
        .and_then(|text| parse_profile_file(yaml, &text));
    match parsed {
        Ok(file) => file.bootloader.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(
                profile = name,
                error = format!("{:#}", anyhow::Error::new(error)),
                "profile settings unreadable; DHCP offers iPXE until profile.yaml is fixed"
            );
            BootLoader::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_dir(yaml: &str, initrds: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("p1/boot");
        std::fs::create_dir_all(boot.join("initramfs")).unwrap();
        std::fs::write(dir.path().join("p1/profile.yaml"), yaml).unwrap();
        std::fs::write(boot.join("kernel"), b"k").unwrap();
        for initrd in initrds {
            std::fs::write(boot.join("initramfs").join(initrd), b"i").unwrap();
        }
        dir
    }

    #[test]
    fn loads_label_arguments_and_sorted_initrds() {
        let dir = profile_dir(
            "label: Test OS\nkernelargs: quiet console=ttyS0\nostype: linux\n",
            &["site.cpio", "distribution", "addons.cpio"],
        );
        let profile = load(dir.path(), "p1").unwrap();
        assert_eq!(profile.label, "Test OS");
        assert_eq!(profile.kernel_args, "quiet console=ttyS0");
        assert_eq!(
            profile.initramfs,
            vec!["addons.cpio", "distribution", "site.cpio"]
        );
    }

    #[test]
    fn refuses_bad_names_missing_profiles_and_missing_kernels() {
        let dir = profile_dir("", &[]);
        for name in ["", "..", "../p1", "a/b", ".hidden", "p\0"] {
            assert!(matches!(
                load(dir.path(), name),
                Err(ProfileError::InvalidName(_))
            ));
        }
        assert!(matches!(
            load(dir.path(), "p2"),
            Err(ProfileError::Missing { .. })
        ));
        std::fs::remove_file(dir.path().join("p1/boot/kernel")).unwrap();
        assert!(matches!(
            load(dir.path(), "p1"),
            Err(ProfileError::NoKernel { .. })
        ));
    }

    #[test]
    fn an_empty_profile_yaml_uses_the_name_as_label() {
        let dir = profile_dir("", &[]);
        let profile = load(dir.path(), "p1").unwrap();
        assert_eq!(profile.label, "p1");
        assert_eq!(profile.kernel_args, "");
        assert!(profile.initramfs.is_empty());
    }

    #[test]
    fn bootloader_is_ipxe_by_default_and_shim_when_asked() {
        let dir = profile_dir("label: x\n", &[]);
        assert_eq!(
            load(dir.path(), "p1").unwrap().boot_loader,
            BootLoader::Ipxe
        );
        std::fs::write(dir.path().join("p1/profile.yaml"), "bootloader: shim\n").unwrap();
        assert_eq!(
            load(dir.path(), "p1").unwrap().boot_loader,
            BootLoader::Shim
        );
        std::fs::write(dir.path().join("p1/profile.yaml"), "bootloader: ipxe\n").unwrap();
        assert_eq!(
            load(dir.path(), "p1").unwrap().boot_loader,
            BootLoader::Ipxe
        );
    }

    #[test]
    fn an_unknown_bootloader_is_a_parse_error_naming_the_choices() {
        let dir = profile_dir("bootloader: grub\n", &[]);
        let error = load(dir.path(), "p1").unwrap_err();
        let ProfileError::Parse { path, message } = &error else {
            panic!("not a parse error: {error}");
        };
        assert!(path.ends_with("p1/profile.yaml"), "{}", path.display());
        assert!(message.contains("grub"), "{message}");
        assert!(
            message.contains("ipxe") && message.contains("shim"),
            "{message}"
        );
    }

    #[test]
    fn profile_scan_reports_shim_profiles_and_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut scan = ProfileScan::new(dir.path().join("os"));
        // No os/ directory yet: an empty answer the first time, then nothing new.
        assert_eq!(scan.rescan(), Some(HashMap::new()));
        assert_eq!(scan.rescan(), None);
        let write = |name: &str, yaml: &str| {
            std::fs::create_dir_all(dir.path().join("os").join(name)).unwrap();
            std::fs::write(dir.path().join("os").join(name).join("profile.yaml"), yaml).unwrap();
        };
        write("secure", "label: S\nbootloader: shim\n");
        write("plain", "label: P\n");
        let loaders = scan.rescan().expect("changed");
        assert_eq!(loaders.len(), 1);
        assert_eq!(loaders.get("secure"), Some(&BootLoader::Shim));
        assert_eq!(scan.rescan(), None, "nothing changed");
        write("plain", "label: P\nbootloader: shim\n");
        let loaders = scan.rescan().expect("changed");
        assert_eq!(loaders.get("plain"), Some(&BootLoader::Shim));
        // A broken file counts as the default until it is fixed.
        write("secure", "bootloader: [\n");
        let loaders = scan.rescan().expect("changed");
        assert_eq!(loaders.get("secure"), None);
        write("secure", "bootloader: shim\n");
        assert_eq!(
            scan.rescan().expect("changed").get("secure"),
            Some(&BootLoader::Shim)
        );
        std::fs::remove_dir_all(dir.path().join("os/plain")).unwrap();
        let loaders = scan.rescan().expect("changed");
        assert_eq!(loaders.len(), 1);
        assert!(!loaders.contains_key("plain"));
    }
}
