//! The layering of `ARCHITECTURE.md`, enforced: every module of `src/` sits in one layer of the
//! table between the `layers` markers there, and imports only modules of lower layers (and
//! itself). A new module that is not in the table, or an import that points up or sideways,
//! fails this test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module name → layer, from the table in ARCHITECTURE.md (`| 3 | `deploy` | ... |`).
fn layers(architecture: &str) -> BTreeMap<String, u32> {
    let start = architecture
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md has a <!-- layers --> table");
    let end = architecture[start..]
        .find("<!-- /layers -->")
        .map(|offset| start + offset)
        .expect("ARCHITECTURE.md closes its layers table with <!-- /layers -->");
    let mut table = BTreeMap::new();
    for line in architecture[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(layer), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue;
        };
        for module in modules.split(',') {
            let name = module.trim().trim_matches('`').trim_end_matches('/');
            let name = name.split_whitespace().next().unwrap_or_default();
            if !name.is_empty() {
                table.insert(name.to_string(), layer);
            }
        }
    }
    table
}

/// Top-level modules a file refers to through `crate::x` paths (and `use crate::{x, y::z}`
/// groups), outside comments. (`super::` stays inside a module.)
fn references(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|line| line.find("//").map_or(line, |comment| &line[..comment]))
        .collect::<Vec<_>>()
        .join("\n");
    let identifier = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(index) = rest.find("crate::") {
        let preceded_by_ident = rest[..index]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let after = &rest[index + "crate::".len()..];
        if !preceded_by_ident {
            if let Some(group) = after.strip_prefix('{') {
                // Top-level items of the group, up to its closing brace.
                let mut depth = 0;
                let mut item_start = true;
                for (offset, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if c.is_whitespace() => {}
                        _ if item_start => {
                            item_start = false;
                            let name = identifier(&group[offset..]);
                            if !name.is_empty() {
                                found.push(name);
                            }
                        }
                        _ => {}
                    }
                }
            } else {
                let name = identifier(after);
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
        rest = after;
    }
    found
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs` and the binaries).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(Path::new(ROOT).join("src")).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// Every upward or sideways import, as `file: module (layer) imports other (layer)`.
fn violations(files: &[(PathBuf, String)], layers: &BTreeMap<String, u32>) -> Vec<String> {
    let mut found = Vec::new();
    for (file, source) in files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(&layer) = layers.get(&module) else {
            found.push(format!(
                "{}: module `{module}` is not in the layers table of ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        for target in references(source) {
            if target == module {
                continue;
            }
            match layers.get(&target) {
                Some(&other) if other < layer => {}
                Some(&other) => found.push(format!(
                    "{}: `{module}` (layer {layer}) imports `{target}` (layer {other})",
                    file.display()
                )),
                None => found.push(format!(
                    "{}: `{module}` refers to `crate::{target}`, which is in no layer",
                    file.display()
                )),
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn modules_import_only_lower_layers() {
    let architecture = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md is readable");
    let layers = layers(&architecture);
    assert!(
        layers.len() >= 10,
        "too few modules in the layers table: {layers:?}"
    );
    let mut paths = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut paths);
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .map(|path| {
            let source = std::fs::read_to_string(&path).expect("source is readable");
            (path, source)
        })
        .collect();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let found = violations(&files, &layers);
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

#[test]
fn an_upward_import_is_caught() {
    let layers = layers(
        "<!-- layers -->\n| layer | modules |\n|---|---|\n| 0 | `proto` |\n| 1 | `dhcp`, `tftp` |\n| 2 | `daemon` |\n<!-- /layers -->",
    );
    let src = Path::new(ROOT).join("src");
    let files = vec![
        (
            src.join("dhcp/mod.rs"),
            "use crate::proto::dhcp;\n// crate::daemon in a comment\n".to_string(),
        ),
        (
            src.join("dhcp/worker.rs"),
            "impl crate::daemon::Service for X {}".to_string(),
        ),
        (
            src.join("tftp/a/b.rs"),
            "use crate::{dhcp::X};\nuse crate::dhcp::Y;".to_string(),
        ),
        (
            src.join("proto/x.rs"),
            "fn f() -> tokio_util::sync::CancellationToken { todo!() }".to_string(),
        ),
        (src.join("newthing.rs"), String::new()),
    ];
    let found = violations(&files, &layers);
    assert_eq!(found.len(), 2 + 1, "{found:#?}");
    assert!(
        found[0].contains("`dhcp` (layer 1) imports `daemon` (layer 2)"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("module `newthing` is not in the layers table"),
        "{found:#?}"
    );
    assert!(
        found[2].contains("`tftp` (layer 1) imports `dhcp` (layer 1)"),
        "{found:#?}"
    );
}

/// Every transport answers through `api::handle`, which holds the only call of
/// `api::authorize`: a second call site would be a second way to decide.
#[test]
fn authorize_has_exactly_one_call_site() {
    let mut paths = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut paths);
    let mut sites = Vec::new();
    for path in paths {
        let source = std::fs::read_to_string(&path).expect("source is readable");
        for (number, line) in source.lines().enumerate() {
            let code = line.find("//").map_or(line, |comment| &line[..comment]);
            if code.contains("authorize(") && !code.contains("fn authorize(") {
                sites.push(format!("{}:{}", path.display(), number + 1));
            }
        }
    }
    assert_eq!(sites.len(), 1, "authorize call sites: {sites:#?}");
    assert!(sites[0].contains("src/api/mod.rs"), "{sites:#?}");
}
