//! The unauthenticated boot routes with a real client (`curl`): profile files with ranges and
//! ETags, per-node scripts by MAC, UUID and name, redirects into the pending profile, and paths
//! that try to leave the public tree.

mod common;

use std::path::Path;
use std::process::Command;

use common::DaemonProcess;

fn curl(arguments: &[&str]) -> (String, Vec<u8>) {
    let output = Command::new("curl")
        .args(["-s", "-D", "-", "--path-as-is"])
        .args(arguments)
        .output()
        .expect("curl (apt-get install -y curl)");
    // Headers first, then the body, separated by the first blank line.
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("response headers");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    (headers, raw[split + 4..].to_vec())
}

fn status(headers: &str) -> u16 {
    headers
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code")
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn make_profile(state: &Path, kernel: &[u8]) {
    let profile = state.join("lib/public/os/p1");
    std::fs::create_dir_all(profile.join("boot/initramfs")).unwrap();
    std::fs::write(
        profile.join("profile.yaml"),
        "label: P One\nkernelargs: quiet console=ttyS0\n",
    )
    .unwrap();
    std::fs::write(profile.join("boot/kernel"), kernel).unwrap();
    std::fs::write(profile.join("boot/initramfs/b.cpio"), b"bb").unwrap();
    std::fs::write(profile.join("boot/initramfs/a.cpio"), b"aa").unwrap();
    std::fs::write(state.join("secret.txt"), b"top secret").unwrap();
    std::os::unix::fs::symlink(state.join("secret.txt"), profile.join("leak")).unwrap();
    std::os::unix::fs::symlink("/etc", profile.join("etc")).unwrap();
}

#[test]
fn profile_files_support_ranges_etags_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let kernel: Vec<u8> = (0..3_000_000u32).map(|index| (index % 251) as u8).collect();
    make_profile(dir.path(), &kernel);
    let base = format!("http://{}", daemon.listener("http"));
    let url = format!("{base}/confluent-public/os/p1/boot/kernel");

    let (headers, body) = curl(&[&url]);
    assert_eq!(status(&headers), 200, "{headers}");
    assert_eq!(body, kernel);
    assert_eq!(header(&headers, "content-length"), Some("3000000"));
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    assert!(header(&headers, "content-encoding").is_none());
    let etag = header(&headers, "etag").expect("etag").to_string();

    let (headers, body) = curl(&["-r", "1000-1999", &url]);
    assert_eq!(status(&headers), 206, "{headers}");
    assert_eq!(body, &kernel[1000..2000]);
    assert_eq!(
        header(&headers, "content-range"),
        Some("bytes 1000-1999/3000000")
    );
    let (headers, body) = curl(&["-r", "-10", &url]);
    assert_eq!(status(&headers), 206);
    assert_eq!(body, &kernel[kernel.len() - 10..]);
    let (headers, _) = curl(&["-r", "4000000-", &url]);
    assert_eq!(status(&headers), 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */3000000"));

    let (headers, body) = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(status(&headers), 304);
    assert!(body.is_empty());
    let (headers, body) = curl(&["-H", "If-None-Match: \"other\"", &url]);
    assert_eq!(status(&headers), 200);
    assert_eq!(body.len(), kernel.len());
    // If-Range with a stale validator: the whole file.
    let (headers, body) = curl(&["-r", "0-9", "-H", "If-Range: \"stale\"", &url]);
    assert_eq!(status(&headers), 200);
    assert_eq!(body.len(), kernel.len());

    // Several files on one keep-alive connection: large ones (sendfile), then a small one and a
    // range (hyper), then a large one again, all exact.
    let out = tempfile::tempdir().unwrap();
    let small = format!("{base}/confluent-public/os/p1/profile.yaml");
    let output = Command::new("curl")
        .current_dir(out.path())
        .args([
            "-sf",
            "-w",
            "%{num_connects} ",
            "-o",
            "k1",
            &url,
            "-o",
            "k2",
            &url,
        ])
        .args(["-o", "small", &small])
        .args([
            "--next",
            "-sf",
            "-w",
            "%{num_connects} ",
            "-r",
            "5-9",
            "-o",
            "part",
            &url,
        ])
        .args(["--next", "-sf", "-w", "%{num_connects} ", "-o", "k3", &url])
        .output()
        .expect("curl");
    assert!(output.status.success(), "{output:?}");
    let connects: u32 = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|count| count.parse::<u32>().unwrap())
        .sum();
    assert_eq!(connects, 1, "curl reused one connection");
    for name in ["k1", "k2", "k3"] {
        assert_eq!(
            std::fs::read(out.path().join(name)).unwrap(),
            kernel,
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(out.path().join("part")).unwrap(),
        &kernel[5..10]
    );
    assert!(
        std::fs::read_to_string(out.path().join("small"))
            .unwrap()
            .contains("P One")
    );

    // HEAD (curl -I prints the headers again as its output, and no body).
    let (headers, body) = curl(&["-I", &url]);
    assert_eq!(status(&headers), 200);
    assert_eq!(header(&headers, "content-length"), Some("3000000"));
    assert!(body.len() < 1024, "HEAD returned a body");
    daemon.stop();
}

#[test]
fn public_paths_never_escape_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    make_profile(dir.path(), b"kernel");
    let base = format!("http://{}", daemon.listener("http"));
    for path in [
        "/confluent-public/os/p1/../../../secret.txt",
        "/confluent-public/os/p1/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/confluent-public/os/p1/leak",
        "/confluent-public/os/p1/etc/passwd",
        "/confluent-public/os/p1/..%2f..%2f..%2fsecret.txt",
        "/confluent-public/os/p1/%00",
    ] {
        let (headers, body) = curl(&[&format!("{base}{path}")]);
        let code = status(&headers);
        assert!(matches!(code, 400 | 403 | 404), "{path}: {code}\n{headers}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("top secret") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    // The site CA is public; the private keys under etc/ are not reachable at all.
    let (headers, _) = curl(&[&format!("{base}/confluent-public/site/tls/ca.pem")]);
    assert_eq!(status(&headers), 200);
    daemon.stop();
}

#[test]
fn per_node_scripts_by_mac_uuid_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    make_profile(dir.path(), b"kernel");
    daemon.cli_ok(&[
        "nodedefine",
        "n1",
        "net.eth0.hwaddr=52:54:00:aa:00:01",
        "id.uuid=0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
        "deployment.pendingprofile=p1",
    ]);
    daemon.cli_ok(&["nodedefine", "n2", "net.eth0.hwaddr=52:54:00:aa:00:02"]);
    let address = daemon.listener("http");
    let base = format!("http://{address}");
    for path in [
        "/boot/by-mac/52:54:00:aa:00:01/boot.ipxe",
        "/boot/by-mac/52-54-00-AA-00-01/boot.ipxe",
        "/boot/by-uuid/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/boot.ipxe",
        "/boot/by-node/n1/boot.ipxe",
        "/confluent-api/boot/by-node/n1/boot.ipxe",
    ] {
        let (headers, body) = curl(&[&format!("{base}{path}")]);
        assert_eq!(status(&headers), 200, "{path}: {headers}");
        let script = String::from_utf8(body).unwrap();
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        assert!(
            script.contains(&format!(
                "kernel {base}/confluent-public/os/p1/boot/kernel initrd=a.cpio initrd=b.cpio quiet console=ttyS0"
            )),
            "{script}"
        );
        assert!(
            script.find("a.cpio http").unwrap() < script.find("b.cpio http").unwrap(),
            "{script}"
        );
    }
    let (headers, body) = curl(&[&format!("{base}/boot/by-node/n1/grub.cfg")]);
    assert_eq!(status(&headers), 200);
    let config = String::from_utf8(body).unwrap();
    assert!(
        config.contains(&format!(
            "linux (http,{address})/confluent-public/os/p1/boot/kernel quiet console=ttyS0"
        )),
        "{config}"
    );
    // Other files are redirected into the pending profile.
    let (headers, _) = curl(&[&format!("{base}/boot/by-node/n1/boot/kernel")]);
    assert_eq!(status(&headers), 302);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("{base}/confluent-public/os/p1/boot/kernel").as_str())
    );
    // Nothing pending: leave the network boot.
    let (headers, body) = curl(&[&format!("{base}/boot/by-mac/52:54:00:aa:00:02/boot.ipxe")]);
    assert_eq!(status(&headers), 200);
    let script = String::from_utf8(body).unwrap();
    assert!(script.contains("\nexit 0\n"), "{script}");
    // Unknown machines and pending profiles that do not exist are errors with a reason.
    let (headers, body) = curl(&[&format!("{base}/boot/by-mac/52:54:00:aa:00:99/boot.ipxe")]);
    assert_eq!(status(&headers), 404);
    assert!(String::from_utf8_lossy(&body).contains("unknown machine"));
    daemon.cli_ok(&["nodeattrib", "n2", "deployment.pendingprofile=missing"]);
    let (headers, body) = curl(&[&format!("{base}/boot/by-node/n2/boot.ipxe")]);
    assert_eq!(status(&headers), 404);
    assert!(
        String::from_utf8_lossy(&body).contains("profile missing does not exist"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    daemon.stop();
}

#[test]
fn uefi_http_boot_gets_the_secure_boot_chain_next_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    make_profile(dir.path(), b"kernel");
    let loaders = dir.path().join("lib/tftpboot");
    std::fs::create_dir_all(loaders.join("x86_64")).unwrap();
    std::fs::create_dir_all(loaders.join("aarch64")).unwrap();
    for (name, content) in [
        ("x86_64/shimx64.efi", "shim x64"),
        ("x86_64/grubx64.efi", "grub x64"),
        ("aarch64/shimaa64.efi", "shim aa64"),
        ("aarch64/grubaa64.efi", "grub aa64"),
    ] {
        std::fs::write(loaders.join(name), content).unwrap();
    }
    daemon.cli_ok(&[
        "nodedefine",
        "n1",
        "net.eth0.hwaddr=52:54:00:aa:00:01",
        "deployment.pendingprofile=p1",
    ]);
    let base = format!(
        "http://{}/boot/by-mac/52:54:00:aa:00:01",
        daemon.listener("http")
    );
    // Shim asks for GRUB in its own directory, with a doubled slash.
    for (file, content) in [
        ("shimx64.efi", "shim x64"),
        ("grubx64.efi", "grub x64"),
        ("/grubx64.efi", "grub x64"),
        ("shimaa64.efi", "shim aa64"),
        ("grubaa64.efi", "grub aa64"),
    ] {
        let (headers, body) = curl(&[&format!("{base}/{file}")]);
        assert_eq!(status(&headers), 200, "{file}: {headers}");
        assert_eq!(String::from_utf8_lossy(&body), content, "{file}");
    }
    // Shim's optional companions are answered at once, not redirected (shim does not follow
    // redirects and waits for the connection to close).
    for file in [
        "revocations_sbat.efi",
        "revocations_sku.efi",
        "shim_certificate_0.efi",
    ] {
        let (headers, _) = curl(&[&format!("{base}/{file}")]);
        assert_eq!(status(&headers), 404, "{file}: {headers}");
    }
    daemon.stop();
}

#[test]
fn boot_img_of_a_shim_profile_is_a_disk_image_with_ranges_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    make_profile(dir.path(), b"kernel");
    daemon.cli_ok(&[
        "nodedefine",
        "n1",
        "net.eth0.hwaddr=52:54:00:aa:00:01",
        "deployment.pendingprofile=p1",
    ]);
    let base = format!(
        "http://{}/boot/by-mac/52:54:00:aa:00:01",
        daemon.listener("http")
    );
    let url = format!("{base}/boot.img");
    // An iPXE profile has no boot image.
    let (headers, body) = curl(&[&url]);
    assert_eq!(status(&headers), 404, "{headers}");
    let reason = String::from_utf8_lossy(&body).to_string();
    assert!(reason.contains("does not say bootloader: shim"), "{reason}");
    // A shim profile without boot loaders: the reason says what to install.
    let profile = dir.path().join("lib/public/os/p1/profile.yaml");
    std::fs::write(
        &profile,
        "label: P One\nkernelargs: quiet\nbootloader: shim\n",
    )
    .unwrap();
    // The leaking symlinks of make_profile are outside boot/ and not part of the image.
    let (headers, body) = curl(&[&url]);
    assert_eq!(status(&headers), 404, "{headers}");
    let reason = String::from_utf8_lossy(&body).to_string();
    assert!(reason.contains("bootloaders/install.sh"), "{reason}");
    let loaders = dir.path().join("lib/tftpboot/x86_64");
    std::fs::create_dir_all(&loaders).unwrap();
    std::fs::write(loaders.join("shimx64.efi"), "shim x64").unwrap();
    std::fs::write(loaders.join("grubx64.efi"), "grub x64").unwrap();
    let (headers, image) = curl(&[&url]);
    assert_eq!(status(&headers), 200, "{headers}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.efi-img")
    );
    // A FAT boot sector with its signature.
    assert!(image.len() >= 1024 * 1024, "{}", image.len());
    assert_eq!(&image[510..512], &[0x55, 0xaa]);
    assert!(image.windows(8).any(|window| window == b"shim x64"));
    // HEAD and ranges, as for the other boot files; the image is not rebuilt per request.
    // (curl -I prints the headers again as its output, and no body.)
    let (headers, body) = curl(&["-I", &url]);
    assert_eq!(status(&headers), 200, "{headers}");
    assert!(body.len() < 1024, "HEAD returned a body");
    assert_eq!(
        header(&headers, "content-length"),
        Some(image.len().to_string().as_str())
    );
    let etag = header(&headers, "etag").expect("etag").to_string();
    let (headers, body) = curl(&["-r", "510-511", &url]);
    assert_eq!(status(&headers), 206, "{headers}");
    assert_eq!(body, [0x55, 0xaa]);
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    // A changed kernel command line makes a new image.
    std::fs::write(
        &profile,
        "label: P One\nkernelargs: quiet console=ttyS1\nbootloader: shim\n",
    )
    .unwrap();
    let (headers, _) = curl(&["-I", &url]);
    assert_ne!(header(&headers, "etag"), Some(etag.as_str()));
    // It is not reachable as a public file, and the download is in the node's event log.
    let (headers, _) = curl(&[&format!(
        "http://{}/confluent-public/../cache/boot-images/p1.img",
        daemon.listener("http")
    )]);
    assert_ne!(status(&headers), 200, "{headers}");
    let events = daemon
        .client()
        .request(
            "retrieve",
            "/events/log",
            serde_json::json!({"type": "boot.http", "noderange": "n1"}),
        )
        .expect("query the event log");
    assert!(format!("{events:?}").contains("boot image"), "{events:?}");
    daemon.stop();
}

/// A client offering only RSA and DHE key exchange (what EDK2 firmware before 2023 sends) cannot
/// complete a handshake with rustls; the daemon says why in a `boot.tls` event of the node whose
/// reserved address the client has.
#[test]
fn https_clients_without_ecdhe_are_reported_as_too_old_for_https_boot() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    daemon.cli_ok(&[
        "nodedefine",
        "old1",
        "net.eth0.hwaddr=52:54:00:aa:00:11",
        "net.eth0.ipv4_address=127.0.0.1",
    ]);
    let url = format!(
        "https://{}/confluent-public/site/tls/ca.pem",
        daemon.listener("https")
    );
    // Modern clients still connect.
    let (headers, _) = curl(&["-k", &url]);
    assert_eq!(status(&headers), 200, "{headers}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // The cipher suites OVMF 2022.11 offers (DHE-RSA and plain RSA, TLS 1.2).
        let refused = Command::new("curl")
            .args(["-sk", "--tlsv1.2", "--tls-max", "1.2"])
            .args([
                "--ciphers",
                "DHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256:AES128-SHA256",
            ])
            .arg(&url)
            .output()
            .expect("curl");
        assert!(!refused.status.success(), "the handshake succeeded");
        let events = daemon
            .client()
            .request(
                "retrieve",
                "/events/log",
                serde_json::json!({"type": "boot.tls", "noderange": "old1"}),
            )
            .expect("query the event log");
        let text = format!("{events:?}");
        if text.contains("no TLS key exchange in common") && text.contains("\"old1\"") {
            assert!(text.contains("ECDHE"), "{text}");
            break;
        }
        // The node's address reaches the boot directory through a watcher: try again.
        assert!(
            std::time::Instant::now() < deadline,
            "no boot.tls event for old1: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    daemon.stop();
}
