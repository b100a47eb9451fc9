//! Issue 9, defect 1: the client must not run another user's program. Whoever answers on
//! the pipes names the target, and the client runs that target's interpreter; so the
//! pipes must be the caller's, the target must be the caller's, and the interpreter must
//! be a file that is still the one the target runs and nobody else can have written.
use crate::support::*;
use helicopter_parent::core::client::ClientExit;

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn needs_other_uid(test: &str) {
    skip(
        test,
        &format!("needs root (and setpriv) to act as uid {OTHER_UID}"),
    );
}

/// The whole attack of the issue: another user owns the pipe directory, answers with a
/// process of theirs whose executable they replaced by a script.
#[test]
fn issue9_pipes_of_another_user_are_refused_before_any_exchange() {
    if !can_use_another_uid() {
        return needs_other_uid("issue9_pipes_of_another_user_are_refused_before_any_exchange");
    }
    let planted = ReplacedExecutable::start(OTHER_UID);
    let fake = FakeController::serve(planted.pid, OTHER_UID);
    let (code, out) = run_client(&fake.dir, "attach\nq\nquit\n", &[]);
    assert!(
        planted.markers().is_empty(),
        "the client ran the other user's script: {:?}\n{out}",
        planted.markers()
    );
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(
        out.contains(&format!(
            "❌ refusing to use {}: it belongs to uid {OTHER_UID}, not to you (uid {})",
            fake.dir.display(),
            me()
        )),
        "{out}"
    );
    assert_eq!(
        fake.lines(),
        Vec::<String>::new(),
        "nothing may be sent to it"
    );
}

/// A FIFO of another user inside the caller's own directory is refused just the same.
#[test]
fn issue9_a_fifo_of_another_user_is_refused() {
    if !can_use_another_uid() {
        return needs_other_uid("issue9_a_fifo_of_another_user_is_refused");
    }
    let fake = FakeController::serve(std::process::id(), me());
    std::os::unix::fs::lchown(fake.dir.join("response"), Some(OTHER_UID), None).unwrap();
    let (code, out) = run_client(&fake.dir, "quit\n", &[]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(
        out.contains(&format!(
            "refusing to use {}: it belongs to uid {OTHER_UID}",
            fake.dir.join("response").display()
        )),
        "{out}"
    );
}

/// Pipes that group or others can reach, or a symlink in place of the directory.
#[test]
fn issue9_pipes_open_to_others_or_behind_a_symlink_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fake = FakeController::serve(std::process::id(), me());
    std::fs::set_permissions(
        fake.dir.join("control"),
        std::fs::Permissions::from_mode(0o622),
    )
    .unwrap();
    let (code, out) = run_client(&fake.dir, "quit\n", &[]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(
        out.contains("its mode 0622 gives group or others access"),
        "{out}"
    );

    let fake = FakeController::serve(std::process::id(), me());
    let link = fake.dir.with_file_name("link");
    std::os::unix::fs::symlink(&fake.dir, &link).unwrap();
    let (code, out) = run_client(&link, "quit\n", &[]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(
        out.contains(&format!(
            "refusing to use {}: it is a symbolic link, not a directory",
            link.display()
        )),
        "{out}"
    );
}

/// Second line of defence: even through the caller's own pipes, a target of another
/// user is refused before access is asked for and before anything runs.
#[test]
fn issue9_a_target_of_another_user_is_refused() {
    if !can_use_another_uid() {
        return needs_other_uid("issue9_a_target_of_another_user_is_refused");
    }
    let planted = ReplacedExecutable::start(OTHER_UID);
    let fake = FakeController::serve(planted.pid, me());
    let (code, out) = run_client(&fake.dir, "attach\np 1\nq\nquit\n", &[]);
    assert!(
        planted.markers().is_empty(),
        "{:?}\n{out}",
        planted.markers()
    );
    assert_eq!(code, ClientExit::CommandFailed.code(), "{out}");
    assert!(
        out.contains(&format!(
            "❌ refusing to attach: target process {} belongs to uid {OTHER_UID}, not to you (uid {})",
            planted.pid,
            me()
        )),
        "{out}"
    );
    assert!(
        !fake.lines().iter().any(|l| l.starts_with("GRANT_ACCESS")),
        "no access may be asked for"
    );
    // The lines meant for pdb are not run as client commands.
    assert!(
        out.contains("not run (meant for pdb, which is not attached): p 1"),
        "{out}"
    );
}

/// Third line: the caller's own target whose executable was deleted and replaced: the
/// name now leads to another file, which is never run. Needs no other uid.
#[test]
fn issue9_a_deleted_interpreter_is_never_run() {
    let planted = ReplacedExecutable::start(me());
    let fake = FakeController::serve(planted.pid, me());
    let (code, out) = run_client(&fake.dir, "attach\nq\nquit\n", &[]);
    assert!(
        planted.markers().is_empty(),
        "the replaced executable ran: {:?}\n{out}",
        planted.markers()
    );
    assert_eq!(code, ClientExit::CommandFailed.code(), "{out}");
    assert!(
        out.contains(&format!(
            "❌ refusing to run the target's interpreter {}/python3.14: the kernel reports it deleted",
            planted.dir.display()
        )),
        "{out}"
    );
    assert!(out.contains("Pass --python PATH"), "{out}");
}

/// An interpreter file that another user owns could be swapped under the client's feet.
#[test]
fn issue9_an_interpreter_owned_by_another_user_is_not_run() {
    if !can_use_another_uid() {
        return needs_other_uid("issue9_an_interpreter_owned_by_another_user_is_not_run");
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("python3.14");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::lchown(&exe, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let target = KillOnDrop(Some(
        std::process::Command::new(&exe).arg("120").spawn().unwrap(),
    ));
    let pid = target.0.as_ref().unwrap().id();
    let fake = FakeController::serve(pid, me());
    let (code, out) = run_client(&fake.dir, "attach\nq\nquit\n", &[]);
    assert_eq!(code, ClientExit::CommandFailed.code(), "{out}");
    assert!(
        out.contains(&format!(
            "refusing to run the target's interpreter {}: {} belongs to uid {OTHER_UID}, neither root nor you",
            exe.display(),
            exe.display()
        )),
        "{out}"
    );
}
