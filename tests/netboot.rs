//! Machines that really boot: a QEMU VM with no disk network-boots from `confluentd` (DHCP,
//! TFTP and HTTP on a bridge in a network namespace made by the test) into a Linux kernel and a
//! busybox initramfs served from an OS profile, and the initramfs prints a marker on the serial
//! console, which the test reads. Needs root, QEMU, OVMF and the Debian archive (the kernel,
//! busybox and iPXE come from Debian packages: `tests/support/netboot-kit.sh`,
//! `bootloaders/install.sh`).
//!
//! QEMU's NIC option ROM is iPXE, so the BIOS chain is ROM (iPXE) -> per-node script over HTTP
//! -> kernel; the TFTP stage is exercised by OVMF's native PXE, which fetches `ipxe.efi`.
//!
//! The Secure Boot chain (a profile with `bootloader: shim`) boots OVMF with Secure Boot on
//! and Microsoft's keys enrolled: PXE -> `x86_64/shimx64.efi` (Microsoft-signed) ->
//! `x86_64/grubx64.efi` (Debian-signed) -> GRUB configuration over TFTP -> Debian's signed
//! kernel and the initramfs over TFTP; and UEFI HTTP boot -> the profile's `boot.img` (a FAT
//! image the firmware mounts as a RAM disk) -> shim -> GRUB -> kernel and initramfs from the
//! image.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::DaemonProcess;
use common::net::{KillOnDrop, Namespaces, require, require_root, run};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

const PROFILE: &str = "netboot-test";

/// The kernel and initramfs, built once per machine (cached).
fn kit() -> PathBuf {
    let dir = std::env::var_os("CONFLUENT_NETBOOT_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/confluent-tests/netboot"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/netboot-kit.sh");
    let status = Command::new(&script)
        .arg(&dir)
        .status()
        .expect("run tests/support/netboot-kit.sh");
    assert!(status.success(), "tests/support/netboot-kit.sh failed");
    dir
}

/// How the test node boots: its profile's `bootloader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// The default: iPXE, which fetches the per-node script over HTTP.
    Ipxe,
    /// `bootloader: shim`: shim, GRUB, and the GRUB configuration and files over TFTP.
    Shim,
    /// `bootloader: shim` booted by UEFI HTTP boot: `boot.img` holding shim, GRUB, its
    /// configuration, the kernel and the initramfs.
    ShimImage,
}

/// A profile with the kit's kernel and initramfs; the marker goes on the kernel command line.
fn install_profile(state: &Path, marker: &str) {
    install_profile_for(state, marker, Chain::Ipxe);
}

fn install_profile_for(state: &Path, marker: &str, chain: Chain) {
    let kit = kit();
    let boot = state.join("lib/public/os").join(PROFILE).join("boot");
    std::fs::create_dir_all(boot.join("initramfs")).unwrap();
    std::fs::copy(kit.join("kernel"), boot.join("kernel")).unwrap();
    std::fs::copy(kit.join("initramfs.cpio"), boot.join("initramfs/test.cpio")).unwrap();
    std::fs::write(
        state.join("lib/public/os").join(PROFILE).join("profile.yaml"),
        match chain {
            Chain::Ipxe => format!(
                "label: Network boot test\nkernelargs: console=ttyS0 quiet panic=-1 confluent_marker={marker}\n"
            ),
            // Not quiet: the test reads the kernel's Secure Boot messages on the console.
            Chain::Shim | Chain::ShimImage => format!(
                "label: Secure Boot test\nkernelargs: console=ttyS0 panic=-1 confluent_marker={marker}\nbootloader: shim\n"
            ),
        },
    )
    .unwrap();
}

fn install_boot_loaders(state: &Path, chain: Chain) {
    let packages: &[&str] = match chain {
        Chain::Ipxe => &["--only", "ipxe"],
        Chain::Shim | Chain::ShimImage => {
            &["--only", "shim-signed", "--only", "grub-efi-amd64-signed"]
        }
    };
    install_boot_loader_packages(state, packages);
}

fn install_boot_loader_packages(state: &Path, packages: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bootloaders/install.sh");
    let output = Command::new(&script)
        .args(packages)
        .arg(state.join("lib/tftpboot"))
        .output()
        .expect("run bootloaders/install.sh");
    assert!(
        output.status.success(),
        "bootloaders/install.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A namespace with a bridge (the server's address on it) and a tap for QEMU on the bridge.
struct Lab {
    namespace: String,
    bridge: String,
    tap: String,
    _namespaces: Namespaces,
}

impl Lab {
    fn new(subnet_prefix: &str) -> Lab {
        require_root("the network boot tests create namespaces and bind ports 67 and 69");
        require("ip", "iproute2");
        require("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu ovmf");
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let namespace = format!("cfboot{id}");
        let bridge = format!("nbr{id}");
        let tap = format!("ntap{id}");
        run("ip", &["netns", "add", &namespace]);
        let namespaces = Namespaces(vec![namespace.clone()]);
        let ip = |arguments: &[&str]| {
            let mut all = vec!["-n", namespace.as_str()];
            all.extend_from_slice(arguments);
            run("ip", &all);
        };
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{subnet_prefix}.1/24"),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        ip(&["link", "set", &tap, "master", &bridge]);
        ip(&["link", "set", &tap, "up"]);
        Lab {
            namespace,
            bridge,
            tap,
            _namespaces: namespaces,
        }
    }

    fn start_daemon(&self, state: &Path) -> DaemonProcess {
        let dhcp = format!("{}=full", self.bridge);
        DaemonProcess::start_wrapped(
            state,
            &["ip", "netns", "exec", &self.namespace],
            &["--dhcp", &dhcp, "--http", "0.0.0.0:0"],
        )
    }

    /// Start QEMU (TCG: this machine's KVM cannot run firmware) with its serial console in
    /// `serial`; it exits when the guest powers off.
    fn start_vm(&self, serial: &Path, extra: &[&str]) -> KillOnDrop {
        self.start_vm_with("qemu-system-x86_64", &["-boot", "n"], serial, extra)
    }

    fn start_vm_with(
        &self,
        program: &str,
        boot: &[&str],
        serial: &Path,
        extra: &[&str],
    ) -> KillOnDrop {
        let netdev = format!("tap,id=n0,ifname={},script=no,downscript=no", self.tap);
        let log = std::fs::File::create(serial).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, program])
            .args(["-accel", "tcg", "-nographic", "-no-reboot"])
            .args(boot)
            .args(["-netdev", &netdev])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run qemu");
        KillOnDrop(child)
    }
}

/// Wait until the serial log contains `needle` (or the VM exits, or time runs out).
fn wait_for_serial(serial: &Path, vm: &mut KillOnDrop, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default()).to_string();
        if text.contains(needle) {
            return text;
        }
        let exited = matches!(vm.0.try_wait(), Ok(Some(_)));
        // GRUB's prompt: it found no configuration and will wait there forever.
        let grub_prompt = text.contains("grub> ");
        assert!(
            !exited && !grub_prompt && Instant::now() < deadline,
            "{needle:?} not on the serial console ({}); last output:\n{}",
            if exited {
                "the VM exited"
            } else if grub_prompt {
                "GRUB stopped at its prompt"
            } else {
                "timed out"
            },
            tail(&text)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn ovmf(dir: &Path) -> Vec<String> {
    let variables = dir.join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &variables)
        .expect("OVMF_VARS.fd: apt-get install -y ovmf");
    vec![
        "-drive".into(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", variables.display()),
    ]
}

/// OVMF with Secure Boot enforced and Microsoft's keys enrolled (Debian's `ovmf` package):
/// the 4 MB secure-boot build needs SMM, hence q35 with `smm=on` and a secure flash.
fn ovmf_secure_boot(dir: &Path) -> Vec<String> {
    let code = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
    let variables = dir.join("OVMF_VARS_4M.ms.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", &variables)
        .expect("OVMF_VARS_4M.ms.fd: apt-get install -y ovmf");
    assert!(
        Path::new(code).is_file(),
        "{code} is missing: apt-get install -y ovmf"
    );
    [
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-global",
        "ICH9-LPC.disable_s3=1",
        "-drive",
        &format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", variables.display()),
    ]
    .map(String::from)
    .to_vec()
}

/// Define node `n1` with `mac` and the test profile pending, boot a VM with `vm_arguments` and
/// wait for the initramfs marker; the DHCP exchanges must show the boot files `offered` (with
/// `{http_port}` standing for the HTTP listener's port). Returns the serial console output.
fn boots_to_initramfs(
    subnet_prefix: &str,
    mac: &str,
    vm_arguments: &[String],
    offered: &[&str],
    limit: Duration,
) -> String {
    boots_to_initramfs_with(
        subnet_prefix,
        mac,
        vm_arguments,
        offered,
        limit,
        Chain::Ipxe,
    )
}

fn boots_to_initramfs_with(
    subnet_prefix: &str,
    mac: &str,
    vm_arguments: &[String],
    offered: &[&str],
    limit: Duration,
    chain: Chain,
) -> String {
    let lab = Lab::new(subnet_prefix);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let marker = format!("m{}", std::process::id());
    let daemon = lab.start_daemon(&state);
    install_profile_for(&state, &marker, chain);
    install_boot_loaders(&state, chain);
    let hwaddr = format!("net.eth0.hwaddr={mac}");
    let address = format!("net.eth0.ipv4_address={subnet_prefix}.21/24");
    let pending = format!("deployment.pendingprofile={PROFILE}");
    daemon.cli_ok(&[
        "nodedefine",
        "n1",
        &hwaddr,
        &address,
        &pending,
        "deployment.useinsecureprotocols=firmware",
    ]);
    let serial = dir.path().join("serial.log");
    let arguments: Vec<&str> = vm_arguments.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut vm = lab.start_vm(&serial, &arguments);
    let needle = format!("CONFLUENT-NETBOOT-REACHED-INITRAMFS marker={marker}");
    let console = wait_for_serial(&serial, &mut vm, &needle, limit);
    eprintln!(
        "reached the initramfs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let http_port = daemon.listener("http").port().to_string();
    let acknowledged: Vec<(String, String)> = daemon
        .dhcp_exchanges()
        .iter()
        .filter(|exchange| exchange["reply"] == "ACK" && exchange["node"] == "n1")
        .filter_map(|exchange| {
            Some((
                exchange["boot_file"].as_str()?.to_string(),
                exchange["reason_code"].as_str()?.to_string(),
            ))
        })
        .collect();
    let files: Vec<&String> = acknowledged.iter().map(|(file, _)| file).collect();
    for file in offered {
        let file = file.replace("{http_port}", &http_port);
        assert!(
            files.contains(&&file),
            "{file} not acknowledged to n1: {acknowledged:?}"
        );
    }
    // The firmware got shim (or the image holding it), and the exchange says the profile asked
    // for it.
    let secure_boot_file = match chain {
        Chain::Ipxe => None,
        Chain::Shim => Some("x86_64/shimx64.efi".to_string()),
        Chain::ShimImage => Some(format!(
            "http://{subnet_prefix}.1:{http_port}/boot/by-mac/{mac}/boot.img"
        )),
    };
    if let Some(secure_boot_file) = secure_boot_file {
        assert!(
            acknowledged
                .iter()
                .any(|(file, reason)| *file == secure_boot_file && reason == "secure_boot_chain"),
            "{secure_boot_file} not offered for the profile's bootloader: shim: {acknowledged:?}"
        );
    }
    // The daemon recorded what it served the node: the iPXE script over HTTP, GRUB's
    // configuration over TFTP, or the boot image over HTTP.
    let (event, outcome) = match chain {
        Chain::Ipxe => ("boot.http", "boot script"),
        Chain::Shim => ("boot.tftp", "boot script"),
        Chain::ShimImage => ("boot.http", "boot image"),
    };
    let events = |event: &str| {
        let messages = daemon
            .client()
            .request(
                "retrieve",
                "/events/log",
                serde_json::json!({"type": event, "noderange": "n1"}),
            )
            .expect("query the event log");
        format!("{messages:?}")
    };
    let messages = events(event);
    assert!(
        messages.contains(outcome),
        "no {event} event with {outcome:?} for n1: {messages}"
    );
    if chain == Chain::ShimImage {
        // Everything came in the image: nothing over TFTP.
        let tftp = events("boot.tftp");
        assert!(!tftp.contains("n1"), "n1 used TFTP: {tftp}");
    }
    daemon.stop();
    console
}

#[test]
fn bios_ipxe_rom_boots_the_pending_profile_over_http() {
    let mac = "52:54:00:71:00:01";
    boots_to_initramfs(
        "10.71.0",
        mac,
        &[
            "-m".into(),
            "512".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={mac}"),
        ],
        &["http://10.71.0.1:{http_port}/boot/by-mac/52:54:00:71:00:01/boot.ipxe"],
        Duration::from_secs(180),
    );
}

#[test]
fn uefi_http_boot_without_tftp() {
    let mac = "52:54:00:73:00:01";
    let dir = tempfile::tempdir().unwrap();
    let mut arguments = ovmf(dir.path());
    arguments.extend([
        // Skip OVMF's PXE attempts so it goes straight to HTTP boot.
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv4PXESupport,string=n".into(),
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
        "-m".into(),
        "512".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
    ]);
    boots_to_initramfs(
        "10.73.0",
        mac,
        &arguments,
        &[
            "http://10.73.0.1:{http_port}/boot/by-mac/52:54:00:73:00:01/x86_64.efi",
            "http://10.73.0.1:{http_port}/boot/by-mac/52:54:00:73:00:01/boot.ipxe",
        ],
        Duration::from_secs(300),
    );
}

#[test]
fn a_node_with_nothing_pending_is_not_network_booted() {
    let lab = Lab::new("10.74.0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let daemon = lab.start_daemon(&state);
    install_profile(&state, "unused");
    let mac = "52:54:00:74:00:01";
    let hwaddr = format!("net.eth0.hwaddr={mac}");
    daemon.cli_ok(&[
        "nodedefine",
        "idle1",
        &hwaddr,
        "net.eth0.ipv4_address=10.74.0.21/24",
        "deployment.useinsecureprotocols=firmware",
    ]);
    let serial = dir.path().join("serial.log");
    let device = format!("virtio-net-pci,netdev=n0,mac={mac}");
    let mut vm = lab.start_vm(&serial, &["-m", "256", "-device", &device]);
    // iPXE gets an address but no boot file, gives up, and the BIOS moves on to the next
    // device (there is none here).
    let text = wait_for_serial(
        &serial,
        &mut vm,
        "No bootable device",
        Duration::from_secs(180),
    );
    assert!(!text.contains("CONFLUENT-NETBOOT-REACHED-INITRAMFS"));
    let host = daemon.listener("http");
    // Its per-node script (for machines chained to it statically) says: boot from disk.
    let script = Command::new("ip")
        .args(["netns", "exec", &lab.namespace, "curl", "-sf"])
        .arg(format!(
            "http://10.74.0.1:{}/boot/by-mac/{mac}/boot.ipxe",
            host.port()
        ))
        .output()
        .expect("curl");
    let script = String::from_utf8_lossy(&script.stdout);
    assert!(script.starts_with("#!ipxe"), "{script}");
    assert!(script.contains("\nexit"), "{script}");
    daemon.stop();
}
#[test]
fn uefi_pxe_fetches_ipxe_efi_over_tftp_then_boots_over_http() {
    let mac = "52:54:00:72:00:01";
    let dir = tempfile::tempdir().unwrap();
    let mut arguments = ovmf(dir.path());
    arguments.extend([
        "-m".into(),
        "512".into(),
        "-device".into(),
        // No option ROM: OVMF's own PXE client (architecture 7) fetches ipxe.efi over TFTP.
        format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
    ]);
    let console = boots_to_initramfs(
        "10.72.0",
        mac,
        &arguments,
        &[
            "x86_64/ipxe.efi",
            "http://10.72.0.1:{http_port}/boot/by-mac/52:54:00:72:00:01/boot.ipxe",
        ],
        Duration::from_secs(300),
    );
    // The firmware's PXE really took the file over TFTP (and did not fall back to UEFI HTTP
    // boot, which would reach the same script through iPXE too).
    assert!(
        console.contains("NBP file downloaded successfully"),
        "UEFI PXE did not download ipxe.efi:\n{console}"
    );
}

#[test]
fn uefi_secure_boot_pxe_boots_shim_then_grub_then_the_signed_kernel_over_tftp() {
    let mac = "52:54:00:75:00:01";
    let dir = tempfile::tempdir().unwrap();
    let mut arguments = ovmf_secure_boot(dir.path());
    arguments.extend([
        // Only IPv4 PXE: skip the IPv6 attempt that follows a failure.
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
        "-m".into(),
        "512".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
    ]);
    let console = boots_to_initramfs_with(
        "10.75.0",
        mac,
        &arguments,
        &["x86_64/shimx64.efi"],
        Duration::from_secs(240),
        Chain::Shim,
    );
    assert!(
        console.contains("NBP file downloaded successfully"),
        "UEFI PXE did not download shim:\n{console}"
    );
    // Nothing came over HTTP: Debian's signed GRUB has no HTTP client.
    assert_secure_boot_without_grub_errors(&console);
}

/// UEFI HTTP boot with Secure Boot enforced: the firmware downloads the profile's `boot.img`,
/// mounts it as a RAM disk and boots shim from it; shim loads GRUB, which finds its
/// configuration, the signed kernel and the initramfs in the image (Debian's signed GRUB has
/// no HTTP client, so nothing after the image can come over the network).
#[test]
fn uefi_secure_boot_http_boot_loads_boot_img_with_shim_grub_and_the_signed_kernel() {
    let mac = "52:54:00:77:00:01";
    let dir = tempfile::tempdir().unwrap();
    let mut arguments = ovmf_secure_boot(dir.path());
    arguments.extend([
        // Skip OVMF's PXE attempts so it goes straight to HTTP boot.
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv4PXESupport,string=n".into(),
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
        "-m".into(),
        "768".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
    ]);
    let console = boots_to_initramfs_with(
        "10.77.0",
        mac,
        &arguments,
        &["http://10.77.0.1:{http_port}/boot/by-mac/52:54:00:77:00:01/boot.img"],
        Duration::from_secs(240),
        Chain::ShimImage,
    );
    assert_secure_boot_without_grub_errors(&console);
}

/// Secure Boot was enforced all the way (the kernel, verified by GRUB through shim, says so),
/// and GRUB reported no error.
fn assert_secure_boot_without_grub_errors(console: &str) {
    assert!(
        console.contains("Secure boot enabled"),
        "the kernel did not report Secure Boot; console:\n{console}"
    );
    assert!(
        !console.contains("error:"),
        "GRUB reported an error:\n{console}"
    );
}

/// ARM64 UEFI (Debian's AAVMF with Microsoft's keys enrolled) network-boots a node whose
/// profile asks for shim: the firmware gets `aarch64/shimaa64.efi` over TFTP, shim loads
/// `grubaa64.efi`, and GRUB fetches the node's configuration over TFTP. The kit has no ARM64
/// kernel, so the test ends when GRUB has its configuration.
#[test]
fn aarch64_uefi_pxe_gets_shim_then_grub_fetches_the_node_configuration_over_tftp() {
    require("qemu-system-aarch64", "qemu-system-arm qemu-efi-aarch64");
    let lab = Lab::new("10.76.0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mac = "52:54:00:76:00:01";
    let daemon = lab.start_daemon(&state);
    install_profile_for(&state, "arm64", Chain::Shim);
    install_boot_loader_packages(
        &state,
        &[
            "--only",
            "shim-signed:arm64",
            "--only",
            "grub-efi-arm64-signed:arm64",
        ],
    );
    daemon.cli_ok(&[
        "nodedefine",
        "a1",
        &format!("net.eth0.hwaddr={mac}"),
        "net.eth0.ipv4_address=10.76.0.21/24",
        &format!("deployment.pendingprofile={PROFILE}"),
        "deployment.useinsecureprotocols=firmware",
    ]);
    let code = "/usr/share/AAVMF/AAVMF_CODE.ms.fd";
    assert!(
        Path::new(code).is_file(),
        "{code} is missing: apt-get install -y qemu-efi-aarch64"
    );
    let variables = dir.path().join("AAVMF_VARS.ms.fd");
    std::fs::copy("/usr/share/AAVMF/AAVMF_VARS.ms.fd", &variables)
        .expect("AAVMF_VARS.ms.fd: apt-get install -y qemu-efi-aarch64");
    let serial = dir.path().join("serial.log");
    let code_drive = format!("if=pflash,format=raw,readonly=on,file={code}");
    let variables_drive = format!("if=pflash,format=raw,file={}", variables.display());
    let nic = format!("virtio-net-pci,netdev=n0,mac={mac},romfile=");
    let started = Instant::now();
    let mut vm = lab.start_vm_with(
        "qemu-system-aarch64",
        &[],
        &serial,
        &[
            "-machine",
            "virt",
            "-cpu",
            "cortex-a57",
            "-m",
            "512",
            "-drive",
            &code_drive,
            "-drive",
            &variables_drive,
            "-device",
            &nic,
        ],
    );
    // GRUB's configuration request is recorded as a boot.tftp event of the node.
    let deadline = Instant::now() + Duration::from_secs(240);
    let events = loop {
        let messages = daemon
            .client()
            .request(
                "retrieve",
                "/events/log",
                serde_json::json!({"type": "boot.tftp", "noderange": "a1"}),
            )
            .expect("query the event log");
        if format!("{messages:?}").contains("grub.cfg") {
            break messages;
        }
        let exited = matches!(vm.0.try_wait(), Ok(Some(_)));
        let console =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).to_string();
        assert!(
            !exited && Instant::now() < deadline,
            "GRUB did not fetch a1's configuration ({}); events: {messages:?}; console:\n{}",
            if exited { "the VM exited" } else { "timed out" },
            tail(&console)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "GRUB fetched its configuration after {:.1} s: {events:?}",
        started.elapsed().as_secs_f64()
    );
    let acknowledged: Vec<serde_json::Value> = daemon
        .dhcp_exchanges()
        .into_iter()
        .filter(|exchange| exchange["reply"] == "ACK" && exchange["node"] == "a1")
        .collect();
    assert!(
        acknowledged
            .iter()
            .any(|exchange| exchange["boot_file"] == "aarch64/shimaa64.efi"
                && exchange["architecture"] == 11
                && exchange["reason_code"] == "secure_boot_chain"),
        "shimaa64.efi not acknowledged to the ARM64 firmware: {acknowledged:?}"
    );
    daemon.stop();
}
