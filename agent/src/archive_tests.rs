//! Hostile archives, built header by header so that nothing on the way
//! checks them, against [`super::extract`].

use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use tar::EntryType;

/// One raw entry: name and link name are written as bytes, unchecked.
struct Raw {
    name: &'static str,
    kind: EntryType,
    link: Option<&'static str>,
    mode: u32,
}

fn file(name: &'static str) -> Raw {
    Raw {
        name,
        kind: EntryType::Regular,
        link: None,
        mode: 0o644,
    }
}

fn dir(name: &'static str) -> Raw {
    Raw {
        kind: EntryType::Directory,
        mode: 0o755,
        ..file(name)
    }
}

fn symlink(name: &'static str, target: &'static str) -> Raw {
    Raw {
        kind: EntryType::Symlink,
        link: Some(target),
        ..file(name)
    }
}

fn hard_link(name: &'static str, target: &'static str) -> Raw {
    Raw {
        kind: EntryType::Link,
        link: Some(target),
        ..file(name)
    }
}

fn special(name: &'static str, kind: EntryType) -> Raw {
    Raw { kind, ..file(name) }
}

fn with_mode(raw: Raw, mode: u32) -> Raw {
    Raw { mode, ..raw }
}

fn write_tar(path: &Path, entries: &[Raw]) {
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    for raw in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..raw.name.len()].copy_from_slice(raw.name.as_bytes());
        if let Some(link) = raw.link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(raw.kind);
        header.set_mode(raw.mode);
        let data: &[u8] = if raw.kind == EntryType::Regular {
            b"data"
        } else {
            b""
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.finish().unwrap();
}

/// A temp dir holding `p/` (the project dir, with a tracked file `t` in
/// it) and `outside/`.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("p");
    fs::create_dir_all(project.join(".git")).unwrap();
    fs::write(project.join("t"), "tracked").unwrap();
    fs::create_dir(dir.path().join("outside")).unwrap();
    let archive = dir.path().join("a.tar");
    (dir, project, archive)
}

/// The project dir's entries, sorted, as the archive left them.
fn listing(project: &Path) -> Vec<String> {
    let mut names: Vec<String> = walkdir::WalkDir::new(project)
        .min_depth(1)
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            entry
                .path()
                .strip_prefix(project)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

fn refused(entries: &[Raw]) -> ExtractError {
    let (_dir, project, archive) = setup();
    write_tar(&archive, entries);
    let error = extract(&archive, &project).unwrap_err();
    assert_eq!(
        listing(&project),
        [".git", "t"],
        "a refused archive writes nothing ({error})"
    );
    error
}

#[test]
fn escaping_paths_and_links_are_refused() {
    for entries in [
        vec![file("../evil")],
        vec![file("a/../../evil")],
        vec![file("/tmp/osprey-evil-abs")],
        vec![symlink("link", "../../etc")],
        vec![symlink("link", "/etc")],
    ] {
        let error = refused(&entries);
        assert!(
            matches!(
                error,
                ExtractError::HostileEntry(_) | ExtractError::HostileLink(_)
            ),
            "{error}"
        );
    }
    assert!(!Path::new("/tmp/osprey-evil-abs").exists());
}

#[test]
fn a_link_chain_through_an_earlier_link_is_refused() {
    // Each link alone stays inside; `d/e` is `e` in the project dir, and
    // `..` from there is outside.
    let error = refused(&[symlink("d", "."), symlink("d/e", "..")]);
    assert!(
        matches!(error, ExtractError::HostileLink(ref e) if e == "d/e"),
        "{error}"
    );
    // An entry path through an earlier link is resolved through it too.
    let error = refused(&[symlink("d", "."), file("d/../evil")]);
    assert!(matches!(error, ExtractError::HostileEntry(_)), "{error}");
    // A link made harmless-looking before the link it goes through.
    let error = refused(&[symlink("l", "a/../x"), symlink("a", ".")]);
    assert!(
        matches!(error, ExtractError::HostileLink(ref e) if e == "l"),
        "{error}"
    );
    // A link that was already in the project dir is followed as well.
    let (dir, project, archive) = setup();
    std::os::unix::fs::symlink(dir.path().join("outside"), project.join("out")).unwrap();
    write_tar(&archive, &[file("out/evil")]);
    let error = extract(&archive, &project).unwrap_err();
    assert!(matches!(error, ExtractError::HostileEntry(_)), "{error}");
    assert_eq!(fs::read_dir(dir.path().join("outside")).unwrap().count(), 0);
}

#[test]
fn links_that_stay_inside_are_extracted_and_followed() {
    let (_dir, project, archive) = setup();
    write_tar(
        &archive,
        &[
            dir("sub/"),
            symlink("d", "sub"),
            file("d/f"),
            symlink("sub/up", ".."),
        ],
    );
    assert_eq!(extract(&archive, &project).unwrap(), 4);
    assert_eq!(fs::read_to_string(project.join("sub/f")).unwrap(), "data");
    assert_eq!(
        fs::read_link(project.join("sub/up")).unwrap(),
        Path::new("..")
    );
    assert_eq!(
        listing(&project),
        [".git", "d", "sub", "sub/f", "sub/up", "t"]
    );
}

#[test]
fn nothing_is_extracted_into_dot_git() {
    for entries in [
        vec![file(".git/config")],
        vec![file("./.git/hooks/post-checkout")],
        vec![dir(".git/hooks/")],
        vec![symlink("x", ".git"), file("x/config")],
        vec![symlink("hooks", ".git/hooks")],
    ] {
        let error = refused(&entries);
        assert!(
            matches!(
                error,
                ExtractError::GitDir(_) | ExtractError::HostileLink(_)
            ),
            "{error}"
        );
    }
    assert!(matches!(
        refused(&[file(".git/config")]),
        ExtractError::GitDir(_)
    ));
}

#[test]
fn setuid_setgid_and_sticky_bits_are_stripped() {
    let (_dir, project, archive) = setup();
    write_tar(
        &archive,
        &[
            with_mode(dir("shared/"), 0o1777),
            with_mode(file("shared/suid"), 0o4755),
            with_mode(file("sgid"), 0o2750),
        ],
    );
    assert_eq!(extract(&archive, &project).unwrap(), 3);
    let mode = |name: &str| fs::metadata(project.join(name)).unwrap().mode() & 0o7777;
    assert_eq!(mode("shared"), 0o777);
    assert_eq!(mode("shared/suid"), 0o755);
    assert_eq!(mode("sgid"), 0o750);
}

#[test]
fn devices_and_fifos_are_refused() {
    for (kind, what) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let error = refused(&[file("ok"), special("dev", kind)]);
        assert!(
            matches!(error, ExtractError::Unsupported { kind, .. } if kind == what),
            "{error}"
        );
    }
}

#[test]
fn hard_links_only_to_files_extracted_before() {
    let (_dir, project, archive) = setup();
    write_tar(&archive, &[file("a"), hard_link("b", "a")]);
    assert_eq!(extract(&archive, &project).unwrap(), 2);
    let (a, b) = (
        fs::metadata(project.join("a")).unwrap(),
        fs::metadata(project.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert!(b.permissions().mode() & 0o777 != 0);

    for entries in [
        // A file of the checkout, not of the archive.
        vec![hard_link("b", "t")],
        vec![hard_link("b", "../outside")],
        vec![hard_link("b", "/etc/passwd")],
        vec![dir("d/"), hard_link("b", "d")],
        vec![hard_link("b", "a"), file("a")],
    ] {
        let error = refused(&entries);
        assert!(matches!(error, ExtractError::BadHardLink(_)), "{error}");
    }
}

#[test]
fn an_entry_does_not_replace_a_directory() {
    let error = refused(&[dir("d/"), file("d")]);
    assert!(matches!(error, ExtractError::Conflict(_)), "{error}");
    let error = refused(&[file("d/f"), symlink("d", "t")]);
    assert!(matches!(error, ExtractError::Conflict(_)), "{error}");
}
