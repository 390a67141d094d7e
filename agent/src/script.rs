//! Generates the POSIX shell scripts a job runs, as GitLab Runner does: each
//! command echoed as `$ command` before it runs, stopping at the first command
//! that fails. The same text runs under the shell and the Docker executors.

/// The main script: `before_script` then `script`, stopping at the first failure.
pub fn main_script(before_script: &[String], script: &[String]) -> String {
    generate(before_script.iter().chain(script))
}

/// The `after_script`, or `None` when it has no commands.
pub fn after_script(after_script: &[String]) -> Option<String> {
    if after_script.is_empty() {
        None
    } else {
        Some(generate(after_script.iter()))
    }
}

fn generate<'a>(commands: impl Iterator<Item = &'a String>) -> String {
    // `set -e` gives GitLab's semantics: a failing command ends the script with
    // its status, but not one tested by `if`, `||` or `&&`.
    let mut text = String::from("set -e\n");
    for command in commands {
        let command = command.trim_end();
        let echoed = match command.split_once('\n') {
            Some((first, _)) => format!("$ {first} # collapsed multi-line command"),
            None => format!("$ {command}"),
        };
        text.push_str("printf '%s\\n' ");
        text.push_str(&single_quote(&echoed));
        text.push('\n');
        text.push_str(command);
        text.push('\n');
    }
    text
}

/// Quotes `text` for a POSIX shell so it is one word, taken literally.
pub fn single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_echoed_then_run() {
        let script = main_script(&["echo a".into()], &["echo 'b'".into()]);
        assert_eq!(
            script,
            "set -e\nprintf '%s\\n' '$ echo a'\necho a\nprintf '%s\\n' '$ echo '\\''b'\\'''\necho 'b'\n"
        );
    }

    #[test]
    fn empty_after_script_is_none() {
        assert_eq!(after_script(&[]), None);
        assert!(after_script(&["true".into()]).is_some());
    }
}
