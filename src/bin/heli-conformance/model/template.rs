//! The command that starts the controller under test: `--controller 'CMD {pipe_dir}
//! {target}'`. The template is split into words once, like a POSIX shell would (single
//! and double quotes, backslash), and the placeholders are filled in per word, so a path
//! with spaces stays one argument. No shell runs unless the template says `sh -c ...`.
use std::ffi::OsString;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    PipeDir,
    Target,
    Python,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(Slot),
}

/// A parsed `--controller` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    words: Vec<Vec<Part>>,
}

/// The values for one case.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    pub pipe_dir: &'a Path,
    pub target: &'a Path,
    pub python: Option<&'a Path>,
}

impl CommandTemplate {
    pub fn parse(template: &str) -> Result<CommandTemplate, String> {
        let words = split_words(template)?;
        if words.is_empty() {
            return Err("the controller command is empty".into());
        }
        let words = words
            .iter()
            .map(|word| parse_slots(word))
            .collect::<Result<Vec<_>, _>>()?;
        if !words
            .iter()
            .flatten()
            .any(|part| *part == Part::Slot(Slot::Target))
        {
            return Err(
                "the controller command has no {target}: the suite must choose the target".into(),
            );
        }
        Ok(CommandTemplate { words })
    }

    /// Whether the template needs `{python}`.
    pub fn uses_python(&self) -> bool {
        self.words
            .iter()
            .flatten()
            .any(|part| *part == Part::Slot(Slot::Python))
    }

    /// Whether the template passes `{pipe_dir}` (without it, the controller's directory
    /// must be fixed and given to the suite with `--pipe-dir`).
    pub fn uses_pipe_dir(&self) -> bool {
        self.words
            .iter()
            .flatten()
            .any(|part| *part == Part::Slot(Slot::PipeDir))
    }

    /// The program and its arguments. `Err` only when `{python}` is used but unknown.
    pub fn render(&self, values: &TemplateValues<'_>) -> Result<Vec<OsString>, String> {
        self.words
            .iter()
            .map(|word| {
                let mut out = OsString::new();
                for part in word {
                    match part {
                        Part::Text(text) => out.push(text),
                        Part::Slot(Slot::PipeDir) => out.push(values.pipe_dir),
                        Part::Slot(Slot::Target) => out.push(values.target),
                        Part::Slot(Slot::Python) => out.push(values.python.ok_or(
                            "the controller command uses {python} but no Python 3.14 was given (--python)",
                        )?),
                    }
                }
                Ok(out)
            })
            .collect()
    }
}

fn parse_slots(word: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .map(|at| open + at)
            .ok_or_else(|| format!("unclosed '{{' in controller command word {word:?}"))?;
        parts.push(Part::Slot(match &rest[open + 1..close] {
            "pipe_dir" => Slot::PipeDir,
            "target" => Slot::Target,
            "python" => Slot::Python,
            other => {
                return Err(format!(
                    "unknown placeholder {{{other}}} in the controller command (known: {{pipe_dir}}, {{target}}, {{python}})"
                ))
            }
        }));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// Splits like a POSIX shell: whitespace separates words; '…' is literal; "…" is literal
/// except `\"`, `\\`, `\$` and `` \` ``; a backslash outside quotes escapes the next char.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("unclosed ' in the controller command".into()),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("unclosed \" in the controller command".into()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("unclosed \" in the controller command".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("the controller command ends with a lone backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> Vec<String> {
        CommandTemplate::parse(template)
            .unwrap()
            .render(&TemplateValues {
                pipe_dir: Path::new("/tmp/case 1/pipes"),
                target: Path::new("/src/counter.py"),
                python: Some(Path::new("/py/python3.14")),
            })
            .unwrap()
            .into_iter()
            .map(|word| word.into_string().unwrap())
            .collect()
    }

    #[test]
    fn fills_placeholders_per_word() {
        assert_eq!(
            render("ctl --pipe-dir {pipe_dir} --python={python} {target}"),
            [
                "ctl",
                "--pipe-dir",
                "/tmp/case 1/pipes",
                "--python=/py/python3.14",
                "/src/counter.py"
            ]
        );
    }

    #[test]
    fn quotes_like_a_shell() {
        assert_eq!(
            render(r#"sh -c 'exec ctl "$0" "$1"' {pipe_dir} {target} "a \"b\"" c\ d ''"#),
            [
                "sh",
                "-c",
                r#"exec ctl "$0" "$1""#,
                "/tmp/case 1/pipes",
                "/src/counter.py",
                r#"a "b""#,
                "c d",
                ""
            ]
        );
    }

    #[test]
    fn the_documented_shell_form_passes_placeholders_as_arguments() {
        assert_eq!(
            render(r#"sh -c "exec ctl --dir \"\$0\" \"\$1\"" {pipe_dir} {target}"#),
            [
                "sh",
                "-c",
                r#"exec ctl --dir "$0" "$1""#,
                "/tmp/case 1/pipes",
                "/src/counter.py"
            ]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t| CommandTemplate::parse(t).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("ctl {pipe_dir}").contains("no {target}"));
        assert!(err("ctl {pipedir} {target}").contains("unknown placeholder {pipedir}"));
        assert!(err("ctl '{target}").contains("unclosed '"));
        let template = CommandTemplate::parse("{python} ctl {target}").unwrap();
        assert!(template.uses_python() && !template.uses_pipe_dir());
        let err = template
            .render(&TemplateValues {
                pipe_dir: Path::new("p"),
                target: Path::new("t"),
                python: None,
            })
            .unwrap_err();
        assert!(err.contains("--python"), "{err}");
    }
}
