//! Which boot phase a file a booting machine asks for stands for, by its name: boot loaders,
//! boot scripts, and the kernel and initramfs of the profile layout (`boot/kernel`,
//! `boot/initramfs/*`). The TFTP and HTTP services report what they serve with it, and the
//! boot phase metrics measure the time between phases.
//!
//! **API boundary:** pure; names only, no file system.

pub use crate::metrics::BootPhase;

/// The phase `path` (a TFTP name or a URL path, with or without a leading `/`) belongs to,
/// if it is a boot file at all.
pub fn of_file(path: &str) -> Option<BootPhase> {
    let path = path.trim_end_matches('/');
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let directory = path.get(..path.len() - name.len()).unwrap_or_default();
    if directory.ends_with("boot/initramfs/") {
        Some(BootPhase::Initramfs)
    } else if name == "kernel" && directory.ends_with("boot/") {
        Some(BootPhase::Kernel)
    } else if name == "boot.ipxe" || name == "grub.cfg" || name.starts_with("grub.cfg-") {
        Some(BootPhase::Script)
    } else if name.ends_with(".efi") || name.ends_with(".kpxe") || name == "boot.img" {
        Some(BootPhase::Loader)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_files_map_to_their_phase() {
        for (path, phase) in [
            ("x86_64/undionly.kpxe", Some(BootPhase::Loader)),
            ("/x86_64/shimx64.efi", Some(BootPhase::Loader)),
            (
                "boot/by-mac/52:54:00:00:00:01/x86_64.efi",
                Some(BootPhase::Loader),
            ),
            (
                "boot/by-mac/52:54:00:00:00:01/boot.img",
                Some(BootPhase::Loader),
            ),
            (
                "boot/by-mac/52:54:00:00:00:01/boot.ipxe",
                Some(BootPhase::Script),
            ),
            ("grub/grub.cfg", Some(BootPhase::Script)),
            ("grub.cfg-01-52-54-00-00-00-01", Some(BootPhase::Script)),
            ("os/p1/boot/kernel", Some(BootPhase::Kernel)),
            (
                "/confluent-public/os/p1/boot/initramfs/a.cpio",
                Some(BootPhase::Initramfs),
            ),
            ("os/p1/profile.yaml", None),
            ("kernel", None),
        ] {
            assert_eq!(of_file(path), phase, "{path}");
        }
    }
}
