//! The multi-call CLI: `confluent <command>` or a symlink named after the command.

fn main() {
    let code = confluent::cli::main(std::env::args_os().collect());
    std::process::exit(code);
}
