//! Cases are written once, in the seed dialect; these functions give their legacy form
//! (the published helicopter-parent 0.x: lower-case words, `error : message`).
use super::pattern::{Pattern, Piece};
use helicopter_parent::core::wire::Dialect;

/// The seed's command words, which the legacy dialect spells in lower case.
const COMMAND_WORDS: [&str; 3] = ["GET_TARGET_PID", "GRANT_ACCESS", "TERMINATE"];

/// A line to send in `dialect`. Only a line's first word is changed, and only when it is
/// one of the seed's command words exactly as the seed writes them: a case that tests
/// something else (`Get_Target_Pid`, `FLY_AWAY`) sends what it says.
pub fn command_line(line: &str, dialect: Dialect) -> String {
    if dialect == Dialect::Seed {
        return line.to_string();
    }
    let indent = line.len() - line.trim_start().len();
    let word_end = line[indent..]
        .find(|c: char| c.is_ascii_whitespace())
        .map_or(line.len(), |end| indent + end);
    let word = &line[indent..word_end];
    if COMMAND_WORDS.contains(&word) {
        format!(
            "{}{}{}",
            &line[..indent],
            word.to_ascii_lowercase(),
            &line[word_end..]
        )
    } else {
        line.to_string()
    }
}

/// Raw bytes to send in `dialect`: each `\n`-separated segment that is UTF-8 is mapped
/// like [`command_line`]; other bytes are kept as they are.
pub fn command_bytes(bytes: &[u8], dialect: Dialect) -> Vec<u8> {
    if dialect == Dialect::Seed {
        return bytes.to_vec();
    }
    let mapped: Vec<Vec<u8>> = bytes
        .split(|&b| b == b'\n')
        .map(|segment| match std::str::from_utf8(segment) {
            Ok(text) => command_line(text, dialect).into_bytes(),
            Err(_) => segment.to_vec(),
        })
        .collect();
    mapped.join(&b'\n')
}

/// An expected reply in `dialect`: `TARGET_PID` → `target_pid`, `READY` → `ready`,
/// `ERROR:` → `error :`, at the start of the pattern. The rest (messages, placeholders)
/// is kept: messages are the implementation's own and cases match them with `{any}`.
pub fn reply_pattern(pattern: &Pattern, dialect: Dialect) -> Pattern {
    if dialect == Dialect::Seed {
        return pattern.clone();
    }
    let mut pieces = pattern.pieces().to_vec();
    if let Some(Piece::Literal(first)) = pieces.first_mut() {
        for (seed, legacy) in [
            ("ERROR:", "error :"),
            ("READY", "ready"),
            ("TARGET_PID", "target_pid"),
        ] {
            if let Some(rest) = first.strip_prefix(seed) {
                *first = format!("{legacy}{rest}");
                break;
            }
        }
    }
    Pattern::from_pieces(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pattern::Bindings;

    #[test]
    fn seed_is_unchanged() {
        assert_eq!(
            command_line("GRANT_ACCESS 5", Dialect::Seed),
            "GRANT_ACCESS 5"
        );
        let p = Pattern::parse("READY").unwrap();
        assert_eq!(reply_pattern(&p, Dialect::Seed), p);
    }

    #[test]
    fn legacy_lowers_only_the_seed_command_words() {
        let legacy = |line| command_line(line, Dialect::Legacy);
        assert_eq!(legacy("GET_TARGET_PID"), "get_target_pid");
        assert_eq!(
            legacy("GRANT_ACCESS {live_pid} X"),
            "grant_access {live_pid} X"
        );
        assert_eq!(legacy("  TERMINATE now"), "  terminate now");
        assert_eq!(legacy("Get_Target_Pid"), "Get_Target_Pid");
        assert_eq!(legacy("FLY_AWAY"), "FLY_AWAY");
        assert_eq!(legacy(""), "");
        assert_eq!(
            command_bytes(
                b"GET_TARGET_PID\nGRANT_ACCESS \xff\nTERMINATE",
                Dialect::Legacy
            ),
            b"get_target_pid\nGRANT_ACCESS \xff\nterminate".to_vec()
        );
    }

    #[test]
    fn legacy_replies() {
        let bindings = Bindings {
            target_pid: Some(9),
            ..Bindings::default()
        };
        let legacy = |text| reply_pattern(&Pattern::parse(text).unwrap(), Dialect::Legacy);
        assert!(legacy("TARGET_PID {target_pid}").matches("target_pid 9", &bindings));
        assert!(legacy("READY").matches("ready", &bindings));
        assert!(legacy("ERROR: {any}").matches("error : Invalid PID", &bindings));
        assert!(!legacy("ERROR: {any}").matches("ERROR: Invalid PID", &bindings));
    }
}
