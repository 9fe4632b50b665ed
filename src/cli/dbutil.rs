//! `confluentdbutil dump|restore|merge DIR`: back up and restore the configuration of a state
//! directory. Works directly on the state directory, so the daemon must be stopped (the pid lock
//! enforces it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::dump::{self, DumpFormat};
use crate::config::engine::{ConfigEngine, EngineOptions};
use crate::state::StatePaths;
use crate::state::pidlock::PidLock;

#[derive(Parser)]
#[command(name = "confluentdbutil", about = "Dump and restore the configuration")]
struct Arguments {
    /// State directory of the daemon (default: ./confluent-state; --system for the system layout).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Use the system layout (/etc/confluent, /var/lib/confluent, ...).
    #[arg(long, global = true)]
    system: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Write the configuration to DIR.
    Dump {
        dir: PathBuf,
        /// Write secrets as *REDACTED* and omit the key (cannot be restored).
        #[arg(short, long)]
        redact: bool,
        /// Write YAML instead of JSON.
        #[arg(short, long)]
        yaml: bool,
        /// Protect the exported key with the passphrase in this environment variable.
        #[arg(short = 'p', long)]
        passphrase_env: Option<String>,
    },
    /// Replace the configuration with the dump in DIR.
    Restore {
        dir: PathBuf,
        #[arg(short = 'p', long)]
        passphrase_env: Option<String>,
    },
    /// Add the nodes and groups of the dump in DIR that do not exist yet.
    Merge {
        dir: PathBuf,
        #[arg(short = 'p', long)]
        passphrase_env: Option<String>,
    },
}

fn passphrase(variable: &Option<String>) -> Result<Option<Vec<u8>>, String> {
    match variable {
        None => Ok(None),
        Some(name) => std::env::var(name)
            .map(|value| Some(value.into_bytes()))
            .map_err(|_| format!("environment variable {name} is not set")),
    }
}

pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let arguments = match Arguments::try_parse_from(args) {
        Ok(arguments) => arguments,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { 2 } else { 0 };
        }
    };
    match run(arguments) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("Error: {error:#}");
            1
        }
    }
}

fn run(arguments: Arguments) -> anyhow::Result<()> {
    let paths = if arguments.system {
        StatePaths::system()
    } else {
        StatePaths::under(
            &arguments
                .state_dir
                .unwrap_or_else(|| PathBuf::from(crate::state::paths::DEFAULT_STATE_DIR)),
        )
    };
    paths.create()?;
    let _lock = PidLock::acquire(&paths.pid_file())?;
    let engine = ConfigEngine::open(
        &paths.cfg_dir(),
        &paths.master_key_file(),
        EngineOptions::default(),
    )?;
    let result = match arguments.action {
        Action::Dump {
            dir,
            redact,
            yaml,
            passphrase_env,
        } => {
            let passphrase = passphrase(&passphrase_env).map_err(anyhow::Error::msg)?;
            let format = if yaml {
                DumpFormat::Yaml
            } else {
                DumpFormat::Json
            };
            engine.read(|store| {
                dump::dump(
                    store,
                    engine.master_key(),
                    &dir,
                    format,
                    redact,
                    passphrase.as_deref(),
                )
            })?;
            Ok(())
        }
        Action::Restore {
            dir,
            passphrase_env,
        } => restore(&engine, &dir, &passphrase_env, true),
        Action::Merge {
            dir,
            passphrase_env,
        } => restore(&engine, &dir, &passphrase_env, false),
    };
    engine.close();
    result
}

fn restore(
    engine: &ConfigEngine,
    dir: &std::path::Path,
    passphrase_env: &Option<String>,
    replace: bool,
) -> anyhow::Result<()> {
    {
        {
            let passphrase = passphrase(passphrase_env).map_err(anyhow::Error::msg)?;
            let loaded = dump::load(dir, engine.master_key(), passphrase.as_deref())?;
            let mut restore_error = None;
            engine.commit_blocking(|store, _key| {
                match dump::plan_restore(store, &loaded, replace) {
                    Ok(plan) => Ok(plan),
                    Err(error) => {
                        restore_error = Some(error);
                        Ok(crate::config::plan::Plan::default())
                    }
                }
            })?;
            match restore_error {
                Some(error) => Err(error.into()),
                None => Ok(()),
            }
        }
    }
}
