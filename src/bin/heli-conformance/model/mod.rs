//! The pure half of `heli-conformance`: the case model read from JSON, reply patterns,
//! the seed → legacy mapping, the controller command template and the report lines. No
//! I/O here; [`crate::runner`] runs the cases against a real controller.
pub mod case;
pub mod dialect;
pub mod pattern;
pub mod template;

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// What was expected and what happened instead.
    Fail(String),
    /// Not run, and why (a seed-only case in the legacy dialect).
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub verdict: Verdict,
}

impl Outcome {
    /// The case's output line: `pass <name>`, `FAIL <name>: <why>` or `skip <name>: <why>`.
    pub fn line(&self) -> String {
        match &self.verdict {
            Verdict::Pass => format!("pass {}", self.name),
            Verdict::Fail(why) => format!("FAIL {}: {}", self.name, one_line(why)),
            Verdict::Skip(why) => format!("skip {}: {}", self.name, one_line(why)),
        }
    }
}

/// Counts of passed and failed cases (skipped ones are neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

impl Summary {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome.verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Fail(_) => self.failed += 1,
            Verdict::Skip(_) => {}
        }
    }

    /// The closing line, exactly `N passed, N failed`.
    pub fn line(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }

    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }
}

/// A reply may hold anything; an output line must stay one line.
fn one_line(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary() {
        let mut summary = Summary::default();
        let outcomes = [
            Outcome {
                name: "a".into(),
                verdict: Verdict::Pass,
            },
            Outcome {
                name: "b".into(),
                verdict: Verdict::Fail("expected \"READY\", got \"x\ny\"".into()),
            },
            Outcome {
                name: "c".into(),
                verdict: Verdict::Skip("seed dialect only".into()),
            },
        ];
        let lines: Vec<String> = outcomes
            .iter()
            .map(|o| {
                summary.add(o);
                o.line()
            })
            .collect();
        assert_eq!(
            lines,
            [
                "pass a",
                "FAIL b: expected \"READY\", got \"x\\ny\"",
                "skip c: seed dialect only"
            ]
        );
        assert_eq!(summary.line(), "1 passed, 1 failed");
        assert!(!summary.all_passed());
    }
}
