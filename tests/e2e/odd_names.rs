//! Any pipe-directory name works (issue 9, defect 9: a control character or U+200B in the
//! name gave the target a SyntaxError in the grant script, and `\377` sent its report to
//! a lossy path; each was reported as "the target ran no Python code"). The grant no
//! longer goes through the directory at all.
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[rstest::rstest]
#[case::control_character(b"pipes\x01dir".as_slice())]
#[case::zero_width_space("pipes\u{200b}dir".as_bytes())]
#[case::not_utf8(b"pipes\xffdir".as_slice())]
#[case::quote_and_backslash(b"pi\"pe's\\dir".as_slice())]
fn a_grant_works_whatever_the_pipe_directory_is_called(#[case] name: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(OsStr::from_bytes(name));
    let controller = Controller::start_in(tmp, dir, "counter.py", &[]);
    let (code, out) = controller.client("attach\np counter\nq\nquit\n");
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    assert!(out.contains("✅ Permission granted"), "{out}");
    assert_eq!(pdb_numbers(&out).len(), 1, "{out}");
}
