//! `just bench`: the one benchmark table. Every row is a measurement beside its reference,
//! both measured in this run on the same kind of target, with median, p90 and max over N
//! runs and the ratio of the medians. The table is printed (Markdown) and written to
//! `target/bench/bench.md` and `target/bench/bench.json`.
//!
//! Run with `cargo bench --bench table [SECTION...]` after `cargo build --release --bins`
//! (the binaries measured are the release ones). Sections: see [`SECTIONS`]; none named
//! means all. `HELI_BENCH_PYTHON=3.15` measures another Python.
//!
//! Adding rows: a section is a function that measures and hands each [`Row`] to `emit`.
//! Measure the subject and its reference in the same function, with the helpers of
//! `benches/common` (a controller and its target killed on drop, `time_to_exit` for a
//! command, `time_to_prompt` for pdb), e.g. for `heli-client stack` beside `py-spy dump`:
//!
//! ```ignore
//! let c = Controller::start(&bench.python, "four_threads.py", "ready");
//! let runs = |command: &dyn Fn() -> Command| (0..N).map(|_| time_to_exit(&mut command(), LIMIT)).collect();
//! let ours = runs(&|| { let mut k = c.client(); k.arg("stack"); k });
//! let pyspy = runs(&|| { let mut k = Command::new("py-spy"); k.args(["dump", "--pid", &c.target.to_string()]); k });
//! emit(Row::new("stack", Samples::times("heli-client stack, 4 threads", ours, LIMIT),
//!                        Samples::times("py-spy dump", pyspy, LIMIT)));
//! ```
//! and add the function to [`SECTIONS`].
#![allow(clippy::disallowed_methods)] // a benchmark reads clocks and sleeps between samples

#[path = "../common/mod.rs"]
mod common;

mod attach;
mod grant;
mod requests;
mod rest;
mod tree;

use common::stats::{self, Row};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// What every section gets.
pub struct Bench {
    pub python: PathBuf,
    /// `python3.14`: how the reference rows name the interpreter.
    pub python_name: String,
}

/// Hands one measured row to the table (and prints it as it comes).
pub type Emit<'a> = &'a mut dyn FnMut(Row);

/// A section: measures its rows and hands each to `emit`.
type Section = fn(&Bench, Emit);

/// The sections, in the order of the table.
const SECTIONS: &[(&str, Section)] = &[
    ("grant", grant::rows),
    ("attach", attach::rows),
    ("rest", rest::rows),
    ("requests", requests::rows),
    ("tree", tree::rows),
];

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then only the
    // statistics are checked (a two-minute run is no test).
    if !std::env::args().any(|a| a == "--bench") {
        stats::check();
        eprintln!("table: statistics checked; `cargo bench --bench table` runs the benchmark");
        return;
    }
    // Words choose sections.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for word in &chosen {
        assert!(
            SECTIONS.iter().any(|(name, _)| name == word),
            "no section {word:?}; the sections: {}",
            SECTIONS
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let python = common::python();
    let version = Command::new(&python)
        .args(["-c", "import sys; print(*sys.version_info[:3], sep='.')"])
        .output()
        .expect("run the Python under test");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let minor = version.rsplit_once('.').map_or(&*version, |(m, _)| m);
    let bench = Bench {
        python_name: format!("python{minor}"),
        python,
    };
    let mut machine = stats::machine();
    machine["python"] = format!("CPython {version}").into();
    if !chosen.is_empty() {
        machine["sections"] = chosen.join(" ").into();
    }

    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for (name, section) in SECTIONS {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == name) {
            continue;
        }
        let section_started = Instant::now();
        eprintln!("== {name}");
        section(&bench, &mut |row: Row| {
            eprint!("{}", stats::markdown_row(&row));
            rows.push(row);
        });
        eprintln!(
            "== {name}: {:.0} s",
            section_started.elapsed().as_secs_f64()
        );
    }
    machine["took_s"] = started.elapsed().as_secs().into();
    machine["loadavg_at_end"] = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .into();

    let table = stats::markdown(&rows);
    println!("\n{}\n\n{table}", stats::describe(&machine));
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| common::root().join("target"), PathBuf::from)
        .join("bench");
    stats::write(&dir, &machine, &rows).expect("write target/bench");
    println!(
        "written: {} and {}",
        dir.join("bench.md").display(),
        dir.join("bench.json").display()
    );
}
