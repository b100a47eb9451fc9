//! `heli-client ls`: the controllers of this user, found where they put their pipes (the
//! unnamed default and every directory under the named root, see
//! [`crate::cli::pipe_dir`]). Only directories that pass the client's trust checks are
//! asked anything; each is asked `GET_TARGET_PID` (a harmless question any controller
//! answers), and the target's command line and age come from `/proc`.
use super::exchange::{ExchangeError, TrustedPipeDir};
use super::socket_exchange::exchange_preferring_socket;
use crate::core::wire::{parse_reply, Command, Dialect, Reply};
use crate::io::pipes::named_root;
use crate::io::pipes::DEFAULT_PIPE_DIR;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One controller's pipe directory and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `None` for the unnamed default directory.
    pub name: Option<String>,
    pub dir: PathBuf,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running {
        target: u32,
        command: String,
        /// Seconds since the target started; `None` when /proc does not say.
        uptime_s: Option<u64>,
    },
    /// The pipes are there but no controller reads them (one that was killed).
    Stale,
    /// It answered something else, or failed; the text says what.
    Unanswered(String),
}

/// Every trusted pipe directory of `uid` that holds a controller's pipes.
pub fn find(uid: u32, timeout: Duration) -> Vec<Found> {
    let mut candidates = vec![(None, PathBuf::from(DEFAULT_PIPE_DIR))];
    if let Ok(entries) = std::fs::read_dir(named_root(uid)) {
        let mut named: Vec<(Option<String>, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((Some(e.file_name().to_str()?.to_string()), e.path())))
            .collect();
        named.sort();
        candidates.extend(named);
    }
    candidates
        .into_iter()
        .filter_map(|(name, dir)| {
            let status = ask(&dir, uid, timeout)?;
            Some(Found { name, dir, status })
        })
        .collect()
}

/// `None` for a directory that is not a controller's or not to be trusted.
fn ask(dir: &Path, uid: u32, timeout: Duration) -> Option<Status> {
    TrustedPipeDir::open(dir, uid).ok()?;
    let line = Command::GetTargetPid.to_line(Dialect::Seed);
    match exchange_preferring_socket(dir, &line, timeout, true) {
        Ok(reply) => Some(match parse_reply(&reply.unwrap_or_default()) {
            Ok(Reply::TargetPid(target)) => Status::Running {
                target,
                command: command_line(target),
                uptime_s: uptime_s(target),
            },
            Ok(other) => Status::Unanswered(format!("it answered {other}")),
            Err(e) => Status::Unanswered(e.to_string()),
        }),
        Err(ExchangeError::PipesMissing(_) | ExchangeError::Untrusted(_)) => None,
        Err(ExchangeError::NotServed(_)) => Some(Status::Stale),
        Err(e) => Some(Status::Unanswered(e.to_string())),
    }
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// From the process's start (`/proc/PID/stat` field 22, in clock ticks after boot) and
/// the system's uptime.
fn uptime_s(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields after the command name start at field 3 (state); starttime is field 22.
    let start_ticks: u64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let boot: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((boot as u64).saturating_sub(start_ticks / ticks))
}

/// "3s", "2m 05s", "1h 02m", "3d 04h".
pub fn format_uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

/// The table `heli-client ls` prints.
pub fn render(found: &[Found]) -> Vec<String> {
    if found.is_empty() {
        return vec!["no controller of yours is running".into()];
    }
    let mut lines = vec![format!(
        "{:<16} {:>7}  {:>8}  {:<40} PIPE DIR",
        "NAME", "TARGET", "UPTIME", "COMMAND"
    )];
    for f in found {
        let name = f.name.clone().unwrap_or_else(|| "(default)".into());
        let dir = f.dir.display();
        lines.push(match &f.status {
            Status::Running {
                target,
                command,
                uptime_s,
            } => format!(
                "{name:<16} {target:>7}  {:>8}  {command:<40} {dir}",
                uptime_s.map_or("?".into(), format_uptime)
            ),
            Status::Stale => format!(
                "{name:<16} {:>7}  {:>8}  {:<40} {dir}",
                "-", "-", "(stale: no controller reads its pipes)"
            ),
            Status::Unanswered(why) => format!(
                "{name:<16} {:>7}  {:>8}  {:<40} {dir}",
                "-",
                "-",
                format!("(no answer: {why})")
            ),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_like_a_clock() {
        assert_eq!(format_uptime(3), "3s");
        assert_eq!(format_uptime(125), "2m 05s");
        assert_eq!(format_uptime(3720), "1h 02m");
        assert_eq!(format_uptime(3 * 86400 + 4 * 3600), "3d 04h");
    }

    #[test]
    fn this_process_has_an_uptime_and_a_command_line() {
        let me = std::process::id();
        assert!(uptime_s(me).is_some());
        assert!(!command_line(me).is_empty());
    }
}
