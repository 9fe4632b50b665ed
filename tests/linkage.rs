//! The build needs only the Rust toolchain and a C linker: the binaries link against nothing
//! but the C library (libpam, for one, is loaded at run time), so no `-dev` package is needed
//! to build them. `readelf` lists what each binary's dynamic section asks for.

use std::process::Command;

/// Libraries every Linux with a C toolchain has (glibc and the GCC runtime).
const ALLOWED: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

fn needed(binary: &str) -> Vec<String> {
    let output = Command::new("readelf")
        .args(["--dynamic", "--wide", binary])
        .output()
        .expect("readelf (binutils) is installed by tests/run");
    assert!(output.status.success(), "readelf failed on {binary}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| {
            let start = line.find('[')? + 1;
            let end = line[start..].find(']')? + start;
            Some(line[start..end].to_string())
        })
        .collect()
}

#[test]
fn binaries_link_only_the_c_library() {
    for binary in [
        env!("CARGO_BIN_EXE_confluentd"),
        env!("CARGO_BIN_EXE_confluent"),
    ] {
        let libraries = needed(binary);
        assert!(
            libraries.iter().any(|library| library == "libc.so.6"),
            "{binary}: readelf found no NEEDED entries: {libraries:?}"
        );
        let extra: Vec<&String> = libraries
            .iter()
            .filter(|library| !ALLOWED.contains(&library.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{binary} links {extra:?}, which a machine with only the toolchain lacks the -dev package of"
        );
    }
}
