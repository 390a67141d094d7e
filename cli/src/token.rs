//! Where the CLI's API token comes from: `--token`, else `$OSPREY_TOKEN`
//! (both through clap), else the first token file that exists of
//! `$XDG_CONFIG_HOME/osprey/token` and `$HOME/.config/osprey/token`.
//! The token itself is never printed, not even in errors.

use crate::args::SecretArg;
use anyhow::Context as _;
use std::ffi::OsString;
use std::path::PathBuf;

/// The token files to look at, in order.
pub fn token_files(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    // The XDG spec ignores a relative (or empty) XDG_CONFIG_HOME.
    if let Some(xdg) = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        files.push(xdg.join("osprey").join("token"));
    }
    if let Some(home) = home
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
    {
        let file = home.join(".config").join("osprey").join("token");
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

/// The token to send: the flag's (or environment's) value, else the first
/// token file that exists, trimmed. An empty value means no token.
pub fn resolve_token(
    from_args: Option<&SecretArg>,
    files: &[PathBuf],
) -> anyhow::Result<Option<SecretArg>> {
    if let Some(token) = from_args {
        let trimmed = token.0.trim();
        return Ok((!trimmed.is_empty()).then(|| SecretArg(trimmed.to_owned())));
    }
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let trimmed = text.trim();
                return Ok((!trimmed.is_empty()).then(|| SecretArg(trimmed.to_owned())));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read the token file {}", file.display()))
            }
        }
    }
    Ok(None)
}

/// The token for this process, from its arguments and environment.
pub fn token_for_process(from_args: Option<&SecretArg>) -> anyhow::Result<Option<SecretArg>> {
    let files = token_files(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    );
    resolve_token(from_args, &files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_token(dir: &std::path::Path, text: &str) -> PathBuf {
        let file = dir.join("osprey").join("token");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn files_are_xdg_then_home() {
        let files = token_files(Some("/xdg".into()), Some("/home/me".into()));
        assert_eq!(
            files,
            vec![
                PathBuf::from("/xdg/osprey/token"),
                PathBuf::from("/home/me/.config/osprey/token")
            ]
        );
        assert_eq!(
            token_files(Some("relative".into()), Some("/home/me".into())),
            vec![PathBuf::from("/home/me/.config/osprey/token")]
        );
        assert_eq!(
            token_files(Some("/home/me/.config".into()), Some("/home/me".into())),
            vec![PathBuf::from("/home/me/.config/osprey/token")]
        );
        assert!(token_files(None, None).is_empty());
    }

    #[test]
    fn the_flag_wins_over_files() {
        let xdg = tempfile::tempdir().unwrap();
        let files = vec![write_token(xdg.path(), "from-file\n")];
        let flag = SecretArg("  from-flag ".into());
        assert_eq!(
            resolve_token(Some(&flag), &files).unwrap(),
            Some(SecretArg("from-flag".into()))
        );
    }

    #[test]
    fn the_first_existing_file_is_read_and_trimmed() {
        let xdg = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let home_file = write_token(&home.path().join(".config"), "home-token\n");
        let xdg_file = xdg.path().join("osprey").join("token");
        // No XDG file: the home one.
        let files = vec![xdg_file.clone(), home_file.clone()];
        assert_eq!(
            resolve_token(None, &files).unwrap(),
            Some(SecretArg("home-token".into()))
        );
        // With one, the XDG file.
        write_token(xdg.path(), "\n xdg-token \n");
        assert_eq!(
            resolve_token(None, &files).unwrap(),
            Some(SecretArg("xdg-token".into()))
        );
        // None at all: no token.
        assert_eq!(
            resolve_token(None, &[xdg.path().join("nope")]).unwrap(),
            None
        );
    }

    #[test]
    fn empty_values_mean_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![write_token(dir.path(), "  \n")];
        assert_eq!(resolve_token(None, &files).unwrap(), None);
        assert_eq!(
            resolve_token(Some(&SecretArg(String::new())), &[]).unwrap(),
            None
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let file = dir.path().join("token");
        fs::create_dir(&file).unwrap();
        let error = resolve_token(None, std::slice::from_ref(&file)).unwrap_err();
        assert!(format!("{error:#}").contains(&file.display().to_string()));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = SecretArg("hunter2-token".into());
        assert!(!format!("{token:?}").contains("hunter2"));
    }
}
