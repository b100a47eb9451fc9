//! Signals and process endings as the controller speaks of them: names for the signals a
//! user meets, the `--stop-signal` syntax, the signals that stop the controller, and how
//! a process ended. Plain data, no OS calls.
use serde::{Deserialize, Serialize};
use std::fmt;

/// SIGINT: see [`super::supervisor::Config::stop_signal`].
pub const DEFAULT_STOP_SIGNAL: i32 = 2;
pub(crate) const SIGKILL: i32 = 9;

/// `--stop-signal` as a user writes it: `INT`, `SIGINT`, `sigint` or `2`. Only the named
/// signals of [`signal_name`] are taken, so a typo cannot send something unexpected.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    (1..=31)
        .find(|&n| {
            let known = signal_name(n);
            known != "signal" && (known[3..] == *name || n.to_string() == name)
        })
        .ok_or_else(|| format!("unknown signal {text:?} (e.g. INT, TERM, HUP, KILL or a number)"))
}

/// How a process ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell's convention, so a supervisor sees through the controller.
    pub fn as_exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(sig) => 128 + sig,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signal(sig) => {
                write!(f, "was killed by signal {sig} ({})", signal_name(*sig))
            }
        }
    }
}

/// Names of the signals a user is likely to meet; the number is always shown beside it.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        // Any other number: the caller shows the number itself.
        _unnamed => "signal",
    }
}

/// `SIGINT`, or `signal 40` for one without a name here.
pub(crate) fn signal_display(sig: i32) -> String {
    match signal_name(sig) {
        "signal" => format!("signal {sig}"),
        name => name.to_string(),
    }
}

/// The signals that stop the controller (and with it the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopSignal {
    Interrupt,
    Terminate,
    Hangup,
}

impl StopSignal {
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Hangup => 1,
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }
}
