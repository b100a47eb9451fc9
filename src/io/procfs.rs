//! Facts read from `/proc`: Yama's mode, who runs a pid and with which privilege, a pid's
//! executable and ancestry, thread run states, dumpability. Best effort: a process can
//! vanish between two reads, so every function tolerates missing files.
use crate::core::ptrace_policy::TracerPrivilege;
use crate::core::supervisor::{ClientFacts, Kinship, ProcessFacts, Yama};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Reads `kernel.yama.ptrace_scope`; an absent file means no Yama in this kernel.
pub fn yama() -> Yama {
    match fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(text) => text
            .trim()
            .parse()
            .map(Yama::Scope)
            .unwrap_or(Yama::Scope(1)),
        Err(_) => Yama::Absent,
    }
}

/// Whether `pid` runs (a zombie does not) and as which real uid.
pub fn inspect(pid: u32) -> ClientFacts {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return ClientFacts::NotRunning;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_string())
    };
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return ClientFacts::NotRunning;
    }
    // Uid: real, effective, saved, filesystem. Yama and ptrace compare the real one.
    let uid = field("Uid:").and_then(|s| s.split_whitespace().next().and_then(|u| u.parse().ok()));
    match uid {
        Some(uid) => ClientFacts::Running {
            uid,
            exe: exe(pid).map(|p| p.display().to_string()),
            privilege: tracer_privilege(pid),
            kinship: None,
        },
        None => ClientFacts::NotRunning,
    }
}

/// [`inspect`], and, when a socket peer asked, how `pid` relates to it.
pub fn inspect_for(pid: u32, asker: Option<u32>) -> ClientFacts {
    match (inspect(pid), asker) {
        (
            ClientFacts::Running {
                uid,
                exe,
                privilege,
                ..
            },
            Some(asker),
        ) => ClientFacts::Running {
            uid,
            exe,
            privilege,
            kinship: Some(kinship(pid, asker)),
        },
        (facts, _) => facts,
    }
}

/// Longest parent chain followed: far deeper than any real process tree, and a bound in
/// case parent links change under us while we walk (a pid reused mid-walk).
const MAX_ANCESTRY: usize = 4096;

/// Whether `pid` is `asker` or one of its descendants: follows the parent links in
/// `/proc/PID/stat` from `pid` upwards. A link that cannot be read (a process that
/// exited) ends the walk: unrelated, the safe answer.
pub fn kinship(pid: u32, asker: u32) -> Kinship {
    if pid == asker {
        return Kinship::Asker;
    }
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY {
        match parent(current) {
            Some(parent) if parent == asker => return Kinship::Descendant,
            // pid 1 (init) and 0 (the kernel, above init and kthreadd) end every chain.
            Some(parent) if parent > 1 => current = parent,
            Some(_) | None => return Kinship::Unrelated,
        }
    }
    Kinship::Unrelated
}

/// Whether `pid` runs (a zombie does not) and its parent chain, nearest first, up to
/// init: the facts the core needs to tell whether it belongs to the supervised tree.
pub fn ancestry(pid: u32) -> ProcessFacts {
    if !is_running(pid) {
        return ProcessFacts::NotRunning;
    }
    let mut chain = Vec::new();
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY {
        match parent(current) {
            Some(parent) if parent > 0 => {
                chain.push(parent);
                if parent == 1 {
                    break;
                }
                current = parent;
            }
            Some(_) | None => break,
        }
    }
    ProcessFacts::Running { ancestry: chain }
}

/// The parent pid of `pid`.
fn parent(pid: u32) -> Option<u32> {
    u32::try_from(process_stat(pid as i32)?.ppid).ok()
}

/// The executable of `pid`, without the ` (deleted)` suffix the kernel adds.
pub fn exe(pid: u32) -> Option<PathBuf> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text),
    ))
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    matches!(inspect(pid), ClientFacts::Running { .. })
}

/// CAP_SYS_PTRACE's bit in the capability sets of `/proc/PID/status`.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether `pid` holds CAP_SYS_PTRACE in its effective set (`CapEff`); a process that
/// cannot be read is taken as ordinary, which only ever asks for a grant it may not need.
pub fn tracer_privilege(pid: u32) -> TracerPrivilege {
    let capable = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0);
    if capable {
        TracerPrivilege::CapSysPtrace
    } else {
        TracerPrivilege::Ordinary
    }
}

/// This process's own privilege as a tracer.
pub fn own_tracer_privilege() -> TracerPrivilege {
    tracer_privilege(std::process::id())
}

/// The fields of `/proc/PID[/task/TID]/stat` we use. `comm` (field 2) may contain spaces
/// and parentheses, so parsing starts after the *last* `)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R` running/runnable, `S` sleeping, `D` uninterruptible, `Z` zombie, `T` stopped...
    pub state: char,
    pub ppid: i32,
}

pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

pub(crate) fn process_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub(crate) fn thread_stat(pid: i32, tid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

/// Native thread ids of `pid`, ascending.
pub(crate) fn task_ids(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// Threads of `pid` in state `R` right now.
pub(crate) fn running_threads(pid: i32) -> Vec<i32> {
    task_ids(pid)
        .into_iter()
        .filter(|&tid| thread_stat(pid, tid).is_some_and(|s| s.state == 'R'))
        .collect()
}

/// "1234 R, 1235 S in futex_wait_queue": what each thread is doing, for timeout messages.
pub(crate) fn describe_threads(pid: i32, main_tid: Option<i32>) -> String {
    let parts: Vec<String> = task_ids(pid)
        .into_iter()
        .map(|tid| {
            let state = thread_stat(pid, tid).map_or('?', |s| s.state);
            let wchan = fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                .ok()
                .filter(|w| !w.is_empty() && w != "0");
            let main = if Some(tid) == main_tid { " (main)" } else { "" };
            match wchan {
                Some(w) => format!("{tid}{main} {state} in {}", w.trim()),
                None => format!("{tid}{main} {state}"),
            }
        })
        .collect();
    if parts.is_empty() {
        "no threads readable".into()
    } else {
        parts.join(", ")
    }
}

/// True when `pid` is a descendant of this process (the only relation Yama scope 1
/// accepts without a declared tracer).
pub(crate) fn is_descendant_of_self(pid: i32) -> bool {
    let me = std::process::id() as i32;
    let mut current = pid;
    // Bounded: a pid chain cannot be longer than pid_max, and a race could loop.
    for _ in 0..4096 {
        let Some(stat) = process_stat(current) else {
            return false;
        };
        if stat.ppid == me {
            return true;
        }
        if stat.ppid <= 1 {
            return false;
        }
        current = stat.ppid;
    }
    false
}

/// `kernel.yama.ptrace_scope`, or `None` when Yama is not active.
pub(crate) fn yama_scope() -> Option<u8> {
    match yama() {
        Yama::Scope(scope) => Some(scope),
        Yama::Absent => None,
    }
}

/// Effective uid of `pid` from `/proc/PID/status`.
pub(crate) fn effective_uid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `pid` is dumpable, inferred from outside: the kernel makes a non-dumpable
/// process's `/proc/PID` entries owned by root. `None` when that cannot tell (the target
/// runs as root, or its files are unreadable).
pub(crate) fn is_dumpable(pid: i32) -> Option<bool> {
    let owner = fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    let euid = effective_uid(pid)?;
    if euid == 0 {
        return None;
    }
    Some(owner == euid)
}

/// Every thread of `pid`: native id, run state letter and the kernel function it waits in.
pub(crate) fn thread_states(pid: i32) -> Vec<(i32, char, Option<String>)> {
    task_ids(pid)
        .into_iter()
        .map(|tid| {
            let state = thread_stat(pid, tid).map_or('?', |s| s.state);
            let wchan = fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                .ok()
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty() && w != "0");
            (tid, state, wchan)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinship_follows_parent_links() {
        let me = std::process::id();
        assert_eq!(kinship(me, me), Kinship::Asker);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let child_kin = kinship(child.id(), me);
        let parent_kin = kinship(me, child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(child_kin, Kinship::Descendant);
        assert_eq!(
            parent_kin,
            Kinship::Unrelated,
            "a parent is not a descendant"
        );
        assert_eq!(kinship(1, me), Kinship::Unrelated);
        assert_eq!(kinship(u32::MAX, me), Kinship::Unrelated, "no such process");
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let text = "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194560 ...";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                ppid: 17
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id() as i32;
        assert!(process_stat(me).is_some());
        // The thread asking is, by definition, running.
        let tid = nix::unistd::gettid().as_raw();
        assert_eq!(thread_stat(me, tid).map(|s| s.state), Some('R'));
        assert!(running_threads(me).contains(&tid));
        assert!(task_ids(me).contains(&me));
        assert!(!is_descendant_of_self(me));
        assert!(!describe_threads(me, Some(me)).is_empty());
    }

    #[test]
    fn a_missing_process_gives_empty_answers() {
        let unused = i32::MAX;
        assert!(running_threads(unused).is_empty());
        assert!(task_ids(unused).is_empty());
        assert_eq!(describe_threads(unused, None), "no threads readable");
        assert!(!is_descendant_of_self(unused));
        assert_eq!(is_dumpable(unused), None);
    }
}
