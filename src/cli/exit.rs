//! The exit status of the tools that check things (`heli-replay`, `heli-conformance`).
//! The controller's is [`crate::core::supervisor::ControllerExit`], the client's
//! [`crate::core::client::ClientExit`]; the README's table lists all three.
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolExit {
    /// The check held: the journal replayed (and matched), every case passed.
    Ok,
    /// The check failed: a divergence, an unreadable journal, a failed case.
    Failed,
    /// The tool could not run as asked: bad usage, a controller command that cannot start.
    Usage,
}

impl ToolExit {
    pub const fn code(self) -> u8 {
        match self {
            ToolExit::Ok => 0,
            ToolExit::Failed => 1,
            ToolExit::Usage => 2,
        }
    }
}

impl From<ToolExit> for ExitCode {
    fn from(exit: ToolExit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}
