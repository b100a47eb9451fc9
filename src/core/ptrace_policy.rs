//! Who may attach to whom, and whether a grant helps: the one policy the controller's
//! start-up, the core's grant decision and the client all ask.
//!
//! Facts behind it (verified on a real Yama kernel, see the reference notes):
//! - Yama absent or `ptrace_scope` 0: classic rules, a process may attach to any process of
//!   its own uid. `prctl(PR_SET_PTRACER)` fails with EINVAL without Yama and is a harmless
//!   no-op at scope 0; the grant is still carried out there so that one path serves every
//!   scope and is exercised on kernels without Yama.
//! - Scope 1: only an ancestor, a declared ptracer or a holder of CAP_SYS_PTRACE may
//!   attach. The grant is what makes the client a declared ptracer.
//! - Scope 2: only CAP_SYS_PTRACE; a declared ptracer is refused, so no grant can help.
//! - Scope 3: nobody, and the setting cannot be lowered until a reboot.
//!
//! A process with CAP_SYS_PTRACE needs no grant at scopes 1 and 2: declaring it would only
//! take the one declared-ptracer slot of the target away from whoever holds it.
use super::supervisor::Yama;
use serde::{Deserialize, Serialize};

/// Whether a would-be tracer holds CAP_SYS_PTRACE in its effective set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TracerPrivilege {
    Ordinary,
    CapSysPtrace,
}

/// What it takes for a tracer to attach to a process of its own uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachRule {
    /// Have the target declare the tracer (`prctl(PR_SET_PTRACER)`), then attach.
    Grant,
    /// The tracer may attach as it is; the reason says why.
    NoGrantNeeded(String),
    /// No grant can help; the message names the setting and how to change it.
    Forbidden(String),
}

/// The policy: what a tracer of `privilege` needs under `yama`.
pub fn attach_rule(yama: Yama, privilege: TracerPrivilege) -> AttachRule {
    match (yama, privilege) {
        (Yama::Absent | Yama::Scope(0), _) => AttachRule::Grant,
        (Yama::Scope(1 | 2), TracerPrivilege::CapSysPtrace) => AttachRule::NoGrantNeeded(
            format!("{yama}: the client holds CAP_SYS_PTRACE, which needs no grant"),
        ),
        (Yama::Scope(1), TracerPrivilege::Ordinary) => AttachRule::Grant,
        (Yama::Scope(2), TracerPrivilege::Ordinary) => AttachRule::Forbidden(
            "kernel.yama.ptrace_scope is 2: only processes with CAP_SYS_PTRACE may attach; no grant can help. Lower it (as root: sysctl kernel.yama.ptrace_scope=1) or run the client with CAP_SYS_PTRACE".into(),
        ),
        (Yama::Scope(scope), _) => AttachRule::Forbidden(format!(
            "kernel.yama.ptrace_scope is {scope}: no process may attach to another; no grant can help. Lower it (as root: sysctl kernel.yama.ptrace_scope=1) after a reboot: scope 3 cannot be lowered while running"
        )),
    }
}

/// Whether a controller may start: only if some client of its uid could ever attach.
/// Clients run as the controller's uid, so the controller's own privilege stands for
/// theirs (a root controller has root clients).
pub fn controller_may_start(yama: Yama, privilege: TracerPrivilege) -> Result<(), String> {
    match attach_rule(yama, privilege) {
        AttachRule::Grant | AttachRule::NoGrantNeeded(_) => Ok(()),
        AttachRule::Forbidden(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use TracerPrivilege::{CapSysPtrace, Ordinary};

    #[derive(Debug, PartialEq)]
    enum Kind {
        Grant,
        Free,
        Forbidden,
    }

    #[rstest]
    #[case(Yama::Absent, Ordinary, Kind::Grant)]
    #[case(Yama::Absent, CapSysPtrace, Kind::Grant)]
    #[case(Yama::Scope(0), Ordinary, Kind::Grant)]
    #[case(Yama::Scope(0), CapSysPtrace, Kind::Grant)]
    #[case(Yama::Scope(1), Ordinary, Kind::Grant)]
    #[case(Yama::Scope(1), CapSysPtrace, Kind::Free)]
    #[case(Yama::Scope(2), Ordinary, Kind::Forbidden)]
    #[case(Yama::Scope(2), CapSysPtrace, Kind::Free)]
    #[case(Yama::Scope(3), Ordinary, Kind::Forbidden)]
    #[case(Yama::Scope(3), CapSysPtrace, Kind::Forbidden)]
    fn the_rule_at_every_scope(
        #[case] yama: Yama,
        #[case] privilege: TracerPrivilege,
        #[case] expected: Kind,
    ) {
        let kind = match attach_rule(yama, privilege) {
            AttachRule::Grant => Kind::Grant,
            AttachRule::NoGrantNeeded(_) => Kind::Free,
            AttachRule::Forbidden(_) => Kind::Forbidden,
        };
        assert_eq!(kind, expected);
        assert_eq!(
            controller_may_start(yama, privilege).is_ok(),
            expected != Kind::Forbidden
        );
    }

    #[test]
    fn refusals_name_the_setting_and_the_way_out() {
        let AttachRule::Forbidden(why) = attach_rule(Yama::Scope(2), Ordinary) else {
            panic!("scope 2 must forbid an ordinary tracer");
        };
        assert!(why.contains("ptrace_scope is 2"), "{why}");
        assert!(why.contains("sysctl kernel.yama.ptrace_scope=1"), "{why}");
        let AttachRule::Forbidden(why) = attach_rule(Yama::Scope(3), CapSysPtrace) else {
            panic!("scope 3 must forbid everyone");
        };
        assert!(why.contains("reboot"), "{why}");
    }
}
