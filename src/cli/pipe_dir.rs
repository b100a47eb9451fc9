//! Which pipe directory a binary uses: `--pipe-dir DIR`, `--name NAME`, or the same from
//! the environment (`HELI_PIPE_DIR`, `HELI_NAME`), else the seed's default.
//!
//! Precedence: a flag beats the environment, the environment beats the default; within
//! each, a directory beats a name (`--pipe-dir` and `--name` together are refused by the
//! command line). A name picks `<default>-<uid>/NAME`: one private directory per user
//! holds every named controller, so `heli-client ls` finds them all and another user's
//! never mix in. The unnamed default stays the seed's `/tmp/heliparent_debug`.
pub use crate::io::pipes::named_root;
use crate::io::pipes::DEFAULT_PIPE_DIR;
use std::path::PathBuf;

pub const ENV_PIPE_DIR: &str = "HELI_PIPE_DIR";
pub const ENV_NAME: &str = "HELI_NAME";

/// Longest controller name.
pub const MAX_NAME: usize = 64;

/// A controller name is one path component of letters, digits, `.`, `_` and `-`, not
/// starting with `.` (no `..`, no hidden entries, nothing a shell or a path would read
/// differently).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a controller name cannot be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "controller name '{}…' is longer than {MAX_NAME} characters",
            name.chars().take(20).collect::<String>()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("controller name '{name}' must not start with '.'"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "controller name '{name}' has '{bad}': use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Where the pipe directory came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Environment,
    Default,
}

/// The pipe directory, and whether it is a named one (its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub dir: PathBuf,
    pub name: Option<String>,
    pub source: Source,
}

/// Decides the pipe directory from the flags and the environment's values (an empty
/// variable counts as unset).
pub fn choose(
    flag_dir: Option<PathBuf>,
    flag_name: Option<String>,
    env_dir: Option<String>,
    env_name: Option<String>,
    uid: u32,
) -> Result<Chosen, String> {
    let named = |name: String, source: Source, whence: &str| {
        check_name(&name).map_err(|e| format!("{whence}: {e}"))?;
        Ok(Chosen {
            dir: named_root(uid).join(&name),
            name: Some(name),
            source,
        })
    };
    let env_dir = env_dir.filter(|v| !v.is_empty());
    let env_name = env_name.filter(|v| !v.is_empty());
    match (flag_dir, flag_name, env_dir, env_name) {
        (Some(dir), _, _, _) => Ok(Chosen {
            dir,
            name: None,
            source: Source::Flag,
        }),
        (None, Some(name), _, _) => named(name, Source::Flag, "--name"),
        (None, None, Some(dir), _) => Ok(Chosen {
            dir: PathBuf::from(dir),
            name: None,
            source: Source::Environment,
        }),
        (None, None, None, Some(name)) => named(name, Source::Environment, ENV_NAME),
        (None, None, None, None) => Ok(Chosen {
            dir: PathBuf::from(DEFAULT_PIPE_DIR),
            name: None,
            source: Source::Default,
        }),
    }
}

/// [`choose`] with this process's environment.
pub fn choose_from_env(
    flag_dir: Option<PathBuf>,
    flag_name: Option<String>,
    uid: u32,
) -> Result<Chosen, String> {
    let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    choose(flag_dir, flag_name, var(ENV_PIPE_DIR), var(ENV_NAME), uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(
        flag_dir: Option<&str>,
        flag_name: Option<&str>,
        env_dir: Option<&str>,
        env_name: Option<&str>,
    ) -> Result<(String, Source), String> {
        choose(
            flag_dir.map(PathBuf::from),
            flag_name.map(String::from),
            env_dir.map(String::from),
            env_name.map(String::from),
            1000,
        )
        .map(|c| (c.dir.display().to_string(), c.source))
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_default() {
        let default = (DEFAULT_PIPE_DIR.to_string(), Source::Default);
        assert_eq!(dir(None, None, None, None), Ok(default.clone()));
        assert_eq!(dir(None, None, Some(""), Some("")), Ok(default));
        assert_eq!(
            dir(None, None, Some("/e"), Some("n")),
            Ok(("/e".into(), Source::Environment))
        );
        assert_eq!(
            dir(None, None, None, Some("web")),
            Ok((format!("{DEFAULT_PIPE_DIR}-1000/web"), Source::Environment))
        );
        assert_eq!(
            dir(None, Some("api"), Some("/e"), Some("n")),
            Ok((format!("{DEFAULT_PIPE_DIR}-1000/api"), Source::Flag))
        );
        assert_eq!(
            dir(Some("/f"), None, Some("/e"), Some("n")),
            Ok(("/f".into(), Source::Flag))
        );
    }

    #[test]
    fn names_are_single_plain_components() {
        for good in ["web", "worker-2", "a.b_c", "X9"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("..", "start with '.'"),
            (".hidden", "start with '.'"),
            ("a/b", "has '/'"),
            ("sp ace", "has ' '"),
            ("é", "has 'é'"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check_name(&"a".repeat(65)).unwrap_err().contains("longer"));
        assert!(dir(None, Some("../x"), None, None)
            .unwrap_err()
            .starts_with("--name: "));
        assert!(dir(None, None, None, Some("a/b"))
            .unwrap_err()
            .starts_with("HELI_NAME: "));
    }
}
