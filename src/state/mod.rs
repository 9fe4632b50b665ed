//! Where the daemon's state lives ([`StatePaths`]: the local `./confluent-state/` layout or the
//! system one) and the pid lock that keeps a second daemon, or an offline tool such as
//! `confluent dbutil restore`, off a state directory in use. Shared by the daemon and the CLI.

pub mod paths;
pub mod pidlock;

pub use paths::StatePaths;
