//! The minimal shape of an OS profile (reference 11.3): a directory
//! `lib/public/os/<profile>/` holding `profile.yaml` (`label`, `kernelargs`) and `boot/`
//! (`kernel`, `initramfs/*`, optionally `efi/boot/BOOTX64.EFI` and `grubx64.efi`).
//! Importing distributions and stock profiles belong to the OS image service.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What `profile.yaml` may say (unknown keys are kept for other readers and ignored here).
#[derive(Debug, Default, Deserialize)]
struct ProfileFile {
    label: Option<String>,
    kernelargs: Option<String>,
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
    let file: ProfileFile = if text.trim().is_empty() {
        ProfileFile::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|error| ProfileError::Parse {
            path: yaml.clone(),
            message: error.to_string(),
        })?
    };
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
    })
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
}
