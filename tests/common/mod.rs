//! Test harness: start a real `confluentd` on a temporary state directory and talk to it over
//! its unix socket.
#![allow(dead_code)]

pub mod net;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confluent::cli::client::Client;

pub struct DaemonProcess {
    pub child: Child,
    pub state_dir: PathBuf,
}

impl DaemonProcess {
    pub fn start(state_dir: &Path) -> DaemonProcess {
        Self::start_with(state_dir, &[])
    }

    pub fn start_with(state_dir: &Path, extra: &[&str]) -> DaemonProcess {
        Self::start_wrapped(state_dir, &[], extra)
    }

    /// Start under a wrapper command, e.g. `["ip", "netns", "exec", "ns1"]`. The plain HTTP
    /// listener serves the API (`--http-allow-api`), as most tests talk to it with curl.
    pub fn start_wrapped(state_dir: &Path, wrapper: &[&str], extra: &[&str]) -> DaemonProcess {
        Self::spawn(state_dir, wrapper, extra, true)
    }

    /// Start with the production default: plain HTTP serves only the public boot paths.
    pub fn start_https_only(state_dir: &Path, extra: &[&str]) -> DaemonProcess {
        Self::spawn(state_dir, &[], extra, false)
    }

    fn spawn(
        state_dir: &Path,
        wrapper: &[&str],
        extra: &[&str],
        allow_plain_api: bool,
    ) -> DaemonProcess {
        let daemon = env!("CARGO_BIN_EXE_confluentd");
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(daemon);
                command
            }
            None => Command::new(daemon),
        };
        let child = command
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--log-level", "warn"])
            .args([
                "--http",
                "127.0.0.1:0",
                "--https",
                "127.0.0.1:0",
                "--tls-socket",
                "127.0.0.1:0",
            ])
            .args(allow_plain_api.then_some("--http-allow-api"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn confluentd");
        let mut daemon = DaemonProcess {
            child,
            state_dir: state_dir.to_path_buf(),
        };
        daemon.wait_ready();
        daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("run").join("api.sock")
    }

    /// Where a listener ended up (`http`, `https`, `tls_socket`).
    pub fn listener(&self, name: &str) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(self.state_dir.join("run/listeners.json"))
            .expect("listeners.json");
        let value: serde_json::Value = serde_json::from_str(&text).expect("listeners.json is JSON");
        value[name]
            .as_str()
            .expect("listener present")
            .parse()
            .expect("address")
    }

    /// The administrator token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("etc/keys/admin.token")).expect("admin token")
    }

    /// The published site CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir.join("lib/public/site/tls/ca.pem")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("confluentd exited during start-up: {status}");
            }
            if Client::connect_to(&self.socket()).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "confluentd did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run the `confluent` CLI against this daemon; panic with its stderr when it fails.
    pub fn cli_ok(&self, arguments: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_confluent"))
            .args(arguments)
            .env("CONFLUENT_HOST", self.socket())
            .output()
            .expect("run confluent");
        assert!(
            output.status.success(),
            "confluent {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// The DHCP service's recent exchanges (`/networking/dhcp/exchanges`), oldest first.
    pub fn dhcp_exchanges(&self) -> Vec<serde_json::Value> {
        self.client()
            .request(
                "retrieve",
                "/networking/dhcp/exchanges",
                serde_json::json!({}),
            )
            .expect("retrieve exchanges")
            .into_iter()
            .filter_map(|mut message| message.get_mut("exchange").map(serde_json::Value::take))
            .collect()
    }

    pub fn client(&self) -> Client {
        Client::connect_to(&self.socket()).expect("connect to confluentd")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill confluentd");
        self.child.wait().expect("reap confluentd");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "confluentd did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of `size` mounted at `path`, unmounted on drop.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount(8)");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it: run it as root (tests/run does in CI)"
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Fill every free byte.
    pub fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
