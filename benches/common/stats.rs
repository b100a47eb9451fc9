//! Samples, their median / p90 / max, and the one table: each row a measurement beside
//! its reference, measured in the same run, and their ratio. Printed as Markdown and
//! written as JSON.
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// What a sample counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Seconds, shown as µs, ms or s.
    Time,
    /// A count (per run, or per interval) of this thing (singular): `1 tick`, `3 ticks`.
    Count(&'static str),
    /// Kibibytes, shown as MiB.
    KiB,
}

/// One number of a sample beside the quantiles (throughput, p99, lost replies...).
#[derive(Debug, Clone)]
pub struct Extra {
    pub key: &'static str,
    pub value: f64,
    /// How the Markdown table shows it.
    pub text: String,
}

/// N runs of one measurement. A run that never finished (a timeout) is `None` and sorts
/// above every finished run: a median that falls on one is shown as "> limit".
#[derive(Debug, Clone)]
pub struct Samples {
    pub name: String,
    pub unit: Unit,
    pub values: Vec<Option<f64>>,
    /// The bound a `None` run reached (for `Unit::Time`, in seconds).
    pub limit: f64,
    pub extras: Vec<Extra>,
}

impl Samples {
    /// Durations; `None` for a run that did not finish within `limit`.
    pub fn times(name: impl Into<String>, runs: Vec<Option<Duration>>, limit: Duration) -> Self {
        Samples {
            name: name.into(),
            unit: Unit::Time,
            values: runs
                .into_iter()
                .map(|r| r.map(|d| d.as_secs_f64()))
                .collect(),
            limit: limit.as_secs_f64(),
            extras: Vec::new(),
        }
    }

    pub fn values(name: impl Into<String>, unit: Unit, values: Vec<f64>) -> Self {
        Samples {
            name: name.into(),
            unit,
            values: values.into_iter().map(Some).collect(),
            limit: f64::INFINITY,
            extras: Vec::new(),
        }
    }

    pub fn with_extra(mut self, key: &'static str, value: f64, text: String) -> Self {
        self.extras.push(Extra { key, value, text });
        self
    }

    /// The sorted runs, unfinished ones last.
    fn sorted(&self) -> Vec<Option<f64>> {
        let mut sorted = self.values.clone();
        sorted.sort_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        sorted
    }

    /// The nearest-rank quantile `q` (0.5: median); `None` inside: an unfinished run.
    pub fn quantile(&self, q: f64) -> Option<Option<f64>> {
        let sorted = self.sorted();
        if sorted.is_empty() {
            return None;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// The mean of the runs, when every run finished.
    pub fn mean(&self) -> Option<f64> {
        let finished: Option<Vec<f64>> = self.values.iter().copied().collect();
        let finished = finished?;
        (!finished.is_empty()).then(|| finished.iter().sum::<f64>() / finished.len() as f64)
    }

    pub fn unfinished(&self) -> usize {
        self.values.iter().filter(|v| v.is_none()).count()
    }

    pub fn show(&self, value: Option<Option<f64>>) -> String {
        match value {
            None => "no runs".into(),
            Some(None) => format!("> {}", show_value(self.unit, self.limit)),
            Some(Some(v)) => show_value(self.unit, v),
        }
    }

    fn to_json(&self) -> Value {
        let at = |q| match self.quantile(q) {
            Some(Some(v)) => json!(v),
            _ => Value::Null,
        };
        let mut extras = serde_json::Map::new();
        for extra in &self.extras {
            extras.insert(extra.key.into(), json!(extra.value));
        }
        json!({
            "name": self.name,
            "unit": match self.unit {
                Unit::Time => "s".to_string(),
                Unit::Count(label) => label.to_string(),
                Unit::KiB => "KiB".to_string(),
            },
            "n": self.values.len(),
            "unfinished": self.unfinished(),
            "limit": if self.limit.is_finite() { json!(self.limit) } else { Value::Null },
            "median": at(0.5),
            "p90": at(0.9),
            "max": at(1.0),
            "mean": self.mean(),
            "values": self.values,
            "extras": extras,
        })
    }
}

pub fn show_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Time if v == 0.0 => "0 µs".to_string(),
        Unit::Time if v < 1e-5 => format!("{:.1} µs", v * 1e6),
        Unit::Time if v < 1e-3 => format!("{:.0} µs", v * 1e6),
        Unit::Time if v < 1.0 => format!("{:.1} ms", v * 1e3),
        Unit::Time if v == v.trunc() => format!("{v:.0} s"),
        Unit::Time => format!("{v:.2} s"),
        Unit::Count(label) if v == 1.0 => format!("1 {label}"),
        Unit::Count(label) if v == v.trunc() => format!("{v:.0} {label}s"),
        Unit::Count(label) => format!("{v:.1} {label}s"),
        Unit::KiB => format!("{:.1} MiB", v / 1024.0),
    }
}

/// Which statistic the ratio compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatioOf {
    Median,
    /// For counters sampled per interval, mostly zeros: the means (that is, the totals).
    Mean,
}

/// subject ÷ reference, with what is known when a side never finished or is zero.
#[derive(Debug, Clone, PartialEq)]
pub enum Ratio {
    Value(f64),
    /// The subject timed out: at least this.
    AtLeast(f64),
    /// The reference timed out: at most this.
    AtMost(f64),
    BothUnfinished,
    BothZero,
    ReferenceZero,
    Unknown,
}

impl Ratio {
    pub fn of(subject: &Samples, reference: &Samples, by: RatioOf) -> Ratio {
        let pick = |s: &Samples| match by {
            RatioOf::Median => s.quantile(0.5),
            RatioOf::Mean => Some(s.mean()),
        };
        match (pick(subject), pick(reference)) {
            (Some(Some(s)), Some(Some(r))) => match (s == 0.0, r == 0.0) {
                (true, true) => Ratio::BothZero,
                (false, true) => Ratio::ReferenceZero,
                (_, false) => Ratio::Value(s / r),
            },
            (Some(None), Some(Some(r))) if r > 0.0 => Ratio::AtLeast(subject.limit / r),
            (Some(Some(s)), Some(None)) => Ratio::AtMost(s / reference.limit),
            (Some(None), Some(None)) => Ratio::BothUnfinished,
            _ => Ratio::Unknown,
        }
    }

    pub fn show(&self) -> String {
        let x = |v: f64| {
            if v == 0.0 {
                "0×".to_string()
            } else if v >= 10.0 {
                format!("{v:.0}×")
            } else if v >= 0.1 {
                format!("{v:.2}×")
            } else {
                format!("{v:.3}×")
            }
        };
        match *self {
            Ratio::Value(v) => x(v),
            Ratio::AtLeast(v) => format!("> {}", x(v)),
            Ratio::AtMost(v) => format!("< {}", x(v)),
            Ratio::BothUnfinished => "both unfinished".into(),
            Ratio::BothZero => "both 0".into(),
            Ratio::ReferenceZero => "reference 0".into(),
            Ratio::Unknown => "unknown".into(),
        }
    }

    fn to_json(&self) -> Value {
        let (value, bound) = match *self {
            Ratio::Value(v) => (json!(v), "="),
            Ratio::AtLeast(v) => (json!(v), ">"),
            Ratio::AtMost(v) => (json!(v), "<"),
            Ratio::BothUnfinished | Ratio::BothZero | Ratio::ReferenceZero | Ratio::Unknown => {
                (Value::Null, "")
            }
        };
        json!({ "value": value, "bound": bound, "text": self.show() })
    }
}

/// One line of the table: a measurement and its reference from the same run.
#[derive(Debug, Clone)]
pub struct Row {
    /// The group it belongs to ("grant", "attach", ...).
    pub section: &'static str,
    pub subject: Samples,
    pub reference: Samples,
    pub ratio_of: RatioOf,
}

impl Row {
    pub fn new(section: &'static str, subject: Samples, reference: Samples) -> Row {
        Row {
            section,
            subject,
            reference,
            ratio_of: RatioOf::Median,
        }
    }

    pub fn by_mean(mut self) -> Row {
        self.ratio_of = RatioOf::Mean;
        self
    }

    pub fn ratio(&self) -> Ratio {
        Ratio::of(&self.subject, &self.reference, self.ratio_of)
    }

    fn cells(&self) -> Vec<String> {
        let side = |s: &Samples| {
            let n = if s.unfinished() > 0 {
                format!("{} ({} unfinished)", s.values.len(), s.unfinished())
            } else {
                s.values.len().to_string()
            };
            vec![
                s.name.clone(),
                n,
                s.show(s.quantile(0.5)),
                s.show(s.quantile(0.9)),
                s.show(s.quantile(1.0)),
            ]
        };
        let mut cells = side(&self.subject);
        cells.extend(side(&self.reference));
        let ratio = self.ratio().show();
        cells.push(match self.ratio_of {
            RatioOf::Median => ratio,
            RatioOf::Mean => format!("{ratio} (means)"),
        });
        let extras = |s: &Samples| s.extras.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        let mut notes = extras(&self.subject).join(", ");
        if !self.reference.extras.is_empty() {
            notes += &format!("; reference: {}", extras(&self.reference).join(", "));
        }
        cells.push(notes);
        cells
    }

    fn to_json(&self) -> Value {
        json!({
            "section": self.section,
            "name": self.subject.name,
            "subject": self.subject.to_json(),
            "reference": self.reference.to_json(),
            "ratio_of": match self.ratio_of { RatioOf::Median => "median", RatioOf::Mean => "mean" },
            "ratio": self.ratio().to_json(),
        })
    }
}

const HEADER: [&str; 12] = [
    "measurement",
    "N",
    "median",
    "p90",
    "max",
    "reference",
    "N",
    "median",
    "p90",
    "max",
    "ratio of medians",
    "notes",
];

fn line(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// One row as a line of the Markdown table.
pub fn markdown_row(row: &Row) -> String {
    line(&row.cells())
}

/// The rows as one Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = line(&HEADER.map(String::from));
    out += &line(&HEADER.map(|_| "---".to_string()));
    for row in rows {
        out += &markdown_row(row);
    }
    out
}

/// The machine a run was measured on: what the README must say beside a quote.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": read("/proc/loadavg").trim(),
    })
}

pub fn describe(machine: &Value) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{} CPUs ({}), Linux {}",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
    );
    for key in ["python", "loadavg_at_start", "loadavg_at_end", "took_s"] {
        if let Some(v) = machine.get(key) {
            let v = v.as_str().map_or_else(|| v.to_string(), String::from);
            let _ = write!(out, "; {key}: {v}");
        }
    }
    out
}

/// Writes `DIR/bench.json` and `DIR/bench.md`.
pub fn write(dir: &Path, machine: &Value, rows: &[Row]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = json!({
        "machine": machine,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )?;
    std::fs::write(
        dir.join("bench.md"),
        format!("{}\n\n{}", describe(machine), markdown(rows)),
    )
}

/// Checks of the statistics against values worked out by hand (run by `cargo test
/// --benches`).
pub fn check() {
    let ms = |v: u64| Some(Duration::from_millis(v));
    let runs = Samples::times(
        "runs",
        vec![ms(40), ms(10), None, ms(30), ms(20)],
        Duration::from_secs(5),
    );
    // Sorted: 10, 20, 30, 40, unfinished. Nearest rank: median = 3rd, p90 = 5th.
    assert_eq!(runs.quantile(0.5), Some(Some(0.030)));
    assert_eq!(runs.quantile(0.9), Some(None));
    assert_eq!(runs.show(runs.quantile(1.0)), "> 5 s");
    assert_eq!(runs.mean(), None);
    let never = Samples::times("never", vec![None], Duration::from_secs(5));
    assert_eq!(
        Ratio::of(&runs, &never, RatioOf::Median),
        Ratio::AtMost(0.030 / 5.0)
    );
    assert_eq!(
        Ratio::of(&never, &runs, RatioOf::Median),
        Ratio::AtLeast(5.0 / 0.030)
    );
    let zeros = Samples::values("zeros", Unit::Count("tick"), vec![0.0, 0.0]);
    let some = Samples::values("some", Unit::Count("tick"), vec![0.0, 3.0]);
    assert_eq!(Ratio::of(&zeros, &zeros, RatioOf::Mean), Ratio::BothZero);
    assert_eq!(
        Ratio::of(&some, &zeros, RatioOf::Mean),
        Ratio::ReferenceZero
    );
    assert_eq!(Ratio::of(&zeros, &some, RatioOf::Mean), Ratio::Value(0.0));
    assert_eq!(show_value(Unit::Count("tick"), 1.0), "1 tick");
    assert_eq!(show_value(Unit::Time, 0.000_042), "42 µs");
    assert_eq!(show_value(Unit::Time, 1.5), "1.50 s");
}
