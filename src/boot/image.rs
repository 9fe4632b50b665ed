//! `boot.img`: the disk image that UEFI HTTP boot of a `bootloader: shim` profile downloads
//! (reference 10.5). Debian's signed network GRUB has no HTTP client, so over HTTP(S) the whole
//! Secure Boot chain travels in one FAT image: the firmware mounts it as a RAM disk and runs its
//! removable-media loader, shim, which loads GRUB next to itself, which reads its configuration,
//! the kernel and the initramfs from the same image, without the network.
//!
//! Layout of the image (a FAT file system without a partition table, as `mkfs.fat` makes it):
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI   x86_64/shimx64.efi     (and/or BOOTAA64.EFI, aarch64/shimaa64.efi)
//! EFI/BOOT/grubx64.efi   x86_64/grubx64.efi     (and/or grubaa64.efi,  aarch64/grubaa64.efi)
//! grub/grub.cfg          the profile's GRUB configuration, loading from the image itself
//! boot/kernel            the profile's boot/kernel
//! boot/initramfs/*       the profile's boot/initramfs/*
//! ```
//!
//! `grub/grub.cfg` because Debian's signed GRUB (`grubnetx64.efi`, `grubnetaa64.efi`) embeds the
//! prefix `/grub` on the device it was loaded from and the configuration
//! `normal (memdisk)/grub.cfg`, whose memdisk `grub.cfg` sources `$prefix/x86_64-efi/grub.cfg`
//! (`arm64-efi` on ARM64) if it exists, else `$prefix/grub.cfg`.
//!
//! Images are cached under `lib/cache/boot-images/` (not served raw), one `<profile>.img` per
//! profile with a `<profile>.stamp` listing the size, modification time and inode of every
//! input; a request whose inputs changed rebuilds the image. Building happens on the blocking
//! pool, at most once at a time per profile. This module must not serve anything itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BootSetupError, scripts};
use crate::fsroot::{ConfinedOpenError, ConfinedRoot};
use crate::osimage::profile::{self, BootLoader, Profile, ProfileError};

/// Bumped when the layout or the GRUB configuration of images changes, so cached images of an
/// older daemon are rebuilt.
const IMAGE_FORMAT: u32 = 1;

/// FAT cluster size: large enough that copying a file writes big chunks.
const CLUSTER: u64 = 4096;

/// The Secure Boot loaders of one architecture: where they are under the TFTP root and the
/// names they get in the image.
struct LoaderPair {
    shim: &'static str,
    grub: &'static str,
    /// The removable-media path the firmware boots from a disk without boot entries.
    removable: &'static str,
    /// Shim loads GRUB by this name from its own directory.
    grub_name: &'static str,
}

const LOADER_PAIRS: [LoaderPair; 2] = [
    LoaderPair {
        shim: "x86_64/shimx64.efi",
        grub: "x86_64/grubx64.efi",
        removable: "EFI/BOOT/BOOTX64.EFI",
        grub_name: "EFI/BOOT/grubx64.efi",
    },
    LoaderPair {
        shim: "aarch64/shimaa64.efi",
        grub: "aarch64/grubaa64.efi",
        removable: "EFI/BOOT/BOOTAA64.EFI",
        grub_name: "EFI/BOOT/grubaa64.efi",
    },
];

/// Where GRUB finds its configuration in the image (see the module documentation).
pub const GRUB_CONFIG_PATH: &str = "grub/grub.cfg";

#[derive(Debug, thiserror::Error)]
pub enum BootImageError {
    #[error(transparent)]
    Profile(ProfileError),
    #[error("profile {0} does not say bootloader: shim, so it has no boot image")]
    NotShim(String),
    #[error(
        "no Secure Boot loaders in the TFTP root (x86_64/shimx64.efi and x86_64/grubx64.efi, or aarch64/shimaa64.efi and aarch64/grubaa64.efi; see bootloaders/install.sh)"
    )]
    NoLoaders,
    #[error("{} is not a file inside the allowed directories", path.display())]
    Refused { path: PathBuf },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the boot image {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the boot image builder task failed")]
    Task,
}

impl BootImageError {
    /// What a booting machine (or its operator reading the firmware's screen) is told: what is
    /// missing, never a server path or OS error (those go to the log and the node's event).
    pub fn client_message(&self) -> String {
        match self {
            BootImageError::Profile(error) => error.client_message(),
            BootImageError::NotShim(_) | BootImageError::NoLoaders => self.to_string(),
            BootImageError::Refused { .. } => {
                "an input of the boot image is not a file inside the allowed directories".into()
            }
            BootImageError::Read { .. } | BootImageError::Write { .. } | BootImageError::Task => {
                "the boot image could not be built".into()
            }
        }
    }

    /// Whether the request asked for something that does not exist (as opposed to a failure
    /// of this server).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            BootImageError::Profile(_)
                | BootImageError::NotShim(_)
                | BootImageError::NoLoaders
                | BootImageError::Refused { .. }
        )
    }
}

/// One file copied into the image.
#[derive(Debug)]
struct Input {
    /// Path inside the image.
    image_path: String,
    /// Real path of the source, for the stamp.
    source: PathBuf,
    /// The source, opened under its confined root when it was stamped: the image is written
    /// from this very file, never from a path opened again.
    file: File,
    size: u64,
    /// Modification time (ns) and inode, for the stamp.
    modified_ns: i128,
    inode: u64,
}

/// Everything an image is made of, and the stamp that identifies this version of it.
#[derive(Debug)]
struct Inputs {
    profile: Profile,
    files: Vec<Input>,
    stamp: String,
}

/// Where the inputs of images are.
#[derive(Debug)]
struct Sources {
    /// `lib/public`, whose symlinks may lead into `lib/distributions`; profiles are under
    /// `os/`.
    public: ConfinedRoot,
    /// `lib/tftpboot`.
    loaders: ConfinedRoot,
    /// The cache directory.
    dir: PathBuf,
}

/// The cache of boot images, one per profile.
#[derive(Debug)]
pub struct BootImages {
    sources: Arc<Sources>,
    /// The cache directory, the one root images are served from.
    root: ConfinedRoot,
    /// One lock per profile name: held while that profile's image is checked and built.
    building: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    builds: Arc<AtomicU64>,
}

impl BootImages {
    /// Create the cache directory `dir` if needed. Inputs come from `public` (profiles under
    /// `os/`) and `loaders`.
    pub fn new(
        dir: PathBuf,
        public: ConfinedRoot,
        loaders: ConfinedRoot,
    ) -> Result<BootImages, BootSetupError> {
        super::create_dir(&dir)?;
        let root = ConfinedRoot::new(&dir).map_err(BootSetupError::Root)?;
        Ok(BootImages {
            sources: Arc::new(Sources {
                public,
                loaders,
                dir,
            }),
            root,
            building: Default::default(),
            builds: Default::default(),
        })
    }

    /// The cache directory (`lib/cache/boot-images`).
    pub fn dir(&self) -> &Path {
        &self.sources.dir
    }

    /// The cache directory as a confined root, for serving.
    pub fn root(&self) -> &ConfinedRoot {
        &self.root
    }

    /// Images built since start-up.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// The file name (under [`BootImages::dir`]) of the current image of `profile`, built
    /// first if it is missing or any of its inputs changed.
    pub async fn ensure(&self, profile: &str) -> Result<String, BootImageError> {
        let file_name = format!("{profile}.img");
        // The common case, without waiting for a build of this profile: nothing changed.
        let sources = self.sources.clone();
        let name = profile.to_string();
        let fresh = tokio::task::spawn_blocking(move || {
            let inputs = sources.gather(&name)?;
            Ok::<_, BootImageError>(sources.is_current(&name, &inputs))
        })
        .await
        .map_err(|_| BootImageError::Task)??;
        if fresh {
            return Ok(file_name);
        }
        let lock = self
            .building
            .lock()
            .entry(profile.to_string())
            .or_default()
            .clone();
        // INVARIANT: one build per profile at a time. The guard moves into the blocking task,
        // so a request that goes away while the image is being built does not let another
        // build start beside the running one.
        let guard = lock.lock_owned().await;
        let sources = self.sources.clone();
        let builds = self.builds.clone();
        let name = profile.to_string();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            // Gathered again: the files may have changed, or another request built the image
            // while this one waited.
            let inputs = sources.gather(&name)?;
            if !sources.is_current(&name, &inputs) {
                let started = std::time::Instant::now();
                sources.build(&name, &inputs)?;
                builds.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    profile = %name,
                    files = inputs.files.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "boot image built"
                );
            }
            Ok::<_, BootImageError>(())
        })
        .await
        .map_err(|_| BootImageError::Task)??;
        Ok(file_name)
    }
}

/// Open and stat `relative` under `root` (following only the symlinks the root allows).
fn input(image_path: String, root: &ConfinedRoot, relative: &str) -> Result<Input, BootImageError> {
    let path = root.path().join(relative);
    let opened = root.open_file(relative).map_err(|error| match error {
        ConfinedOpenError::NotFound => BootImageError::Read {
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
            path: path.clone(),
        },
        ConfinedOpenError::Invalid | ConfinedOpenError::Escapes | ConfinedOpenError::NotAFile => {
            BootImageError::Refused { path: path.clone() }
        }
        ConfinedOpenError::Io(source) => BootImageError::Read {
            path: path.clone(),
            source,
        },
    })?;
    let metadata = &opened.metadata;
    Ok(Input {
        image_path,
        source: opened.path,
        size: metadata.len(),
        modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
            + i128::from(metadata.mtime_nsec()),
        inode: metadata.ino(),
        file: opened.file,
    })
}

impl Sources {
    fn image_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.img"))
    }

    fn stamp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.stamp"))
    }

    /// Read the profile and stat every input. Blocking.
    fn gather(&self, name: &str) -> Result<Inputs, BootImageError> {
        let profile =
            profile::load(&self.public.path().join("os"), name).map_err(BootImageError::Profile)?;
        if profile.boot_loader != BootLoader::Shim {
            return Err(BootImageError::NotShim(name.to_string()));
        }
        let mut files = Vec::new();
        for pair in &LOADER_PAIRS {
            let present = |relative: &str| {
                self.loaders
                    .metadata(relative)
                    .is_ok_and(|metadata| metadata.is_file())
            };
            if present(pair.shim) && present(pair.grub) {
                files.push(input(pair.removable.into(), &self.loaders, pair.shim)?);
                files.push(input(pair.grub_name.into(), &self.loaders, pair.grub)?);
            }
        }
        if files.is_empty() {
            return Err(BootImageError::NoLoaders);
        }
        let dir = format!("os/{name}");
        files.push(input(
            "boot/kernel".into(),
            &self.public,
            &format!("{dir}/boot/kernel"),
        )?);
        for initramfs in &profile.initramfs {
            files.push(input(
                format!("boot/initramfs/{initramfs}"),
                &self.public,
                &format!("{dir}/boot/initramfs/{initramfs}"),
            )?);
        }
        // profile.yaml is not copied, but the GRUB configuration comes from it.
        let yaml = input(String::new(), &self.public, &format!("{dir}/profile.yaml"))?;
        let mut stamp = format!("confluent boot image format {IMAGE_FORMAT}\n");
        for file in files.iter().chain(std::iter::once(&yaml)) {
            stamp.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                file.image_path,
                file.source.display(),
                file.size,
                file.modified_ns,
                file.inode
            ));
        }
        Ok(Inputs {
            profile,
            files,
            stamp,
        })
    }

    /// Whether the cached image was built from exactly these inputs.
    fn is_current(&self, name: &str, inputs: &Inputs) -> bool {
        self.image_path(name).is_file()
            && std::fs::read_to_string(self.stamp_path(name))
                .is_ok_and(|stamp| stamp == inputs.stamp)
    }

    /// Write the image to a temporary file, then put it and its stamp in place. Blocking; the
    /// caller holds the profile's build lock.
    fn build(&self, name: &str, inputs: &Inputs) -> Result<(), BootImageError> {
        let final_path = self.image_path(name);
        let temporary = self.dir.join(format!(".{name}.img.tmp"));
        let written =
            write_image(&temporary, inputs).and_then(|()| std::fs::rename(&temporary, &final_path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(BootImageError::Write {
                path: final_path,
                source,
            });
        }
        // The stamp goes last: a crash before it leaves a stamp that does not match, and the
        // next request builds again.
        let stamp_temporary = self.dir.join(format!(".{name}.stamp.tmp"));
        std::fs::write(&stamp_temporary, &inputs.stamp)
            .and_then(|()| std::fs::rename(&stamp_temporary, self.stamp_path(name)))
            .map_err(|source| BootImageError::Write {
                path: self.stamp_path(name),
                source,
            })
    }
}

fn round_up(value: u64, unit: u64) -> u64 {
    value.div_ceil(unit) * unit
}

/// The image size for these inputs: the files in whole clusters, the GRUB configuration and
/// directories, plus room for the two FATs, the root directory and slack.
fn image_size(inputs: &Inputs, grub_config: &str) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let directories = 6;
    let data = inputs
        .files
        .iter()
        .map(|file| round_up(file.size, CLUSTER))
        .sum::<u64>()
        + round_up(grub_config.len() as u64, CLUSTER)
        + directories * CLUSTER;
    round_up(data + data / 32 + 2 * MIB, MIB)
}

/// Format `path` as FAT and copy the inputs into it.
fn write_image(path: &Path, inputs: &Inputs) -> std::io::Result<()> {
    let grub_config = scripts::grub_image(&inputs.profile);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(image_size(inputs, &grub_config))?;
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new()
            .bytes_per_cluster(CLUSTER as u32)
            .volume_label(*b"CONFLUENT  "),
    )?;
    file.seek(SeekFrom::Start(0))?;
    {
        let filesystem = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
        {
            let root = filesystem.root_dir();
            for directory in ["EFI", "EFI/BOOT", "grub", "boot", "boot/initramfs"] {
                root.create_dir(directory)?;
            }
            root.create_file(GRUB_CONFIG_PATH)?
                .write_all(grub_config.as_bytes())?;
            for input in &inputs.files {
                let mut source = &input.file;
                source.seek(SeekFrom::Start(0))?;
                let mut target = root.create_file(&input.image_path)?;
                std::io::copy(&mut source, &mut target)?;
            }
        }
        filesystem.unmount()?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    struct Fixture {
        _dir: tempfile::TempDir,
        lib: PathBuf,
        images: BootImages,
    }

    fn fixture(bootloader: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        let profile = lib.join("public/os/p1");
        std::fs::create_dir_all(profile.join("boot/initramfs")).unwrap();
        std::fs::create_dir_all(lib.join("distributions")).unwrap();
        std::fs::create_dir_all(lib.join("tftpboot/x86_64")).unwrap();
        std::fs::write(
            profile.join("profile.yaml"),
            format!("label: P One\nkernelargs: console=ttyS0\nbootloader: {bootloader}\n"),
        )
        .unwrap();
        // A kernel larger than a cluster and not a multiple of it.
        let kernel: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
        std::fs::write(profile.join("boot/kernel"), kernel).unwrap();
        std::fs::write(profile.join("boot/initramfs/b.cpio"), b"bb").unwrap();
        std::fs::write(profile.join("boot/initramfs/a-long-name.cpio"), b"aa").unwrap();
        std::fs::write(lib.join("tftpboot/x86_64/shimx64.efi"), b"shim x64").unwrap();
        std::fs::write(lib.join("tftpboot/x86_64/grubx64.efi"), b"grub x64").unwrap();
        let public = ConfinedRoot::with_link_targets(
            &lib.join("public"),
            &[&lib.join("public"), &lib.join("distributions")],
        )
        .unwrap();
        let loaders = ConfinedRoot::new(&lib.join("tftpboot")).unwrap();
        let images = BootImages::new(lib.join("cache/boot-images"), public, loaders).unwrap();
        Fixture {
            _dir: dir,
            lib,
            images,
        }
    }

    fn read_file(image: &Path, path: &str) -> Vec<u8> {
        let file = File::open(image).unwrap();
        let filesystem = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
        let mut content = Vec::new();
        filesystem
            .root_dir()
            .open_file(path)
            .unwrap_or_else(|error| panic!("{path}: {error}"))
            .read_to_end(&mut content)
            .unwrap();
        content
    }

    #[tokio::test]
    async fn the_image_holds_shim_grub_its_configuration_kernel_and_initramfs() {
        let fixture = fixture("shim");
        let name = fixture.images.ensure("p1").await.unwrap();
        assert_eq!(name, "p1.img");
        let image = fixture.images.dir().join(&name);
        let profile = fixture.lib.join("public/os/p1");
        assert_eq!(read_file(&image, "EFI/BOOT/BOOTX64.EFI"), b"shim x64");
        assert_eq!(read_file(&image, "EFI/BOOT/grubx64.efi"), b"grub x64");
        assert_eq!(
            read_file(&image, "boot/kernel"),
            std::fs::read(profile.join("boot/kernel")).unwrap()
        );
        assert_eq!(read_file(&image, "boot/initramfs/a-long-name.cpio"), b"aa");
        assert_eq!(read_file(&image, "boot/initramfs/b.cpio"), b"bb");
        let config = String::from_utf8(read_file(&image, "grub/grub.cfg")).unwrap();
        assert!(
            config.contains("\n    linux /boot/kernel console=ttyS0\n"),
            "{config}"
        );
        assert!(
            config
                .contains("\n    initrd /boot/initramfs/a-long-name.cpio /boot/initramfs/b.cpio\n"),
            "{config}"
        );
        // No ARM64 loaders installed: no ARM64 entry.
        let filesystem =
            fatfs::FileSystem::new(File::open(&image).unwrap(), fatfs::FsOptions::new()).unwrap();
        assert!(
            filesystem
                .root_dir()
                .open_file("EFI/BOOT/BOOTAA64.EFI")
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_image_is_rebuilt_only_when_an_input_changes() {
        let fixture = fixture("shim");
        fixture.images.ensure("p1").await.unwrap();
        fixture.images.ensure("p1").await.unwrap();
        assert_eq!(fixture.images.builds(), 1);
        let image = fixture.images.dir().join("p1.img");
        let first_inode = std::fs::metadata(&image).unwrap().ino();
        // A new initramfs file, a changed boot loader, a changed kernel command line.
        let profile = fixture.lib.join("public/os/p1");
        std::fs::write(profile.join("boot/initramfs/c.cpio"), b"cc").unwrap();
        fixture.images.ensure("p1").await.unwrap();
        assert_eq!(fixture.images.builds(), 2);
        assert_eq!(read_file(&image, "boot/initramfs/c.cpio"), b"cc");
        assert_ne!(std::fs::metadata(&image).unwrap().ino(), first_inode);
        std::fs::write(
            fixture.lib.join("tftpboot/x86_64/grubx64.efi"),
            b"grub x64 v2",
        )
        .unwrap();
        fixture.images.ensure("p1").await.unwrap();
        assert_eq!(read_file(&image, "EFI/BOOT/grubx64.efi"), b"grub x64 v2");
        std::fs::write(
            profile.join("profile.yaml"),
            "kernelargs: console=ttyS1 quiet\nbootloader: shim\n",
        )
        .unwrap();
        fixture.images.ensure("p1").await.unwrap();
        assert_eq!(fixture.images.builds(), 4);
        let config = String::from_utf8(read_file(&image, "grub/grub.cfg")).unwrap();
        assert!(
            config.contains("linux /boot/kernel console=ttyS1 quiet\n"),
            "{config}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_build_one_image() {
        let fixture = Arc::new(fixture("shim"));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let fixture = fixture.clone();
            tasks.push(tokio::spawn(async move {
                fixture.images.ensure("p1").await.unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "p1.img");
        }
        assert_eq!(fixture.images.builds(), 1);
    }

    #[tokio::test]
    async fn ipxe_profiles_missing_loaders_and_escaping_links_have_no_image() {
        let fixture = fixture("ipxe");
        let error = fixture.images.ensure("p1").await.unwrap_err();
        assert!(matches!(error, BootImageError::NotShim(_)), "{error}");
        assert!(error.is_not_found());

        let fixture = self::fixture("shim");
        std::fs::remove_file(fixture.lib.join("tftpboot/x86_64/grubx64.efi")).unwrap();
        let error = fixture.images.ensure("p1").await.unwrap_err();
        assert!(matches!(error, BootImageError::NoLoaders), "{error}");

        let fixture = self::fixture("shim");
        let secret = fixture.lib.join("secret.cpio");
        std::fs::write(&secret, b"secret").unwrap();
        std::os::unix::fs::symlink(
            &secret,
            fixture.lib.join("public/os/p1/boot/initramfs/leak.cpio"),
        )
        .unwrap();
        let error = fixture.images.ensure("p1").await.unwrap_err();
        assert!(matches!(error, BootImageError::Refused { .. }), "{error}");

        let error = fixture.images.ensure("missing").await.unwrap_err();
        assert!(matches!(error, BootImageError::Profile(_)), "{error}");
        assert!(!fixture.images.dir().join("missing.img").exists());
    }
}
