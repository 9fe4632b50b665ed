//! Confinement of served paths: files handed to clients over HTTP and TFTP, and files read to
//! build boot images, are resolved under a root and may never lead outside the directories
//! allowed for it.

use std::path::{Component, Path, PathBuf};

/// Why a path cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum PathRefused {
    /// `..`, a NUL, a backslash or another odd component.
    Invalid,
    /// Resolves (through a symlink) outside every allowed root.
    Escapes,
    NotFound,
}

/// Resolve the relative `request` path under `root`, following symlinks only while they stay
/// inside one of `allowed` (canonical) roots.
pub fn resolve(root: &Path, request: &str, allowed: &[PathBuf]) -> Result<PathBuf, PathRefused> {
    if request.len() > 4096 || request.contains(['\0', '\\']) {
        return Err(PathRefused::Invalid);
    }
    let mut path = root.to_path_buf();
    for component in Path::new(request.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return Err(PathRefused::Invalid),
        }
    }
    let canonical = match path.canonicalize() {
        Ok(canonical) => canonical,
        Err(_) => return Err(PathRefused::NotFound),
    };
    if allowed.iter().any(|root| canonical.starts_with(root)) {
        Ok(canonical)
    } else {
        Err(PathRefused::Escapes)
    }
}

/// Canonical forms of the roots that exist (a missing root allows nothing).
pub fn canonical_roots(roots: &[&Path]) -> Vec<PathBuf> {
    roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_their_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join("os/p/boot")).unwrap();
        std::fs::write(root.join("os/p/boot/kernel"), b"k").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("os/etc")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("os/p/s")).unwrap();
        let allowed = canonical_roots(&[&root]);
        assert!(resolve(&root, "os/p/boot/kernel", &allowed).is_ok());
        assert!(resolve(&root, "/os/p/boot/kernel", &allowed).is_ok());
        assert_eq!(
            resolve(&root, "os/../../secret", &allowed),
            Err(PathRefused::Invalid)
        );
        assert_eq!(
            resolve(&root, "os/etc/passwd", &allowed),
            Err(PathRefused::Escapes)
        );
        assert_eq!(
            resolve(&root, "os/p/s", &allowed),
            Err(PathRefused::Escapes)
        );
        assert_eq!(
            resolve(&root, "os/p/\0", &allowed),
            Err(PathRefused::Invalid)
        );
        assert_eq!(
            resolve(&root, "os/p/nothing", &allowed),
            Err(PathRefused::NotFound)
        );
    }
}
