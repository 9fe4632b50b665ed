//! The multi-call `confluent` command: invoked as `confluent <command> ...` or through a symlink
//! named after the command (`nodelist`, `nodeattrib`, ...). One file per command family; output
//! conventions (naturally sorted `node: value` lines, errors on stderr as `node: Error: text`,
//! non-zero exit on failure) are shared in [`output`].

pub mod client;
pub mod collate;
pub mod confetty;
pub mod dbutil;
pub mod dhcp;
pub mod events;
pub mod nodes;
pub mod output;
pub mod trust;
pub mod users;

use std::ffi::OsString;
use std::path::Path;

/// Every command name the multi-call binary answers to (and that `install-links` creates).
pub const COMMANDS: &[&str] = &[
    "collate",
    "confetty",
    "confluentdbutil",
    "dhcpinterface",
    "dhcpsubnet",
    "nodeattrib",
    "nodeboottimeline",
    "nodedefine",
    "nodegroupattrib",
    "nodegroupdefine",
    "nodegrouplist",
    "nodegroupremove",
    "nodegrouprename",
    "nodelist",
    "noderemove",
    "noderename",
];

/// Entry point: decide the command from `argv[0]` or the first argument.
pub fn main(args: Vec<OsString>) -> i32 {
    let invoked = args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (command, rest) = if invoked == "confluent" || !COMMANDS.contains(&invoked.as_str()) {
        match args.get(1).map(|arg| arg.to_string_lossy().into_owned()) {
            Some(command) => (command, args[1..].to_vec()),
            None => {
                usage();
                return 2;
            }
        }
    } else {
        (invoked, args)
    };
    let tail: Vec<String> = rest
        .iter()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    match command.as_str() {
        "install-links" => install_links(&rest),
        "events" => events::events(&tail),
        "user" => users::main(&tail, false),
        "usergroup" => users::main(&tail, true),
        "dhcpsubnet" => dhcp::main(&tail),
        "dhcpinterface" => dhcp::interfaces_main(&tail),
        "nodeboottimeline" => events::boot_timeline(&tail),
        "nodeattrib" => nodes::attrib(&tail, false),
        "nodegroupattrib" => nodes::attrib(&tail, true),
        "nodelist" => nodes::list(&tail),
        "nodegrouplist" => nodes::group_list(&tail),
        "nodedefine" => nodes::define(&tail, false),
        "nodegroupdefine" => nodes::define(&tail, true),
        "noderemove" => nodes::remove(&tail, false),
        "nodegroupremove" => nodes::remove(&tail, true),
        "noderename" => nodes::rename(&tail, false),
        "nodegrouprename" => nodes::rename(&tail, true),
        "confluentdbutil" | "dbutil" => dbutil::main(rest),
        "collate" => collate::main(rest),
        "confetty" => confetty::main(rest),
        "version" | "--version" | "-V" => {
            println!("confluent {}", crate::VERSION);
            0
        }
        "help" | "--help" | "-h" => {
            usage();
            0
        }
        other => {
            eprintln!("confluent: unknown command '{other}' (try 'confluent help')");
            2
        }
    }
}

fn usage() {
    eprintln!("usage: confluent <command> [arguments]");
    eprintln!("       <command> [arguments]     (through a symlink named after the command)");
    eprintln!();
    eprintln!("commands:");
    eprintln!("  install-links DIR   create a symlink named after each command in DIR");
    eprintln!("  events              query or follow (-f) the event and audit logs");
    eprintln!("  user                list, show, add, set, remove users (passwords on stdin)");
    eprintln!("  usergroup           list, show, add, set, remove user groups (OS group -> role)");
    for command in COMMANDS {
        eprintln!("  {command}");
    }
}

/// `confluent install-links DIR`: one symlink per command, pointing at this executable.
fn install_links(args: &[OsString]) -> i32 {
    let Some(dir) = args.get(1) else {
        eprintln!("usage: confluent install-links DIR");
        return 2;
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("Error: cannot find the confluent executable: {error}");
            return 1;
        }
    };
    let dir = Path::new(dir);
    if let Err(error) = std::fs::create_dir_all(dir) {
        eprintln!("Error: cannot create {}: {error}", dir.display());
        return 1;
    }
    let mut status = 0;
    for command in COMMANDS {
        let link = dir.join(command);
        if link.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&link);
        }
        if let Err(error) = std::os::unix::fs::symlink(&exe, &link) {
            eprintln!("Error: cannot create {}: {error}", link.display());
            status = 1;
        }
    }
    status
}
