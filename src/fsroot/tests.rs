use std::io::Read as _;
use std::os::unix::fs::symlink;

use super::*;

/// `lib/` with `public/os/p/boot`, `distributions/media`, `tftpboot`, and a secret beside
/// `lib/` that nothing may serve.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree { dir };
        for sub in [
            "lib/public/os/p/boot",
            "lib/distributions/media",
            "lib/tftpboot/sub",
        ] {
            std::fs::create_dir_all(tree.path(sub)).unwrap();
        }
        std::fs::write(tree.path("secret"), b"secret").unwrap();
        std::fs::write(tree.path("lib/public/os/p/boot/initrd"), b"initrd").unwrap();
        std::fs::write(tree.path("lib/distributions/media/vmlinuz"), b"kernel").unwrap();
        std::fs::write(tree.path("lib/tftpboot/sub/file"), b"hello").unwrap();
        tree
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn link(&self, target: impl AsRef<Path>, at: &str) {
        symlink(target, self.path(at)).unwrap();
    }

    /// `lib/public`, whose links may lead into `lib/distributions`.
    fn public(&self) -> ConfinedRoot {
        ConfinedRoot::with_link_targets(
            &self.path("lib/public"),
            &[&self.path("lib/public"), &self.path("lib/distributions")],
        )
        .unwrap()
    }

    fn tftp(&self) -> ConfinedRoot {
        ConfinedRoot::new(&self.path("lib/tftpboot")).unwrap()
    }
}

/// Open through the fast path and through the walk alone; both must agree.
fn read(root: &ConfinedRoot, request: &str) -> Result<Vec<u8>, ConfinedOpenError> {
    let mut results = [true, false].map(|fast| {
        let (fd, path) = root.resolve_with(request, Want::Read, fast)?;
        assert!(root.0.links.allows(&path), "{request}: {}", path.display());
        let mut content = Vec::new();
        File::from(fd)
            .read_to_end(&mut content)
            .map_err(ConfinedOpenError::Io)?;
        Ok(content)
    });
    let [fast, walked] = &mut results;
    assert_eq!(
        format!("{fast:?}"),
        format!("{walked:?}"),
        "{request}: the fast path and the walk disagree"
    );
    let [fast, _] = results;
    fast
}

fn assert_escapes(root: &ConfinedRoot, request: &str) {
    let result = read(root, request);
    assert!(
        matches!(result, Err(ConfinedOpenError::Escapes)),
        "{request}: {result:?}"
    );
}

#[test]
fn plain_files_and_symlinks_inside_the_root_are_served() {
    let tree = Tree::new();
    tree.link("sub/file", "lib/tftpboot/relative");
    tree.link(tree.path("lib/tftpboot/sub/file"), "lib/tftpboot/absolute");
    tree.link("sub", "lib/tftpboot/dir");
    tree.link("../sub/./file", "lib/tftpboot/sub/dotdot");
    let root = tree.tftp();
    for request in [
        "sub/file",
        "./sub//file",
        "relative",
        "absolute",
        "dir/file",
        "sub/dotdot",
        "dir/dotdot",
    ] {
        assert_eq!(read(&root, request).unwrap(), b"hello", "{request}");
    }
    let opened = root.open_file("relative").unwrap();
    assert_eq!(opened.metadata.len(), 5);
    assert_eq!(
        opened.path,
        tree.path("lib/tftpboot/sub/file").canonicalize().unwrap()
    );
    assert_eq!(root.metadata("dir/file").unwrap().len(), 5);
    assert!(root.metadata("dir").unwrap().is_dir());
}

#[test]
fn symlinks_out_of_the_root_are_refused() {
    let tree = Tree::new();
    tree.link(tree.path("secret"), "lib/tftpboot/absolute");
    tree.link("../../secret", "lib/tftpboot/relative");
    tree.link("../../../secret", "lib/tftpboot/sub/deeper");
    tree.link("/etc", "lib/tftpboot/etc");
    tree.link(tree.dir.path(), "lib/tftpboot/outside");
    tree.link("../distributions", "lib/tftpboot/distributions");
    let root = tree.tftp();
    for request in [
        "absolute",
        "relative",
        "sub/deeper",
        "etc/passwd",
        // Missing files behind a link out are refused too, so nothing can be probed.
        "etc/does-not-exist",
        "outside/secret",
        "outside/missing",
        // Another link target of the site, but not one of this root's.
        "distributions/media/vmlinuz",
    ] {
        assert_escapes(&root, request);
    }
    // And the same through stat and as a directory.
    assert!(matches!(
        root.metadata("outside/secret"),
        Err(ConfinedOpenError::Escapes)
    ));
    assert!(matches!(
        root.subdirectory("outside"),
        Err(ConfinedOpenError::Escapes)
    ));
}

#[test]
fn links_may_lead_into_the_link_targets_and_nowhere_else() {
    let tree = Tree::new();
    let boot = "lib/public/os/p/boot";
    tree.link(
        tree.path("lib/distributions/media/vmlinuz"),
        &format!("{boot}/kernel"),
    );
    tree.link(
        "../../../../distributions/media/vmlinuz",
        &format!("{boot}/relative"),
    );
    tree.link(tree.path("lib/distributions/media"), "lib/public/media");
    tree.link(tree.path("secret"), &format!("{boot}/secret"));
    // `..` may pass between link targets, but not end outside them.
    tree.link("../../secret", "lib/distributions/media/up");
    tree.link(
        "../../public/os/p/boot/initrd",
        "lib/distributions/media/back",
    );
    // A lexically absolute target with `..` in it is normalized before it is judged.
    tree.link(
        format!(
            "{}/lib/distributions/../../secret",
            tree.dir.path().display()
        ),
        &format!("{boot}/sneaky"),
    );
    let public = tree.public();
    for request in ["os/p/boot/kernel", "os/p/boot/relative", "media/vmlinuz"] {
        assert_eq!(read(&public, request).unwrap(), b"kernel", "{request}");
    }
    assert_eq!(read(&public, "media/back").unwrap(), b"initrd");
    for request in ["os/p/boot/secret", "media/up", "os/p/boot/sneaky"] {
        assert_escapes(&public, request);
    }
    // A profile's boot/ as a root of its own keeps the same link targets.
    let profile = public.subdirectory("os/p/boot").unwrap();
    assert_eq!(profile.path(), tree.path(boot).canonicalize().unwrap());
    assert_eq!(read(&profile, "kernel").unwrap(), b"kernel");
    assert_eq!(read(&profile, "initrd").unwrap(), b"initrd");
    assert_escapes(&profile, "secret");
    assert!(matches!(
        public.subdirectory("os/missing/boot"),
        Err(ConfinedOpenError::NotFound)
    ));
    // A root outside its link targets is refused at set-up.
    assert!(matches!(
        ConfinedRoot::with_link_targets(tree.dir.path(), &[&tree.path("lib/public")]),
        Err(ConfinedRootError::OutsideLinkTargets { .. })
    ));
}

#[test]
fn absolute_links_may_name_a_link_target_by_its_configured_path() {
    let tree = Tree::new();
    // The site is configured through a symlinked directory, as /var may be.
    tree.link(tree.path("lib"), "configured");
    let configured = tree.path("configured");
    tree.link(
        configured.join("distributions/media/vmlinuz"),
        "lib/public/kernel",
    );
    let public = ConfinedRoot::with_link_targets(
        &configured.join("public"),
        &[
            &configured.join("public"),
            &configured.join("distributions"),
        ],
    )
    .unwrap();
    assert_eq!(read(&public, "kernel").unwrap(), b"kernel");
}

#[test]
fn requests_are_checked_lexically_first() {
    let tree = Tree::new();
    let root = tree.tftp();
    for request in [
        "../secret",
        "sub/../../secret",
        "sub/..",
        "/sub/file",
        "sub\\file",
        "sub/\0",
    ] {
        assert!(
            matches!(read(&root, request), Err(ConfinedOpenError::Invalid)),
            "{request}"
        );
    }
    let long = "a/".repeat(MAX_REQUEST_LEN / 2 + 1);
    assert!(matches!(
        read(&root, &long),
        Err(ConfinedOpenError::Invalid)
    ));
    let long_name = "a".repeat(256);
    assert!(matches!(
        read(&root, &long_name),
        Err(ConfinedOpenError::Invalid)
    ));
}

#[test]
fn missing_files_directories_and_fifos_are_not_served() {
    let tree = Tree::new();
    let fifo = CString::new(
        tree.path("lib/tftpboot/fifo")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    tree.link("fifo", "lib/tftpboot/to-fifo");
    tree.link("sub", "lib/tftpboot/to-dir");
    tree.link("loop-b", "lib/tftpboot/loop-a");
    tree.link("loop-a", "lib/tftpboot/loop-b");
    let root = tree.tftp();
    for request in ["missing", "sub/missing", "sub/file/below", "to-dir/missing"] {
        assert!(
            matches!(read(&root, request), Err(ConfinedOpenError::NotFound)),
            "{request}"
        );
    }
    // A FIFO with no writer would block an open without O_NONBLOCK: this returns at once.
    for request in ["fifo", "to-fifo", "sub", "to-dir", ""] {
        assert!(
            matches!(read(&root, request), Err(ConfinedOpenError::NotAFile)),
            "{request}"
        );
    }
    let looped = read(&root, "loop-a");
    assert!(
        matches!(&looped, Err(ConfinedOpenError::Io(error)) if error.raw_os_error() == Some(libc::ELOOP)),
        "{looped:?}"
    );
}

#[test]
fn a_root_moved_out_of_its_link_targets_serves_nothing() {
    let tree = Tree::new();
    let public = tree.public();
    let profile = public.subdirectory("os/p/boot").unwrap();
    assert_eq!(read(&profile, "initrd").unwrap(), b"initrd");
    // The directory is renamed out from under the open descriptor: the kernel still finds
    // files beneath it, and the real-path check refuses them.
    std::fs::rename(tree.path("lib/public/os/p"), tree.path("moved")).unwrap();
    assert_escapes(&profile, "initrd");
}
