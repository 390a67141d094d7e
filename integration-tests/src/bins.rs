//! Locates the workspace binaries next to the running test executable
//! (`target/debug/deps/<test>` → `target/debug/<binary>`).

use std::path::PathBuf;

/// Path of a workspace binary, e.g. `osprey-coordinator`. Panics with the
/// command to run when it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary {} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}
