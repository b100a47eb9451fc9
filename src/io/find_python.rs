//! Finding the Python interpreter that runs a target, for the controller (and the client
//! when the target's own interpreter cannot be used).
use std::path::{Path, PathBuf};

/// Finds the interpreter: `--python`, else `$HELI_PYTHON`, else `python3.X` on PATH for
/// each supported minor version, newest first. Any interpreter is accepted here: the
/// version is read from the target itself when a grant is asked for.
pub fn resolve_python(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    };
    if let Some(p) = explicit {
        return if executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--python {}: not an executable file", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("HELI_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!(
                "HELI_PYTHON={}: not an executable file",
                p.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let names: Vec<String> = crate::pyruntime::LAYOUTS
        .iter()
        .rev()
        .map(|l| format!("python{}.{}", l.major, l.minor))
        .collect();
    for name in &names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "Python {supported} not found: tried --python (not given), $HELI_PYTHON (not set) and {names} on PATH ({}). Install Python {supported} or pass --python PATH (scripts/provision-python.sh provisions one)",
        path.to_string_lossy(),
        supported = crate::pyruntime::supported_versions().replace(", ", " or "),
        names = names.join(", "),
    ))
}
