//! Expected reply lines with placeholders for the values that vary from run to run.
//!
//! `TARGET_PID {target_pid}`, `ERROR: {any}`, `READY`. Placeholders: `{target_pid}` (the
//! target the controller started), `{live_pid}` (a live helper process of the suite's),
//! `{dead_pid}` (a pid that is no process), `{any}` (any text, also none). `{{` and `}}`
//! stand for literal braces.
use std::fmt;

/// A placeholder that stands for a pid. The variants are named after the placeholders
/// (`{target_pid}`, ...), hence the common suffix clippy would have removed.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    TargetPid,
    LivePid,
    DeadPid,
}

impl Var {
    pub fn name(self) -> &'static str {
        match self {
            Var::TargetPid => "target_pid",
            Var::LivePid => "live_pid",
            Var::DeadPid => "dead_pid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Var(Var),
    /// Any text, possibly empty.
    Any,
}

/// The values the placeholders stand for in one case. `None`: not known (the case never
/// needed it, or the runner could not find it); such a placeholder matches nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bindings {
    pub target_pid: Option<u32>,
    pub live_pid: Option<u32>,
    pub dead_pid: Option<u32>,
}

impl Bindings {
    pub fn get(&self, var: Var) -> Option<u32> {
        match var {
            Var::TargetPid => self.target_pid,
            Var::LivePid => self.live_pid,
            Var::DeadPid => self.dead_pid,
        }
    }
}

/// A text with placeholders: an expected reply, or a line to send (where `{any}` is
/// refused, see [`Pattern::parse_send`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pieces: Vec<Piece>,
}

impl Pattern {
    /// Parses an expected reply.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if c == '{' {
                let close = rest.find('}').ok_or_else(|| {
                    format!("unclosed '{{' in {text:?} (write {{{{ for a literal brace)")
                })?;
                let piece = match &rest[1..close] {
                    "target_pid" => Piece::Var(Var::TargetPid),
                    "live_pid" => Piece::Var(Var::LivePid),
                    "dead_pid" => Piece::Var(Var::DeadPid),
                    "any" => Piece::Any,
                    other => {
                        return Err(format!(
                        "unknown placeholder {{{other}}} in {text:?} (known: {{target_pid}}, {{live_pid}}, {{dead_pid}}, {{any}})"
                    ))
                    }
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &rest[close + 1..];
            } else if c == '}' {
                return Err(format!(
                    "lone '}}' in {text:?} (write }}}} for a literal brace)"
                ));
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Pattern { pieces })
    }

    /// Parses a line to send: like an expectation, but `{any}` means nothing there.
    pub fn parse_send(text: &str) -> Result<Pattern, String> {
        let pattern = Pattern::parse(text)?;
        if pattern.pieces.contains(&Piece::Any) {
            return Err(format!(
                "{{any}} cannot be sent (in {text:?}); it only matches replies"
            ));
        }
        Ok(pattern)
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    pub fn from_pieces(pieces: Vec<Piece>) -> Pattern {
        Pattern { pieces }
    }

    /// The placeholders other than `{any}`, in order of appearance.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Var(var) => Some(*var),
            _ => None,
        })
    }

    /// Whether `line` is an instance of the pattern. An unbound placeholder matches nothing.
    pub fn matches(&self, line: &str, bindings: &Bindings) -> bool {
        let mut resolved = Vec::with_capacity(self.pieces.len());
        for piece in &self.pieces {
            resolved.push(match piece {
                Piece::Literal(text) => Some(text.clone()),
                Piece::Var(var) => match bindings.get(*var) {
                    Some(value) => Some(value.to_string()),
                    None => return false,
                },
                Piece::Any => None,
            });
        }
        glob_match(&resolved, line)
    }

    /// The text with bound placeholders filled in; unbound ones and `{any}` stay as written.
    pub fn render(&self, bindings: &Bindings) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Var(var) => match bindings.get(*var) {
                    Some(value) => out.push_str(&value.to_string()),
                    None => {
                        out.push('{');
                        out.push_str(var.name());
                        out.push('}');
                    }
                },
                Piece::Any => out.push_str("{any}"),
            }
        }
        out
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&Bindings::default()))
    }
}

/// Matches literal pieces (`Some`) and wildcards (`None`, any text) against `text`.
/// Backtracks over the wildcards' lengths; patterns are a few pieces long.
fn glob_match(pieces: &[Option<String>], text: &str) -> bool {
    match pieces.split_first() {
        None => text.is_empty(),
        Some((Some(literal), rest)) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|after| glob_match(rest, after)),
        Some((None, rest)) => text
            .char_indices()
            .map(|(at, _)| at)
            .chain([text.len()])
            .any(|at| glob_match(rest, &text[at..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> Bindings {
        Bindings {
            target_pid: Some(1234),
            live_pid: Some(55),
            dead_pid: None,
        }
    }

    #[test]
    fn placeholders_match_their_values_only() {
        let pattern = Pattern::parse("TARGET_PID {target_pid}").unwrap();
        assert!(pattern.matches("TARGET_PID 1234", &bound()));
        assert!(!pattern.matches("TARGET_PID 12345", &bound()));
        assert!(!pattern.matches("TARGET_PID 1234 ", &bound()));
        assert!(!pattern.matches("READY", &bound()));
        assert_eq!(pattern.render(&bound()), "TARGET_PID 1234");
    }

    #[test]
    fn unbound_placeholders_match_nothing_and_render_as_written() {
        let pattern = Pattern::parse("GRANT_ACCESS {dead_pid}").unwrap();
        assert!(!pattern.matches("GRANT_ACCESS 7", &bound()));
        assert_eq!(pattern.render(&bound()), "GRANT_ACCESS {dead_pid}");
    }

    #[test]
    fn any_matches_any_text_including_none() {
        let pattern = Pattern::parse("ERROR: {any}").unwrap();
        assert!(pattern.matches("ERROR: invalid pid '0'", &bound()));
        assert!(pattern.matches("ERROR: ", &bound()));
        assert!(!pattern.matches("ERROR:", &bound()));
        assert!(!pattern.matches("READY", &bound()));
        let middle = Pattern::parse("{any}pid {live_pid}{any}").unwrap();
        assert!(middle.matches("ERROR: pid 55 is gone", &bound()));
        assert!(!middle.matches("ERROR: pid 56 is gone", &bound()));
        assert!(Pattern::parse("é{any}ü").unwrap().matches("éxü", &bound()));
    }

    #[test]
    fn braces_are_escaped_by_doubling() {
        let pattern = Pattern::parse("{{x}}").unwrap();
        assert!(pattern.matches("{x}", &bound()));
        assert_eq!(
            pattern.to_string(),
            "{{x}}".replace("{{", "{").replace("}}", "}")
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = Pattern::parse("TARGET_PID {pid}").unwrap_err();
        assert!(err.contains("unknown placeholder {pid}"), "{err}");
        assert!(Pattern::parse("{target_pid")
            .unwrap_err()
            .contains("unclosed"));
        assert!(Pattern::parse("a } b").unwrap_err().contains("lone"));
        let err = Pattern::parse_send("GRANT_ACCESS {any}").unwrap_err();
        assert!(err.contains("cannot be sent"), "{err}");
    }
}
