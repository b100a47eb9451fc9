//! The journal: versioned JSON Lines, one header then one record per input handled and
//! one per batch of effects decided. The controller's state is the fold of its inputs, so
//! replaying the inputs through a fresh [`Controller`] must decide the recorded effects.
use super::machine::{Config, Controller, Effect, Input, Millis};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Bumped when a record's meaning changes; replay refuses versions it does not know.
pub const JOURNAL_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub tool_version: String,
    /// The target's command line as the controller started it.
    pub target_argv: Vec<String>,
    pub controller_pid: u32,
    pub config: Config,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    /// Written (and flushed) before the input is handled.
    Input {
        at: Millis,
        #[serde(flatten)]
        input: Input,
    },
    /// What the controller decided for the input just before.
    Effects {
        at: Millis,
        effects: Vec<Effect>,
    },
}

/// A [`Controller`] that also writes the human transcript: one line per input, state
/// transition and effect, stamped with the session's relative milliseconds.
#[derive(Debug)]
pub struct Session {
    controller: Controller,
    transcript: String,
}

impl Session {
    pub fn new(config: Config) -> Session {
        let mut transcript = String::new();
        let _ = writeln!(
            transcript,
            "[{:>6}] start  target {}, uid {}, {}, dialect {:?}",
            0, config.target_pid, config.uid, config.yama, config.dialect
        );
        Session {
            controller: Controller::new(config),
            transcript,
        }
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// Handles one input and records it, the transition it caused and its effects.
    #[must_use]
    pub fn handle(&mut self, at: Millis, input: Input) -> Vec<Effect> {
        let before = self.controller.state_name();
        let _ = writeln!(self.transcript, "[{at:>6}] input  {input}");
        let effects = self.controller.handle(at, input);
        let after = self.controller.state_name();
        if before != after {
            let _ = writeln!(self.transcript, "[{at:>6}] state  {before} -> {after}");
        }
        for effect in &effects {
            let _ = writeln!(self.transcript, "[{at:>6}] effect {effect}");
        }
        effects
    }
}
