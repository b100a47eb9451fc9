//! Durations on the command line, in one style for every option: a number with a unit
//! (`1500ms`, `2s`, `1.5s`, `2m`). A bare number keeps the option's old unit, so earlier
//! spellings (`--grant-timeout 1500`, `--timeout 2`) still work. Every option has a range,
//! checked here: a value outside it is an error naming the option and its bounds, never a
//! wrapped-around deadline.
use std::time::Duration;

/// The unit a bare number is taken in, per option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareUnit {
    Millis,
    Seconds,
}

/// Parses `text` as a duration within `min..=max`.
pub fn parse_duration(
    text: &str,
    bare: BareUnit,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("'{text}' is not a duration (e.g. 1500ms or 2s)"));
    }
    let scale_ms = match (unit.trim(), bare) {
        ("", BareUnit::Millis) | ("ms", _) => 1.0,
        ("", BareUnit::Seconds) | ("s", _) => 1_000.0,
        ("m" | "min", _) => 60_000.0,
        ("h", _) => 3_600_000.0,
        (other, _) => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use ms, s, m or h, e.g. 1500ms or 2s)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 1500ms or 2s)"))?;
    let ms = value * scale_ms;
    let in_range =
        ms.is_finite() && ms >= min.as_secs_f64() * 1000.0 && ms <= max.as_secs_f64() * 1000.0;
    if !in_range {
        return Err(format!(
            "'{text}' is out of range: from {} to {}",
            show(min),
            show(max)
        ));
    }
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// `1500ms`, `2s`, `10m`: the shortest exact spelling.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MIN: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_secs(3600);

    #[rstest]
    #[case("1500ms", BareUnit::Millis, 1500)]
    #[case("1500", BareUnit::Millis, 1500)]
    #[case("2s", BareUnit::Millis, 2000)]
    #[case("1.5s", BareUnit::Millis, 1500)]
    #[case("2", BareUnit::Seconds, 2000)]
    #[case("0.25", BareUnit::Seconds, 250)]
    #[case("2m", BareUnit::Seconds, 120_000)]
    #[case(" 30s ", BareUnit::Seconds, 30_000)]
    fn accepted(#[case] text: &str, #[case] bare: BareUnit, #[case] ms: u64) {
        assert_eq!(
            parse_duration(text, bare, MIN, MAX),
            Ok(Duration::from_millis(ms))
        );
    }

    #[rstest]
    #[case("18446744073709551615", "out of range")]
    #[case("0", "out of range")]
    #[case("2h", "out of range")]
    #[case("-5", "not a duration")]
    #[case("abc", "not a duration")]
    #[case("5 parsecs", "unknown unit")]
    #[case("1e9", "unknown unit")]
    #[case("", "not a duration")]
    fn refused(#[case] text: &str, #[case] why: &str) {
        let error = parse_duration(text, BareUnit::Millis, MIN, MAX).unwrap_err();
        assert!(error.contains(why), "{text:?}: {error}");
    }

    #[test]
    fn bounds_are_shown_in_the_shortest_exact_unit() {
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::from_secs(2)), "2s");
        assert_eq!(show(Duration::from_secs(600)), "10m");
    }
}
