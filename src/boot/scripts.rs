//! Per-node boot scripts (reference 10.5): an iPXE script and a GRUB configuration (over
//! HTTP(S), over TFTP for Debian's signed GRUB, or inside a profile's `boot.img`) for the node's pending profile, or a script
//! that leaves the network boot so the machine boots from its disk. Pure: the caller supplies the profile and the base URL the client reached us at.

use std::fmt::Write as _;

use crate::osimage::profile::Profile;

/// The URL of a profile's directory, e.g. `http://10.0.0.1:80/confluent-public/os/rhel9`.
pub fn profile_url(base: &str, profile: &str) -> String {
    format!("{base}/confluent-public/os/{profile}")
}

/// Keep a value on one line of a script: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// iPXE: load the kernel with its arguments and every initramfs, then boot. Each initramfs is
/// named and listed as `initrd=<name>` so an EFI-stub kernel finds it too.
pub fn ipxe(profile: &Profile, node: &str, base: &str) -> String {
    let url = profile_url(base, &profile.name);
    let mut script = String::from("#!ipxe\n");
    let _ = writeln!(
        script,
        "echo confluent: booting {} with profile {}",
        one_line(node),
        profile.name
    );
    let mut command_line = String::new();
    for initrd in &profile.initramfs {
        let _ = write!(command_line, " initrd={initrd}");
    }
    if !profile.kernel_args.is_empty() {
        command_line.push(' ');
        command_line.push_str(&one_line(&profile.kernel_args));
    }
    let _ = writeln!(
        script,
        "kernel {url}/boot/kernel{command_line} || goto failed"
    );
    for initrd in &profile.initramfs {
        let _ = writeln!(
            script,
            "initrd --name {initrd} {url}/boot/initramfs/{initrd} || goto failed"
        );
    }
    script.push_str("boot || goto failed\n");
    script.push_str(":failed\necho confluent: network boot failed; retrying in 10 seconds\n");
    script.push_str("sleep 10\nreboot\n");
    script
}

/// iPXE for a node with nothing pending: leave iPXE so the firmware boots the next device.
pub fn ipxe_local(node: &str) -> String {
    format!(
        "#!ipxe\necho confluent: no deployment pending for {}; booting from local disk\nexit 0\n",
        one_line(node)
    )
}

/// GRUB: one menu entry loading the kernel and every initramfs over HTTP(S).
/// `host` is `address[:port]` as the client reached us; `secure` picks `https`.
pub fn grub(profile: &Profile, host: &str, secure: bool) -> String {
    let scheme = if secure { "https" } else { "http" };
    grub_entry(
        profile,
        &format!("({scheme},{host})/confluent-public/os/{}", profile.name),
    )
}

/// The TFTP name under which a profile's `boot/` directory is served: `os/<profile>/boot/`.
pub fn tftp_profile_path(profile: &str) -> String {
    format!("os/{profile}")
}

/// GRUB, served over TFTP: the same entry as [`grub`], loading the kernel and every initramfs
/// over TFTP from the server GRUB was loaded from (`$net_default_server`), because Debian's
/// signed network GRUB has no HTTP client (and under Secure Boot cannot load one).
pub fn grub_tftp(profile: &Profile) -> String {
    grub_entry(
        profile,
        &format!(
            "(tftp,${{net_default_server}})/{}",
            tftp_profile_path(&profile.name)
        ),
    )
}

/// GRUB inside `boot.img` ([`super::image`]): the same entry as [`grub`], loading the kernel and
/// every initramfs from the image GRUB itself was loaded from (its `$root`), without the network.
pub fn grub_image(profile: &Profile) -> String {
    grub_entry(profile, "")
}

/// One menu entry; `root` is the GRUB path of the profile directory (holding `boot/`).
fn grub_entry(profile: &Profile, root: &str) -> String {
    let mut config = String::from("set timeout=0\n");
    let _ = writeln!(
        config,
        "menuentry '{}' {{",
        one_line(&profile.label).replace('\'', "")
    );
    let mut linux = format!("    linux {root}/boot/kernel");
    if !profile.kernel_args.is_empty() {
        linux.push(' ');
        linux.push_str(&one_line(&profile.kernel_args));
    }
    config.push_str(&linux);
    config.push('\n');
    if !profile.initramfs.is_empty() {
        config.push_str("    initrd");
        for initrd in &profile.initramfs {
            let _ = write!(config, " {root}/boot/initramfs/{initrd}");
        }
        config.push('\n');
    }
    config.push_str("}\n");
    config
}

/// GRUB for a node with nothing pending: return to the firmware's boot order.
pub fn grub_local(node: &str) -> String {
    format!(
        "echo 'confluent: no deployment pending for {}; booting from local disk'\nexit\n",
        one_line(node).replace('\'', "")
    )
}

/// GRUB configuration that chains to the per-MAC configuration, over TFTP from the server GRUB
/// was loaded from (`$net_default_server`, `$net_default_mac`); served over TFTP wherever
/// GRUB looks for its `grub.cfg`. TFTP, not HTTP: Debian's signed network GRUB has no `http`
/// module built in, and under Secure Boot it cannot load one.
pub fn grub_chain() -> String {
    "configfile (tftp,${net_default_server})/boot/by-mac/${net_default_mac}/grub.cfg\n".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            name: "rocky-9.4-x86_64-default".into(),
            label: "Rocky 9.4 (default)".into(),
            kernel_args: "quiet console=ttyS0\nrd.break".into(),
            initramfs: vec!["addons.cpio".into(), "distribution".into()],
            boot_loader: crate::osimage::profile::BootLoader::Ipxe,
        }
    }

    #[test]
    fn ipxe_script_loads_kernel_arguments_and_every_initrd() {
        let script = ipxe(&profile(), "n1", "http://10.0.0.1:8080");
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains(
            "kernel http://10.0.0.1:8080/confluent-public/os/rocky-9.4-x86_64-default/boot/kernel initrd=addons.cpio initrd=distribution quiet console=ttyS0 rd.break || goto failed\n"
        ));
        assert!(script.contains("initrd --name addons.cpio http://10.0.0.1:8080/confluent-public/os/rocky-9.4-x86_64-default/boot/initramfs/addons.cpio"));
        assert!(script.contains("initrd --name distribution "));
        assert!(
            script.find("addons.cpio http").unwrap() < script.find("distribution http").unwrap()
        );
        assert!(script.contains("\nboot || goto failed\n"));
    }

    #[test]
    fn grub_config_has_one_entry_with_linux_and_initrd() {
        let config = grub(&profile(), "10.0.0.1:8443", true);
        assert!(config.starts_with("set timeout=0\n"));
        assert!(config.contains("menuentry 'Rocky 9.4 (default)' {"));
        assert!(config.contains(
            "linux (https,10.0.0.1:8443)/confluent-public/os/rocky-9.4-x86_64-default/boot/kernel quiet console=ttyS0 rd.break\n"
        ));
        assert!(config.contains("initrd (https,10.0.0.1:8443)/confluent-public/os/rocky-9.4-x86_64-default/boot/initramfs/addons.cpio (https,"));
    }

    #[test]
    fn grub_chains_to_the_per_mac_configuration_over_tftp() {
        assert_eq!(
            grub_chain(),
            "configfile (tftp,${net_default_server})/boot/by-mac/${net_default_mac}/grub.cfg\n"
        );
    }

    #[test]
    fn grub_over_tftp_loads_from_the_profile_path_the_tftp_server_maps() {
        let config = grub_tftp(&profile());
        assert!(config.contains(
            "linux (tftp,${net_default_server})/os/rocky-9.4-x86_64-default/boot/kernel quiet console=ttyS0 rd.break\n"
        ));
        assert!(config.contains(
            "initrd (tftp,${net_default_server})/os/rocky-9.4-x86_64-default/boot/initramfs/addons.cpio (tftp,${net_default_server})/os/rocky-9.4-x86_64-default/boot/initramfs/distribution\n"
        ));
        assert!(!config.contains("http"));
    }

    #[test]
    fn grub_in_the_boot_image_loads_from_its_own_root() {
        let config = grub_image(&profile());
        assert!(config.contains("menuentry 'Rocky 9.4 (default)' {"));
        assert!(config.contains("\n    linux /boot/kernel quiet console=ttyS0 rd.break\n"));
        assert!(
            config.contains(
                "\n    initrd /boot/initramfs/addons.cpio /boot/initramfs/distribution\n"
            )
        );
        assert!(!config.contains("http") && !config.contains("tftp"));
    }

    #[test]
    fn nothing_pending_exits_to_local_boot() {
        assert!(ipxe_local("n1\nchain http://evil/").contains("exit 0"));
        assert!(!ipxe_local("n1\nchain http://evil/").contains("\nchain"));
        assert!(grub_local("n1").contains("\nexit\n"));
    }
}
