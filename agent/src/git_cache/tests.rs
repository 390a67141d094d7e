use super::options::{GitOptions, Strategy};
use super::*;
use std::os::unix::fs::MetadataExt;

fn run(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository with one commit of `f` = "one"; returns its dir and sha.
fn upstream(root: &Path) -> (PathBuf, String) {
    let repo = root.join("upstream");
    std::fs::create_dir(&repo).unwrap();
    run(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("f"), "one").unwrap();
    run(&repo, &["add", "f"]);
    run(&repo, &["commit", "-qm", "one"]);
    let sha = run(&repo, &["rev-parse", "HEAD"]);
    (repo, sha)
}

fn commit(repo: &Path, content: &str) -> String {
    std::fs::write(repo.join("f"), content).unwrap();
    run(repo, &["commit", "-qam", content]);
    run(repo, &["rev-parse", "HEAD"])
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    url: String,
    sha: String,
    cache: GitCache,
    project: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (repo, sha) = upstream(dir.path());
    let cache = GitCache::new(dir.path().join("work/git"));
    let project = dir.path().join("work/builds/upstream-0/upstream");
    Fixture {
        url: repo.display().to_string(),
        repo,
        sha,
        cache,
        project,
        _dir: dir,
    }
}

impl Fixture {
    async fn checkout(&self, sha: &str, options: &GitOptions) -> Result<Checkout, CheckoutError> {
        let mut log = Vec::new();
        self.cache
            .checkout(&self.url, sha, &self.project, options, &mut log)
            .await
    }

    fn head(&self) -> String {
        run(&self.project, &["rev-parse", "HEAD"])
    }

    fn content(&self) -> String {
        std::fs::read_to_string(self.project.join("f")).unwrap()
    }
}

fn with_strategy(strategy: Strategy) -> GitOptions {
    GitOptions {
        strategy,
        ..GitOptions::default()
    }
}

#[tokio::test]
async fn a_second_checkout_reuses_the_mirror_and_the_build_dir() {
    let fx = fixture();
    let options = GitOptions::default();
    let first = fx.checkout(&fx.sha, &options).await.unwrap();
    assert!(
        first.summary.contains("(new mirror, new build dir)"),
        "{}",
        first.summary
    );
    assert_eq!(first.tracked, TrackedFiles::from_nul_separated(b"f\0"));
    let mirror = fx.cache.mirrors().path_of(&fx.url);
    let objects = std::fs::metadata(mirror.join("objects")).unwrap();
    let dot_git = std::fs::metadata(fx.project.join(".git")).unwrap();
    std::fs::write(fx.project.join("junk"), "left by the job").unwrap();
    std::fs::write(fx.project.join("f"), "changed by the job").unwrap();

    let second = fx.checkout(&fx.sha, &options).await.unwrap();
    assert!(
        second.summary.contains("(cached mirror, reused build dir)"),
        "{}",
        second.summary
    );
    assert!(
        second.summary.starts_with("Fetching "),
        "{}",
        second.summary
    );
    let objects_after = std::fs::metadata(mirror.join("objects")).unwrap();
    assert_eq!(
        (objects.ino(), objects.mtime(), objects.mtime_nsec()),
        (
            objects_after.ino(),
            objects_after.mtime(),
            objects_after.mtime_nsec()
        ),
        "the mirror was not touched"
    );
    assert_eq!(
        std::fs::metadata(fx.project.join(".git")).unwrap().ino(),
        dot_git.ino(),
        "the same .git"
    );
    assert_eq!(fx.content(), "one", "checked out with --force");
    assert!(!fx.project.join("junk").exists(), "cleaned with -ffdx");
    assert_eq!(fx.head(), fx.sha);
    assert_eq!(second.tracked, first.tracked);
    // A job's `git describe`/`git log` see a normal origin.
    assert_eq!(
        run(&fx.project, &["config", "remote.origin.url"]),
        fx.url,
        "origin is the job's repository"
    );
    assert!(!fx.project.join(".git/objects/info/alternates").exists());
}

#[tokio::test]
async fn a_commit_pushed_after_the_mirror_was_made_is_fetched() {
    let fx = fixture();
    fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    let newer = commit(&fx.repo, "two");
    let done = fx.checkout(&newer, &GitOptions::default()).await.unwrap();
    assert!(
        done.summary.contains("(mirror updated, reused build dir)"),
        "{}",
        done.summary
    );
    assert_eq!((fx.head(), fx.content()), (newer.clone(), "two".to_owned()));
    // Back to the older commit: no fetch needed, and a short sha works.
    let done = fx
        .checkout(&fx.sha[..10], &GitOptions::default())
        .await
        .unwrap();
    assert!(done.summary.contains("cached mirror"), "{}", done.summary);
    assert_eq!(fx.head(), fx.sha);
    // A commit no branch reaches any more (force-pushed away) is still in
    // the mirror; one never pushed is a clear error.
    run(&fx.repo, &["reset", "-q", "--hard", &fx.sha]);
    fx.checkout(&newer, &GitOptions::default()).await.unwrap();
    let err = fx
        .checkout(&"f".repeat(40), &GitOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test]
async fn strategies_none_empty_and_clone() {
    let fx = fixture();
    let none = fx
        .checkout(&fx.sha, &with_strategy(Strategy::None))
        .await
        .unwrap();
    assert!(fx.project.is_dir(), "created");
    assert_eq!(
        std::fs::read_dir(&fx.project).unwrap().count(),
        0,
        "no source, no .git"
    );
    assert_eq!(none.tracked, TrackedFiles::default());
    assert!(
        none.summary.contains("GIT_STRATEGY: none"),
        "{}",
        none.summary
    );

    fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    std::fs::write(fx.project.join("junk"), "x").unwrap();
    fx.checkout(&fx.sha, &with_strategy(Strategy::None))
        .await
        .unwrap();
    assert!(
        fx.project.join("junk").exists(),
        "none leaves the dir as it is"
    );
    // A file in the old `.git` tells it from a new one (an inode number
    // may be reused as soon as the old directory is gone).
    let marker = fx.project.join(".git").join("osprey-test-marker");
    std::fs::write(&marker, "old").unwrap();

    let cloned = fx
        .checkout(&fx.sha, &with_strategy(Strategy::Clone))
        .await
        .unwrap();
    assert!(cloned.summary.starts_with("Cloning "), "{}", cloned.summary);
    assert!(
        cloned.summary.contains("new build dir"),
        "{}",
        cloned.summary
    );
    assert!(!marker.exists(), "clone makes a new .git");
    assert_eq!(fx.content(), "one");

    let empty = fx
        .checkout(&fx.sha, &with_strategy(Strategy::Empty))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_dir(&fx.project).unwrap().count(),
        0,
        "emptied"
    );
    assert_eq!(empty.tracked, TrackedFiles::default());
}

#[tokio::test]
async fn a_killed_holder_of_the_mirror_lock_does_not_block_the_next_fetch() {
    let fx = fixture();
    let lock = fx.cache.mirrors().lock_path_of(&fx.url);
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "").unwrap();
    // `--no-fork`: the killed process is the one holding the lock.
    let mut holder = std::process::Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "1000"])
        .spawn()
        .unwrap();
    // Wait (bounded) until the child holds it.
    let probe = std::fs::File::open(&lock).unwrap();
    let mut held = false;
    for _ in 0..500 {
        match probe.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => {
                held = true;
                break;
            }
            Ok(()) => {
                probe.unlock().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(err) => panic!("{err:?}"),
        }
    }
    assert!(held, "the child took the lock");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    holder.wait().unwrap();
    let done = fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    assert_eq!(fx.head(), fx.sha, "{}", done.summary);
}

#[tokio::test]
async fn a_hostile_git_dir_left_by_a_job_runs_nothing() {
    let fx = fixture();
    fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    let marker = fx.project.parent().unwrap().join("pwned");
    let script = fx.project.parent().unwrap().join("evil.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch {}\ncat\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let evil = script.display();
    let dot_git = fx.project.join(".git");
    std::fs::write(
        dot_git.join("config"),
        format!(
            "[core]\n\tsshCommand = {evil}\n\tfsmonitor = {evil}\n\thooksPath = hooks\n\
             [filter \"evil\"]\n\tsmudge = {evil}\n\tclean = {evil}\n\trequired = true\n\
             [alias]\n\tcheckout = !{evil}\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dot_git.join("hooks")).unwrap();
    for hook in ["post-checkout", "reference-transaction", "pre-auto-gc"] {
        std::fs::copy(&script, dot_git.join("hooks").join(hook)).unwrap();
    }
    std::fs::create_dir_all(dot_git.join("info")).unwrap();
    std::fs::write(dot_git.join("info/attributes"), "* filter=evil\n").unwrap();
    std::fs::write(fx.project.join(".gitattributes"), "* filter=evil\n").unwrap();
    std::fs::write(fx.project.join("f"), "changed").unwrap();

    let newer = commit(&fx.repo, "two");
    let done = fx.checkout(&newer, &GitOptions::default()).await.unwrap();
    assert!(
        done.summary.contains("reused build dir"),
        "{}",
        done.summary
    );
    assert!(!marker.exists(), "nothing the job wrote ran");
    assert_eq!((fx.head(), fx.content()), (newer, "two".to_owned()));
    assert!(!dot_git.join("hooks").exists(), "hooks removed");
    let config = std::fs::read_to_string(dot_git.join("config")).unwrap();
    assert!(!config.contains("evil"), "{config}");
}

#[tokio::test]
async fn a_git_dir_that_is_a_link_is_not_reused() {
    let fx = fixture();
    fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    let elsewhere = fx.project.parent().unwrap().join("elsewhere.git");
    std::fs::rename(fx.project.join(".git"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fx.project.join(".git")).unwrap();
    let done = fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    assert!(done.summary.contains("new build dir"), "{}", done.summary);
    assert!(std::fs::symlink_metadata(fx.project.join(".git"))
        .unwrap()
        .is_dir());
    assert!(
        elsewhere.join("HEAD").exists(),
        "the link's target was not touched"
    );
}

#[tokio::test]
async fn a_depth_gives_a_shallow_work_tree_and_the_mirror_stays_complete() {
    let fx = fixture();
    let newer = commit(&fx.repo, "two");
    let shallow = GitOptions {
        depth: Some(1),
        ..GitOptions::default()
    };
    fx.checkout(&newer, &shallow).await.unwrap();
    assert_eq!(
        run(&fx.project, &["rev-parse", "--is-shallow-repository"]),
        "true"
    );
    assert_eq!(run(&fx.project, &["rev-list", "--count", "HEAD"]), "1");
    let mirror = fx.cache.mirrors().path_of(&fx.url);
    assert_eq!(
        run(&mirror, &["rev-parse", "--is-shallow-repository"]),
        "false"
    );
    // Unset again: the reused dir gets its whole history back.
    fx.checkout(&newer, &GitOptions::default()).await.unwrap();
    assert_eq!(
        run(&fx.project, &["rev-parse", "--is-shallow-repository"]),
        "false"
    );
    assert_eq!(run(&fx.project, &["rev-list", "--count", "HEAD"]), "2");
}

#[tokio::test]
async fn no_checkout_and_no_clean_keep_the_files() {
    let fx = fixture();
    fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    std::fs::write(fx.project.join("junk"), "kept").unwrap();
    let newer = commit(&fx.repo, "two");
    let options = GitOptions {
        checkout: false,
        clean_flags: None,
        ..GitOptions::default()
    };
    let done = fx.checkout(&newer, &options).await.unwrap();
    assert_eq!(fx.head(), newer, "HEAD at the commit");
    assert_eq!(fx.content(), "one", "files not checked out");
    assert!(fx.project.join("junk").exists(), "not cleaned");
    assert_eq!(done.tracked, TrackedFiles::from_nul_separated(b"f\0"));
}

#[tokio::test]
async fn a_prefetch_fills_the_mirror_so_the_checkout_needs_no_fetch() {
    let fx = fixture();
    let tasks = Tasks::new();
    fx.cache.prefetch(&tasks, fx.url.clone(), fx.sha.clone());
    // Bad input is dropped, never an error.
    fx.cache.prefetch(&tasks, "-oops".into(), fx.sha.clone());
    fx.cache
        .prefetch(&tasks, "/nonexistent".into(), fx.sha.clone());
    tasks.wait().await;
    let done = fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    assert!(done.summary.contains("cached mirror"), "{}", done.summary);
}

#[tokio::test]
async fn bad_input_is_refused_before_git_runs() {
    let fx = fixture();
    let err = fx
        .checkout("--help", &GitOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CheckoutError::BadSha(_)));
    let mut log = Vec::new();
    for url in ["", "-u", "https://x/\n[core]"] {
        let err = fx
            .cache
            .checkout(url, &fx.sha, &fx.project, &GitOptions::default(), &mut log)
            .await
            .unwrap_err();
        assert!(matches!(err, CheckoutError::BadUrl(_)), "{url:?}: {err}");
    }
}

#[test]
fn mirrors_are_named_by_the_url_without_credentials() {
    let mirrors = Mirrors::new(PathBuf::from("/w/git"));
    let one = mirrors.path_of("https://ci:token-1@example.test/app.git");
    let two = mirrors.path_of("https://ci:token-2@example.test/app.git");
    assert_eq!(one, two, "job tokens differ per job");
    assert_ne!(one, mirrors.path_of("https://example.test/other.git"));
    let name = one.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.len(), 16 + ".git".len(), "{name}");
    assert!(one.starts_with("/w/git"));
}

#[tokio::test]
async fn the_job_token_in_the_url_does_not_outlive_the_job_on_disk() {
    let fx = fixture();
    fx.checkout(&fx.sha, &GitOptions::default()).await.unwrap();
    let url = "https://gitlab-ci-token:s3cret-token@git.test/g/app.git";
    // What the job's config holds while it runs.
    worktree::forget_credentials(&fx.project, "/no/credentials");
    run(&fx.project, &["config", "remote.origin.url", url]);
    worktree::forget_credentials(&fx.project, url);
    let config = std::fs::read_to_string(fx.project.join(".git/config")).unwrap();
    assert!(!config.contains("s3cret-token"), "{config}");
    assert_eq!(
        run(&fx.project, &["config", "remote.origin.url"]),
        "https://git.test/g/app.git"
    );
}
