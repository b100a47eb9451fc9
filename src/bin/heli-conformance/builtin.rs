//! The cases compiled into the binary, so that `heli-conformance` runs from any directory:
//! `tests/fixtures/conformance/*.json` and the target scripts they name. At start they are
//! unpacked into a private directory laid out like `tests/fixtures` (a case file names its
//! target relative to itself, `../counter.py`), then loaded like `--cases DIR`: one path
//! for both, and the targets are real files the controller under test can run.
use crate::runner::WorkDir;
use std::fs;
use std::path::PathBuf;

/// Where the case files sit in the unpacked directory, as in `tests/fixtures`.
const CASES_SUBDIR: &str = "conformance";

/// `(file name, contents)` of every case file in `tests/fixtures/conformance`.
const CASE_FILES: &[(&str, &str)] = &[
    (
        "bad_inputs.json",
        include_str!("../../../tests/fixtures/conformance/bad_inputs.json"),
    ),
    (
        "clients.json",
        include_str!("../../../tests/fixtures/conformance/clients.json"),
    ),
    (
        "commands.json",
        include_str!("../../../tests/fixtures/conformance/commands.json"),
    ),
    (
        "extensions.json",
        include_str!("../../../tests/fixtures/conformance/extensions.json"),
    ),
    (
        "lifecycle.json",
        include_str!("../../../tests/fixtures/conformance/lifecycle.json"),
    ),
];

/// `(file name, contents)` of every target script those case files name.
const TARGETS: &[(&str, &str)] = &[
    (
        "counter.py",
        include_str!("../../../tests/fixtures/counter.py"),
    ),
    (
        "exit_when_stdin_closes.py",
        include_str!("../../../tests/fixtures/exit_when_stdin_closes.py"),
    ),
];

/// The built-in cases written out; the directory is removed when this is dropped, so it
/// must outlive every controller that runs one of its targets.
pub struct Unpacked {
    dir: WorkDir,
}

impl Unpacked {
    pub fn write() -> Result<Unpacked, String> {
        let dir = WorkDir::create()?;
        let write = |path: PathBuf, text: &str| {
            fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
        };
        for (name, text) in TARGETS {
            write(dir.path.join(name), text)?;
        }
        let cases = dir.path.join(CASES_SUBDIR);
        fs::create_dir(&cases).map_err(|e| format!("creating {}: {e}", cases.display()))?;
        for (name, text) in CASE_FILES {
            write(cases.join(name), text)?;
        }
        Ok(Unpacked { dir })
    }

    /// The directory to load the case files from.
    pub fn cases_dir(&self) -> PathBuf {
        self.dir.path.join(CASES_SUBDIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::load_cases;
    use std::path::Path;

    /// A case file added to the fixtures but not here would silently not be built in.
    #[test]
    fn every_fixture_case_file_is_built_in() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance");
        let mut on_disk: Vec<String> = fs::read_dir(&fixtures)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        on_disk.sort();
        let built_in: Vec<&str> = CASE_FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            on_disk, built_in,
            "tests/fixtures/conformance (left) and CASE_FILES (right) differ"
        );
    }

    /// Loading checks that every case's target exists: none is missing from `TARGETS`.
    #[test]
    fn the_built_in_cases_load_with_their_targets() {
        let unpacked = Unpacked::write().unwrap();
        let files = load_cases(&unpacked.cases_dir()).unwrap();
        assert!(files.iter().map(|file| file.cases.len()).sum::<usize>() > 20);
        for case in files.iter().flat_map(|file| &file.cases) {
            assert!(
                case.target.starts_with(&unpacked.dir.path),
                "{}",
                case.target.display()
            );
        }
        let dir = unpacked.dir.path.clone();
        drop(unpacked);
        assert!(!dir.exists());
    }
}
