//! `heli-conformance --controller 'CMD {pipe_dir} {target}' [--dialect seed|legacy]`:
//! checks a controller implementation from the outside, through its pipes only, against
//! the cases built into it (`tests/fixtures/conformance/`) or those in `--cases DIR`.
//! Prints one line per case and a closing `N passed, N failed`; exits 1 when a case
//! failed, 2 when the suite could not run.
//!
//! The suite is a test harness, not part of the product: it lives here, with its binary,
//! and uses only the library's public API (wire format, pipe helpers, the exchange).
//! - [`model`]: the pure half: case model, reply patterns, dialect mapping, template.
//! - [`runner`]: runs the cases against a real controller process.
//! - [`builtin`]: the case files and target scripts compiled in.
// clippy.toml bans clocks and sleeps for pure code; the runner owns every deadline.
#![allow(clippy::disallowed_methods)]

mod builtin;
// Pure like the library's core: no clocks there either.
#[deny(clippy::disallowed_methods)]
mod model;
mod runner;

use clap::Parser;
use helicopter_parent::cli::exit::ToolExit;
use helicopter_parent::core::wire::Dialect;
use helicopter_parent::io::find_python::resolve_python;
use model::template::CommandTemplate;
use runner::{load_cases, run_suite, SuiteOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_FAILED: u8 = ToolExit::Failed.code();
const EXIT_UNUSABLE: u8 = ToolExit::Usage.code();

#[derive(Parser)]
#[command(
    // What --version prints (clap's default is the package name, the same for all four).
    name = "heli-conformance",
    version,
    about = "Check a helicopter-parent controller against the pipe protocol, from the outside"
)]
struct Args {
    /// How to start the controller under test. Placeholders: {pipe_dir}, {target}, {python}.
    /// Split into words like a shell would; no shell runs unless you write `sh -c '...'`
    #[arg(long, value_name = "TEMPLATE")]
    controller: String,
    /// Wire dialect the controller speaks: seed (upper case) or legacy (helicopter-parent 0.x)
    #[arg(long, default_value = "seed")]
    dialect: Dialect,
    /// For a controller whose pipe directory is fixed: where its pipes are ({pipe_dir} is
    /// then this). Default: a fresh directory per case
    #[arg(long, value_name = "DIR")]
    pipe_dir: Option<PathBuf>,
    /// Python 3.14 for {python} [default: $HELI_PYTHON, else python3.14 on PATH]
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Directory of case files (*.json) to run instead of the built-in cases (which are
    /// tests/fixtures/conformance, compiled in)
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Only this case (repeatable)
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Milliseconds a controller may take to serve its pipes
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    startup_timeout: u64,
    /// After a failure, print the tail of the controller's stderr
    #[arg(long, short)]
    verbose: bool,
    /// Skip the cases of this project's extensions of the protocol (PS, STACK, TASKS),
    /// for an implementation of the seed's protocol alone
    #[arg(long)]
    no_extensions: bool,
}

/// Where the case files come from.
enum Cases {
    /// `--cases DIR`.
    Given(PathBuf),
    BuiltIn(builtin::Unpacked),
}

impl Cases {
    fn dir(&self) -> PathBuf {
        match self {
            Cases::Given(dir) => dir.clone(),
            Cases::BuiltIn(unpacked) => unpacked.cases_dir(),
        }
    }

    /// For messages: the directory the user gave, or that the cases are built in.
    fn name(&self) -> String {
        match self {
            Cases::Given(dir) => dir.display().to_string(),
            Cases::BuiltIn(_) => "the built-in cases".into(),
        }
    }
}

fn main() -> ExitCode {
    // The hidden --generate-completions SHELL / --generate-man (src/cli/extras.rs).
    if let Some(code) = helicopter_parent::cli::extras::generate_if_asked::<Args>() {
        return code;
    }
    let args = Args::parse();
    let unusable = |message: String| {
        eprintln!("heli-conformance: {message}");
        ExitCode::from(EXIT_UNUSABLE)
    };
    let controller = match CommandTemplate::parse(&args.controller) {
        Ok(template) => template,
        Err(e) => return unusable(format!("--controller: {e}")),
    };
    if !controller.uses_pipe_dir() && args.pipe_dir.is_none() {
        return unusable(
            "--controller has no {pipe_dir}: pass the controller's fixed directory with --pipe-dir"
                .into(),
        );
    }
    let python = if controller.uses_python() {
        match resolve_python(args.python.as_deref()) {
            Ok(python) => Some(python),
            Err(e) => return unusable(format!("{{python}}: {e}")),
        }
    } else {
        args.python
    };
    // Lives until the suite ends: the built-in cases' targets are files in it.
    let cases = match args.cases {
        Some(dir) => Cases::Given(dir),
        None => match builtin::Unpacked::write() {
            Ok(unpacked) => Cases::BuiltIn(unpacked),
            Err(e) => return unusable(format!("unpacking the built-in cases: {e}")),
        },
    };
    let files = match load_cases(&cases.dir()) {
        Ok(files) => files,
        Err(e) => return unusable(format!("case file error: {e}")),
    };
    let known = |name: &String| {
        files
            .iter()
            .flat_map(|file| &file.cases)
            .any(|case| &case.name == name)
    };
    if let Some(unknown) = args.only.iter().find(|name| !known(name)) {
        return unusable(format!(
            "--only {unknown}: no such case in {}",
            cases.name()
        ));
    }
    let options = SuiteOptions {
        controller,
        dialect: args.dialect,
        python,
        fixed_pipe_dir: args.pipe_dir,
        startup_timeout: Duration::from_millis(args.startup_timeout),
        only: args.only,
        verbose: args.verbose,
        no_extensions: args.no_extensions,
    };
    match run_suite(&options, &files, &mut std::io::stdout().lock()) {
        Ok(summary) if summary.all_passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_FAILED),
        Err(e) => unusable(format!("writing the report: {e}")),
    }
}
