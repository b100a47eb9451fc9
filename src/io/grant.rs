//! Carries out the core's grant effects: writes the tiny grant script, has the target run
//! it through the native injector (from this process: at `ptrace_scope=1` only an
//! ancestor may write into the target), and turns the script's report on the
//! `grant-ack` FIFO into [`Input::GrantRan`].
use super::inject::{describe_threads, running_threads, InjectError, PythonProcess, ThreadChoice};
use super::pipes::GRANT_ACK;
use crate::core::machine::{GrantId, Input};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const SCRIPT_PREFIX: &str = "grant-";

/// `PR_SET_PTRACER`: the bytes "Yama" read as a big-endian integer.
pub const PR_SET_PTRACER: u32 = 0x5961_6d61;

struct InFlight {
    process: PythonProcess,
    tid: i32,
    script: PathBuf,
}

/// Grants in the target that have not reported back yet.
pub struct Granter {
    target: u32,
    dir: PathBuf,
    /// A per-session secret in every report line, so nothing but our own injected
    /// script can produce an acknowledgement.
    token: String,
    in_flight: HashMap<GrantId, InFlight>,
    /// Diagnostic switch for the Yama rig's negative control: acknowledge without
    /// injecting, so that the rig can show that attach then fails.
    disabled: bool,
}

impl Granter {
    pub fn new(target: u32, dir: &Path, disabled: bool) -> io::Result<Granter> {
        Ok(Granter {
            target,
            dir: dir.to_path_buf(),
            token: random_token()?,
            in_flight: HashMap::new(),
            disabled,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Writes the script and schedules it on the target's main thread.
    pub fn schedule(&mut self, grant: GrantId, client: u32) -> Input {
        if self.disabled {
            return Input::GrantRan { grant, errno: 0 };
        }
        match self.try_schedule(grant, client) {
            Ok(tid) => Input::GrantScheduled { grant, tid },
            Err(error) => {
                self.forget(grant);
                let transient = error.is_transient() || self.still_starting(&error);
                Input::GrantNotScheduled {
                    grant,
                    error: error.to_string(),
                    transient,
                }
            }
        }
    }

    /// Right after launch the interpreter's "remote debugging enabled" flag still reads 0.
    /// A real opt-out always shows from outside, as `PYTHON_DISABLE_REMOTE_DEBUG` in the
    /// environment or `-X disable-remote-debug` on the command line; without either, the
    /// target is still starting and the grant is tried again.
    fn still_starting(&self, error: &InjectError) -> bool {
        if !matches!(error, InjectError::RemoteDebugDisabled { .. }) {
            return false;
        }
        let read =
            |what: &str| fs::read(format!("/proc/{}/{what}", self.target)).unwrap_or_default();
        let environ = read("environ");
        let cmdline = read("cmdline");
        let opted_out = environ
            .split(|&b| b == 0)
            .any(|var| var.starts_with(b"PYTHON_DISABLE_REMOTE_DEBUG="))
            || cmdline
                .split(|&b| b == 0)
                .any(|arg| arg.ends_with(b"disable-remote-debug"));
        !opted_out
    }

    fn try_schedule(&mut self, grant: GrantId, client: u32) -> Result<i32, InjectError> {
        let script = self.dir.join(format!("{SCRIPT_PREFIX}{grant}.py"));
        let ack = self.dir.join(GRANT_ACK);
        let content = grant_script(client, &ack, &self.token, grant);
        write_new_file(&script, content.as_bytes()).map_err(|e| InjectError::InvalidPath {
            path: script.display().to_string(),
            reason: format!("cannot write it: {e}"),
        })?;
        let scheduled = PythonProcess::open(self.target as i32)
            .and_then(|process| Ok((process.schedule(ThreadChoice::Main, &script)?, process)));
        match scheduled {
            Ok((tid, process)) => {
                self.in_flight.insert(
                    grant,
                    InFlight {
                        process,
                        tid,
                        script,
                    },
                );
                Ok(tid)
            }
            Err(e) => {
                let _ = fs::remove_file(&script);
                Err(e)
            }
        }
    }

    /// If the grant is still pending, moves it to a thread that is running Python code
    /// now (the main thread may be blocked in sleep, a lock or a join).
    pub fn retarget(&mut self, grant: GrantId) -> Input {
        let Some(entry) = self.in_flight.get_mut(&grant) else {
            return Input::GrantPickedUp { grant };
        };
        let python_tids: Vec<i32> = match entry.process.threads() {
            Ok(threads) => threads.iter().map(|t| t.native_tid).collect(),
            Err(_) => Vec::new(),
        };
        let candidate = running_threads(self.target as i32)
            .into_iter()
            .find(|tid| *tid != entry.tid && python_tids.contains(tid));
        // Nothing better to move to: leave the request where it is rather than take it
        // back and write it again, which opens a window for nothing.
        let Some(tid) = candidate else {
            if let Ok(false) = entry.process.is_pending(entry.tid) {
                return Input::GrantPickedUp { grant };
            }
            let threads = describe_threads(self.target as i32);
            return Input::GrantStayed { grant, threads };
        };
        match entry.process.withdraw(entry.tid) {
            Ok(true) => {}
            Ok(false) => return Input::GrantPickedUp { grant },
            Err(e) => {
                let error = e.to_string();
                return Input::GrantNotScheduled {
                    grant,
                    error,
                    transient: false,
                };
            }
        }
        match entry
            .process
            .schedule(ThreadChoice::Tid(tid), &entry.script)
        {
            Ok(tid) => {
                entry.tid = tid;
                Input::GrantMoved { grant, tid }
            }
            Err(e) => {
                let error = e.to_string();
                Input::GrantNotScheduled {
                    grant,
                    error,
                    transient: false,
                }
            }
        }
    }

    /// Takes a grant back so it can never run; its script goes with it.
    pub fn withdraw(&mut self, grant: GrantId) {
        if let Some(entry) = self.in_flight.get(&grant) {
            // If it was already picked up the script may still be reading its file;
            // the acknowledgement (or shutdown) removes it then.
            if matches!(entry.process.withdraw(entry.tid), Ok(true) | Err(_)) {
                self.forget(grant);
            }
        }
    }

    /// The script reported: it has run, so its file can go.
    pub fn acknowledged(&mut self, grant: GrantId) {
        self.forget(grant);
    }

    fn forget(&mut self, grant: GrantId) {
        if let Some(entry) = self.in_flight.remove(&grant) {
            let _ = fs::remove_file(entry.script);
        } else {
            let _ = fs::remove_file(self.dir.join(format!("{SCRIPT_PREFIX}{grant}.py")));
        }
    }
}

/// The script the target runs. It reports prctl's errno on the ack FIFO; a report that
/// cannot be delivered (the controller is gone) must not disturb the target, so every
/// failure is swallowed. Names are local to a function: the script runs with fresh
/// globals, but nothing of it should linger in the target.
pub fn grant_script(client: u32, ack: &Path, token: &str, grant: GrantId) -> String {
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
        fd = os.open({ack:?}, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"{token} {grant} %d\n" % errno)
        finally:
            os.close(fd)
    except OSError:
        pass
_helicopter_parent_grant()
"#,
        ack = ack.display().to_string(),
    )
}

fn write_new_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(content)
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

/// Reads acknowledgements from the `grant-ack` FIFO for the controller's life. The FIFO
/// is opened read-write so that it always has a reader (the target's non-blocking open
/// succeeds) and never reports EOF between reports.
pub fn spawn_ack_reader(dir: &Path, token: String, inputs: Sender<Input>) -> io::Result<()> {
    let path = dir.join(GRANT_ACK);
    let mut fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    std::thread::Builder::new()
        .name("grant-ack".into())
        .spawn(move || {
            let mut framer = crate::core::wire::LineFramer::default();
            let mut buf = [0u8; 4096];
            loop {
                let n = match fifo.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                for frame in framer.push(&buf[..n]) {
                    if let crate::core::wire::Frame::Text { text, .. } = frame {
                        if let Some(input) = parse_ack(&text, &token) {
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
pub fn parse_ack(line: &str, token: &str) -> Option<Input> {
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
            parse_ack("00ff 3 0", token),
            Some(Input::GrantRan { grant: 3, errno: 0 })
        );
        assert_eq!(
            parse_ack("00ff 4 22", token),
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
            assert_eq!(parse_ack(forged, token), None, "{forged:?}");
        }
    }

    #[test]
    fn the_grant_script_names_exactly_the_client_and_the_ack_pipe() {
        let script = grant_script(4242, Path::new("/tmp/p/grant-ack"), "abcd", 7);
        assert!(
            script.contains("= prctl(0x59616d61, arg(4242), arg(0), arg(0), arg(0))"),
            "{script}"
        );
        assert!(
            script.contains(r#"os.open("/tmp/p/grant-ack", os.O_WRONLY | os.O_NONBLOCK)"#),
            "{script}"
        );
        assert!(script.contains(r#"b"abcd 7 %d\n" % errno"#), "{script}");
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
