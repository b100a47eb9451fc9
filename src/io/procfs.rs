//! Facts read from `/proc` and `/sys`: Yama's mode, who runs a pid, a pid's executable.
use crate::core::ptrace_policy::TracerPrivilege;
use crate::core::supervisor::{ClientFacts, Yama};
use std::fs;
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
        },
        None => ClientFacts::NotRunning,
    }
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
