//! Where the daemon keeps what it writes.
//!
//! Two layouts: a single state directory (`--state-dir DIR`, or `./confluent-state` by default)
//! holding everything, so several daemons can run side by side in tests; or the system layout
//! (`--system`, as root): configuration and keys under `/etc/confluent`, data under
//! `/var/lib/confluent`, logs under `/var/log/confluent`, the run directory `/run/confluent`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Default state directory (relative to the working directory) when nothing is given.
pub const DEFAULT_STATE_DIR: &str = "confluent-state";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// Configuration database and keys (private, 0700).
    pub etc: PathBuf,
    /// Data served or used by the daemon (OS profiles, boot loaders).
    pub lib: PathBuf,
    pub log: PathBuf,
    /// Sockets and the pid file.
    pub run: PathBuf,
}

impl StatePaths {
    /// Everything under one directory.
    pub fn under(dir: &Path) -> StatePaths {
        StatePaths {
            etc: dir.join("etc"),
            lib: dir.join("lib"),
            log: dir.join("log"),
            run: dir.join("run"),
        }
    }

    /// The system layout.
    pub fn system() -> StatePaths {
        StatePaths {
            etc: PathBuf::from("/etc/confluent"),
            lib: PathBuf::from("/var/lib/confluent"),
            log: PathBuf::from("/var/log/confluent"),
            run: PathBuf::from("/run/confluent"),
        }
    }

    pub fn cfg_dir(&self) -> PathBuf {
        self.etc.join("cfg")
    }

    pub fn master_key_file(&self) -> PathBuf {
        self.etc.join("keys").join("master.key")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run.join("confluentd.pid")
    }

    /// The unix socket of the API (`DIR/run/api.sock`).
    pub fn api_socket(&self) -> PathBuf {
        self.run.join("api.sock")
    }

    /// The TFTP root: boot loaders (`lib/tftpboot/`).
    pub fn tftp_root(&self) -> PathBuf {
        self.lib.join("tftpboot")
    }

    /// Create the directories; private ones are 0700.
    pub fn create(&self) -> io::Result<()> {
        for private in [&self.etc, &self.etc.join("keys"), &self.cfg_dir()] {
            fs::create_dir_all(private)?;
            fs::set_permissions(private, fs::Permissions::from_mode(0o700))?;
        }
        for public in [&self.lib, &self.tftp_root(), &self.log, &self.run] {
            fs::create_dir_all(public)?;
        }
        Ok(())
    }
}
