//! Carries out the core's grant effects with the native injector (from this process: at
//! `ptrace_scope=1` only an ancestor may write into the target), and turns the grant
//! script's report into [`Input::GrantRan`]. It decides nothing: which thread, when to
//! move, retry or give up is [`crate::core::delivery`]'s; this module reports facts.
//!
//! Nothing the target reads can be swapped by anyone else: the grant script lives in a
//! sealed memfd and the report goes into an anonymous pipe, both reached by the target as
//! `/proc/<controller pid>/fd/<n>`. Only processes of the controller's uid may open that
//! (ptrace read access to the controller), the script cannot be changed once sealed, and
//! no file of the pipe directory is involved, whatever its name.
use super::inject::{carry_out, failure_of, InjectError, PythonProcess};
use super::wake::InjectionGate;
use crate::core::delivery::{DeliveryAction, DeliveryFact};
use crate::core::supervisor::{GrantId, Input};
use crossbeam_channel::Sender;
use std::collections::HashMap;
#[cfg(test)]
use std::fs;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// `PR_SET_PTRACER`: the bytes "Yama" read as a big-endian integer.
pub const PR_SET_PTRACER: u32 = 0x5961_6d61;

/// Carries out [`DeliveryAction`]s for grants in one target.
pub struct GrantInjector {
    target: u32,
    /// A per-session secret in every report line, so nothing but our own injected
    /// script can produce an acknowledgement.
    token: String,
    /// Where the script reports: the write end of the report pipe, as the target opens it.
    report_path: String,
    /// Keeps the report pipe's write end open for the controller's life, so the target's
    /// non-blocking open always finds a reader and the reader never sees EOF.
    _report_writer: OwnedFd,
    /// The opened target, reused between actions (opening costs a maps and ELF read).
    process: Option<PythonProcess>,
    /// Grants that go into another process of the tree than the target
    /// ([`crate::core::supervisor::Effect::AimGrant`]), and those processes, opened.
    aims: HashMap<GrantId, u32>,
    others: HashMap<u32, PythonProcess>,
    /// Each grant's sealed script, open until the core forgets the grant.
    scripts: HashMap<GrantId, File>,
    /// Grant scripts install the waker first (see [`crate::io::wake`]).
    wake: bool,
    /// Keeps the start-up waker installation from writing over a grant's request.
    gate: InjectionGate,
}

impl GrantInjector {
    /// Creates the report pipe and starts its reader, which sends [`Input::GrantRan`].
    pub fn start(target: u32, inputs: Sender<Input>) -> io::Result<GrantInjector> {
        let token = random_token()?;
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let report_path = path_for_others(&writer).display().to_string();
        spawn_report_reader(File::from(reader), token.clone(), inputs)?;
        Ok(GrantInjector {
            target,
            token,
            report_path,
            _report_writer: writer,
            process: None,
            aims: HashMap::new(),
            others: HashMap::new(),
            scripts: HashMap::new(),
            wake: false,
            gate: InjectionGate::default(),
        })
    }

    /// Grant scripts install the waker too, and the start-up installer of the waker
    /// coordinates with this injector through the returned gate.
    pub fn with_wake(mut self, wake: bool) -> GrantInjector {
        self.wake = wake;
        self
    }

    pub fn gate(&self) -> InjectionGate {
        self.gate.clone()
    }

    /// Every later action of `grant` goes into `process`.
    pub fn aim(&mut self, grant: GrantId, process: u32) {
        self.aims.insert(grant, process);
    }

    /// Carries out one action and says what it found.
    pub fn carry_out(
        &mut self,
        grant: GrantId,
        client: u32,
        action: &DeliveryAction,
    ) -> DeliveryFact {
        match self.try_carry_out(grant, client, action) {
            Ok(fact) => fact,
            Err(error) => DeliveryFact::NotScheduled {
                failure: self.failure(grant, error),
            },
        }
    }

    fn try_carry_out(
        &mut self,
        grant: GrantId,
        client: u32,
        action: &DeliveryAction,
    ) -> Result<DeliveryFact, InjectError> {
        let script = self.script_path(grant, client)?;
        match self.aims.get(&grant).copied() {
            Some(other) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.others.entry(other) {
                    slot.insert(PythonProcess::open(other as i32)?);
                }
                carry_out(&self.others[&other], &script, action)
            }
            None => {
                let gate = self.gate.clone();
                gate.grant(|| carry_out(self.process()?, &script, action))
            }
        }
    }

    /// The grant is over: its script goes, and the process it went into is closed when
    /// no other grant goes there.
    pub fn forget(&mut self, grant: GrantId) {
        self.scripts.remove(&grant);
        if let Some(process) = self.aims.remove(&grant) {
            if !self.aims.values().any(|&p| p == process) {
                self.others.remove(&process);
            }
        }
    }

    fn process(&mut self) -> Result<&PythonProcess, InjectError> {
        if self.process.is_none() {
            self.process = Some(PythonProcess::open(self.target as i32)?);
        }
        Ok(self.process.as_ref().expect("opened above"))
    }

    /// The path the target reads the grant's script from, writing the script first.
    fn script_path(&mut self, grant: GrantId, client: u32) -> Result<PathBuf, InjectError> {
        if !self.scripts.contains_key(&grant) {
            let mut content = grant_script(client, &self.report_path, &self.token, grant);
            if self.wake {
                // First, so that pdb's own injection, which comes right after, can be
                // woken even if the start-up installation never ran.
                content.insert_str(0, crate::io::wake::waker_snippet());
            }
            let file =
                sealed_memfd(&format!("heli-grant-{grant}"), content.as_bytes()).map_err(|e| {
                    InjectError::InvalidPath {
                        path: format!("memfd for grant {grant}"),
                        reason: format!("cannot create it: {e}"),
                    }
                })?;
            self.scripts.insert(grant, file);
        }
        Ok(path_for_others(&self.scripts[&grant]))
    }

    /// The injector's error as facts for the core; a target that failed is opened afresh
    /// next time (its runtime may have been read before it was complete).
    fn failure(
        &mut self,
        grant: GrantId,
        error: InjectError,
    ) -> crate::core::delivery::InjectFailure {
        match self.aims.get(&grant).copied() {
            Some(other) => {
                self.others.remove(&other);
                failure_of(&error, other as i32)
            }
            None => {
                self.process = None;
                failure_of(&error, self.target as i32)
            }
        }
    }
}

/// The script the target runs. It reports prctl's errno on the report pipe; a report
/// that cannot be delivered (the controller is gone) must not disturb the target, so
/// every failure is swallowed. Names are local to a function: the script runs with fresh
/// globals, but nothing of it should linger in the target. `report` is
/// `/proc/<pid>/fd/<n>`: ASCII digits and slashes only, safe inside a Python literal.
pub fn grant_script(client: u32, report: &str, token: &str, grant: GrantId) -> String {
    debug_assert!(report
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'/'));
    format!(
        r#"def _helicopter_parent_grant():
    # _ctypes, not ctypes: this may run at a bytecode boundary inside the target's own
    # `import ctypes`, where ctypes is a partially initialised module without CDLL.
    import _ctypes, os
    class arg(_ctypes._SimpleCData):
        _type_ = "L"
    class _int(_ctypes._SimpleCData):
        _type_ = "i"
    class _function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _int
    class _libc:
        _handle = _ctypes.dlopen(None)
    prctl = _function(("prctl", _libc))
    rc = prctl({PR_SET_PTRACER:#x}, arg({client}), arg(0), arg(0), arg(0))
    errno = _ctypes.get_errno() if rc != 0 else 0
    try:
        fd = os.open("{report}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"{token} {grant} %d\n" % errno)
        finally:
            os.close(fd)
    except OSError:
        pass
try:
    _helicopter_parent_grant()
except KeyboardInterrupt:
    # A stop signal (TERMINATE's SIGINT, a Ctrl-C) that came while this ran was raised
    # here, and CPython would report it in the target and drop it, so the target would
    # not stop: it is given back to the main thread from another thread, which runs
    # once this script has let go of the interpreter.
    import _thread
    _thread.start_new_thread(_thread.interrupt_main, ())
"#
    )
}

/// An anonymous in-memory file holding `content`, sealed so that nobody, this process
/// included, can change it afterwards.
/// The path by which other processes (the target, its children) open `fd` of this
/// process: `/proc/<our pid>/fd/<fd>`. Valid while the descriptor stays open.
pub(crate) fn path_for_others(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
}

pub(crate) fn sealed_memfd(name: &str, content: &[u8]) -> io::Result<File> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated name; the returned fd is owned by the File below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(content)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads reports from the report pipe for the controller's life.
fn spawn_report_reader(mut pipe: File, token: String, inputs: Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("grant-report".into())
        .spawn(move || {
            let mut framer = crate::core::wire::LineFramer::default();
            let mut buf = [0u8; 4096];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                for frame in framer.push(&buf[..n]) {
                    if let crate::core::wire::Frame::Text { text, .. } = frame {
                        if let Some(input) = parse_report(&text, &token) {
                            if inputs.send(input).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// `<token> <grant> <errno>`; anything else is ignored (it did not come from our script).
pub fn parse_report(line: &str, token: &str) -> Option<Input> {
    let mut words = line.split(' ');
    if words.next()? != token {
        return None;
    }
    let grant = words.next()?.parse().ok()?;
    let errno = words.next()?.parse().ok()?;
    words
        .next()
        .is_none()
        .then_some(Input::GrantRan { grant, errno })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_reports_with_our_token_are_acknowledgements() {
        let token = "00ff";
        assert_eq!(
            parse_report("00ff 3 0", token),
            Some(Input::GrantRan { grant: 3, errno: 0 })
        );
        assert_eq!(
            parse_report("00ff 4 22", token),
            Some(Input::GrantRan {
                grant: 4,
                errno: 22
            })
        );
        for forged in [
            "ffff 3 0",
            "00ff 3",
            "00ff 3 0 extra",
            "00ff x 0",
            "00ff 3 -",
            "",
            "00ff  3 0",
        ] {
            assert_eq!(parse_report(forged, token), None, "{forged:?}");
        }
    }

    #[test]
    fn the_grant_script_names_exactly_the_client_and_the_report_pipe() {
        let script = grant_script(4242, "/proc/77/fd/9", "abcd", 7);
        assert!(
            script.contains("= prctl(0x59616d61, arg(4242), arg(0), arg(0), arg(0))"),
            "{script}"
        );
        assert!(
            script.contains(r#"os.open("/proc/77/fd/9", os.O_WRONLY | os.O_NONBLOCK)"#),
            "{script}"
        );
        assert!(script.contains(r#"b"abcd 7 %d\n" % errno"#), "{script}");
        // A stop signal raised inside the script is handed back, not dropped.
        assert!(
            script.contains("except KeyboardInterrupt:")
                && script.contains("_thread.start_new_thread(_thread.interrupt_main, ())"),
            "{script}"
        );
    }

    #[test]
    fn a_sealed_script_cannot_be_changed_even_by_its_writer() {
        let file = sealed_memfd("test", b"print(1)\n").unwrap();
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert_eq!(fs::read(&path).unwrap(), b"print(1)\n");
        let rewritten = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"import os"));
        assert!(rewritten.is_err(), "a sealed memfd was written");
        assert_eq!(fs::read(&path).unwrap(), b"print(1)\n");
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
