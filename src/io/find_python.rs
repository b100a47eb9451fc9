//! Finding the Python interpreter that runs a target, for the controller (and the client
//! when the target's own interpreter cannot be used).
use std::path::{Path, PathBuf};

/// Finds the interpreter: `--python`, else `$HELI_PYTHON`, else `python3.14` on PATH.
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
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("python3.14");
        if executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "Python 3.14 not found: tried --python (not given), $HELI_PYTHON (not set) and python3.14 on PATH ({}). Install Python 3.14 or pass --python PATH (scripts/provision-python.sh provisions one)",
        path.to_string_lossy()
    ))
}
