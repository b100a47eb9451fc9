//! Every common build of the minor version under test, through the whole user journey:
//! Debian's debug build, the interpreter in a shared libpython run by a launcher (how
//! `--enable-shared` builds and embedding programs run), targets that imported `ctypes`
//! (gh-144563: a second libpython mapping), and versions this build does not know.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use helicopter_parent::io::inject::{PythonProcess, RuntimeFoundBy, ThreadChoice};
use helicopter_parent::pyruntime::supported_versions;
use object::{Object, ObjectSection};

use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use helicopter_parent::core::supervisor::ControllerExit;

#[test]
fn debug_build_seed_session() {
    let python = python_build("dbg");
    let mut controller = Controller::start_target(&TargetSpec::new(&python, "counter.py"), &[]);
    assert_seed_session(&mut controller);
}

#[test]
fn shared_libpython_seed_session() {
    let python = python_build("shared");
    let mut controller = Controller::start_target(&TargetSpec::new(&python, "counter.py"), &[]);
    assert_seed_session(&mut controller);
}

#[test]
fn ctypes_target_seed_session() {
    let mut controller =
        Controller::start_target(&TargetSpec::new(python(), "counter_ctypes.py"), &[]);
    assert_seed_session(&mut controller);
}

#[test]
fn ctypes_target_on_shared_libpython_seed_session() {
    let python = python_build("shared");
    let target = TargetSpec::new(&python, "counter_ctypes.py");
    assert_seed_session(&mut Controller::start_target(&target, &[]));
}

/// libpython of the minor under test, as the shared build ships it.
fn libpython() -> PathBuf {
    let (major, minor) = python_minor();
    let launcher = python_build("shared");
    let prefix = launcher.parent().unwrap().parent().unwrap();
    prefix.join(format!(
        "lib/x86_64-linux-gnu/libpython{major}.{minor}.so.1.0"
    ))
}

#[test]
fn a_libpython_loaded_through_ctypes_into_a_static_interpreter_is_ignored() {
    // gh-144563 as it happens in the field: an interpreter with its runtime in the
    // executable, and a second, never-initialised runtime in a libpython that something
    // loaded after `_ctypes`. pdb (CPython's own search) must cope too, and does.
    let target = TargetSpec::new(python(), "counter_ctypes.py").arg(libpython().to_str().unwrap());
    let mut controller = Controller::start_target(&target, &[]);
    controller.stdout.wait_for("counter ready");
    let maps = fs::read_to_string(format!("/proc/{}/maps", controller.target_pid)).unwrap();
    assert!(maps.contains("libpython"), "the second runtime is mapped");
    assert_seed_session(&mut controller);
}

#[test]
fn a_second_libpython_mapped_before_the_real_one_is_skipped() {
    // The harder order: in a shared-libpython process, a copy of libpython loaded later
    // sits at a lower address, so /proc/PID/maps lists it first. Its `.PyRuntime` holds the
    // cookie (initial data) but never an interpreter; the injector must skip it.
    let (major, minor) = python_minor();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp
        .path()
        .join(format!("libpython{major}.{minor}-second.so.1.0"));
    fs::copy(libpython(), &copy).unwrap();
    let python = python_build("shared");
    let mut child = KillOnDrop(Some(
        Command::new(&python)
            .arg(fixture("counter_ctypes.py"))
            .arg(&copy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let target = child.0.as_mut().unwrap();
    let pid = target.id() as i32;
    let mut stdout = Lines::spawn(target.stdout.take().unwrap());
    stdout.wait_for("counter ready");

    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let first = maps.find("-second.so").expect("the copy is mapped");
    let real = maps
        .find(libpython().to_str().unwrap())
        .expect("libpython is mapped");
    assert!(
        first < real,
        "the copy must come first in maps order:\n{maps}"
    );

    let process = PythonProcess::open(pid).unwrap();
    match process.runtime_found_by() {
        RuntimeFoundBy::Section { elf } => {
            assert!(!elf.contains("-second.so"), "took the dormant copy: {elf}")
        }
        other => panic!("expected the real section, got {other:?}"),
    }
    let script = tmp.path().join("probe.py");
    fs::write(&script, "import os\nos.write(1, b'injected second\\n')\n").unwrap();
    process.schedule(ThreadChoice::Main, &script).unwrap();
    stdout.wait_for("injected second");
}

/// A copy of the interpreter under test whose `_Py_DebugOffsets.version` says `hex`: the
/// honest stand-in for a version this build does not know.
fn python_claiming(hex: u64, name: &str, dir: &Path) -> TargetSpec {
    python_with_slot(8, hex, name, dir)
}

/// A copy of the interpreter under test with the `u64` at `position` of its
/// `_Py_DebugOffsets` (in `.PyRuntime`) set to `value`. The interpreter itself never reads
/// the table, so the copy runs normally; PYTHONHOME gives it its standard library.
fn python_with_slot(position: usize, value: u64, name: &str, dir: &Path) -> TargetSpec {
    let mut bytes = fs::read(python()).unwrap();
    let offset = {
        let elf = object::File::parse(&*bytes).unwrap();
        let section = elf.section_by_name(".PyRuntime").expect(".PyRuntime");
        section.file_range().expect("in the file").0 as usize
    };
    assert_eq!(&bytes[offset..offset + 8], b"xdebugpy");
    let slot = offset + position;
    bytes[slot..slot + 8].copy_from_slice(&value.to_ne_bytes());
    let copy = dir.join(name);
    fs::write(&copy, bytes).unwrap();
    let mut perms = fs::metadata(&copy).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&copy, perms).unwrap();
    let home = python().parent().unwrap().parent().unwrap();
    TargetSpec::new(&copy, "counter.py").env("PYTHONHOME", home)
}

fn refusal_for(target: &TargetSpec) -> String {
    let mut controller = Controller::start_target(target, &[]);
    controller.stdout.wait_for("counter ready");
    let (code, out) = controller.client("attach\np counter\nq\nterminate\n");
    assert_eq!(code, ClientExit::CommandFailed.code(), "{out}");
    assert_eq!(
        controller.wait(),
        ControllerExit::Terminated.code(),
        "{out}"
    );
    out
}

#[test]
fn an_unknown_minor_version_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = refusal_for(&python_claiming(0x0310_00F0, "python3.16", tmp.path()));
    let expected = format!(
        "runs Python 3.16.0, which is not supported; supported: {}",
        supported_versions()
    );
    assert!(out.contains(&expected), "{out}");
    assert!(out.contains("❌ Permission denied"), "{out}");
    assert!(supported_versions().contains("3.15"));
}

#[test]
fn a_prerelease_from_before_the_layout_froze_is_refused_by_name() {
    // 3.15.0b3 had a different thread state: its table is not the one this build knows.
    let tmp = tempfile::tempdir().unwrap();
    let out = refusal_for(&python_claiming(0x030F_00B3, "python3.15b3", tmp.path()));
    assert!(
        out.contains("runs Python 3.15.0b3 (a pre-release), which is not supported"),
        "{out}"
    );
}

#[test]
fn a_free_threaded_build_is_refused_clearly() {
    // No free-threaded (3.14t/3.15t) build is available to test against: a GIL build whose
    // table says `free_threaded = 1` stands in for one, and must be refused, not injected.
    let tmp = tempfile::tempdir().unwrap();
    let (major, minor) = python_minor();
    let name = format!("python{major}.{minor}t");
    let out = refusal_for(&python_with_slot(16, 1, &name, tmp.path()));
    assert!(
        out.contains("runs a free-threaded (no-GIL) Python build, which is not supported"),
        "{out}"
    );
}

#[test]
fn the_controller_finds_the_minor_under_test_on_path() {
    // Without --python and $HELI_PYTHON, `python3.X` on PATH for each supported minor.
    let (major, minor) = python_minor();
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = tmp.path().join("bin");
    fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(python(), bin_dir.join(format!("python{major}.{minor}"))).unwrap();
    let dir = tmp.path().join("pipes");
    let mut child = KillOnDrop(Some(
        Command::new(bin("heli-controller"))
            .arg("--pipe-dir")
            .arg(&dir)
            .arg(fixture("counter.py"))
            .env("PATH", &bin_dir)
            .env_remove("HELI_PYTHON")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let controller = child.0.as_mut().unwrap();
    let mut stderr = Lines::spawn(controller.stderr.take().unwrap());
    let mut stdout = Lines::spawn(controller.stdout.take().unwrap());
    let started = stderr.wait_for(" started: ");
    assert!(
        started.contains(&format!("{}/python{major}.{minor} ", bin_dir.display())),
        "{started}"
    );
    stdout.wait_for("counter ready");
    let (code, out) = run_client(&dir, "attach\np counter\nq\nterminate\n", &[]);
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    assert_eq!(pdb_numbers(&out).len(), 1, "{out}");
    let status = wait_with_deadline(controller, TIMEOUT);
    assert_eq!(status.code(), Some(ControllerExit::Terminated.code()));
}

#[test]
fn a_grant_landing_inside_the_target_s_own_import_of_ctypes_succeeds() {
    // Found by ctypes_target_seed_session attaching during start-up: the grant script ran
    // at a bytecode boundary inside the target's `import ctypes`, got the partially
    // initialised module and failed ("has no attribute 'CDLL'"), so the grant timed out.
    let mut controller = Controller::start("importing_ctypes.py");
    controller.stdout.wait_for("inside import ctypes");
    let me = std::process::id();
    assert_eq!(controller.send(&format!("GRANT_ACCESS {me}")), "READY");
}
