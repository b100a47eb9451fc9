//! `heli-controller [options] script.py [args...]`: runs a Python 3.14+ program under
//! supervision and grants pdb access to clients on request. Exit status: the target's
//! (128+N when killed by signal N), 0 after TERMINATE, 125 for the controller's own errors.
use clap::Parser;
use helicopter_parent::cli::duration::{parse_duration, BareUnit};
use helicopter_parent::cli::pipe_dir::{choose_from_env, named_root};
use helicopter_parent::core::supervisor::{parse_signal, ControllerExit};
use helicopter_parent::core::wire::Dialect;
use helicopter_parent::io::controller::{run, ControllerOptions, EXIT_CONTROLLER_FAILED};
use helicopter_parent::io::pipes::ensure_named_root;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    // What --version prints (clap's default is the package name, the same for all four).
    name = "heli-controller",
    version,
    about = "Run a Python 3.14+ program under supervision; heli-client attaches pdb to it later"
)]
struct Args {
    /// Directory for the control/response pipes (created 0700) [default: $HELI_PIPE_DIR,
    /// else /tmp/heliparent_debug]
    #[arg(long, value_name = "DIR")]
    pipe_dir: Option<PathBuf>,
    /// Serve the named pipe directory /tmp/heliparent_debug-<uid>/NAME (also HELI_NAME),
    /// so several controllers run side by side; `heli-client ls` lists them
    #[arg(long, value_name = "NAME", conflicts_with = "pipe_dir")]
    name: Option<String>,
    /// Python 3.14 or 3.15 interpreter for the target [default: $HELI_PYTHON, else python3.15 or python3.14 on PATH]
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Wire dialect: seed (GET_TARGET_PID, READY, ERROR:) or legacy (helicopter-parent 0.x)
    #[arg(long, default_value = "seed")]
    dialect: Dialect,
    /// Journal file (JSON Lines) [default: DIR/journal-<controller pid>.jsonl]
    #[arg(long, value_name = "FILE", conflicts_with = "no_journal")]
    journal: Option<PathBuf>,
    /// Keep no journal
    #[arg(long)]
    no_journal: bool,
    /// How long the target gets to run the grant before the answer is ERROR (e.g. 1500ms,
    /// 2s; a bare number is milliseconds; 1ms to 10m)
    #[arg(long, value_name = "DURATION", default_value = "1500ms", value_parser = grant_timeout)]
    grant_timeout: Duration,
    /// First signal of a stop, sent to the target alone (INT lets Python run its
    /// `finally` blocks and `atexit` handlers)
    #[arg(long, value_name = "SIGNAL", default_value = "INT", value_parser = parse_signal)]
    stop_signal: i32,
    /// Time from the stop signal to SIGKILL of everything left of the target's tree (e.g.
    /// 2s; a bare number is milliseconds; 0ms to 10m)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = stop_grace)]
    stop_grace: Duration,
    /// Do not wake a waiting target with SIGURG (no handler is installed in it; also
    /// HELI_NO_WAKE=1). Attaching to a target blocked in a system call then waits until it
    /// runs Python code by itself
    #[arg(long)]
    no_wake: bool,
    /// The Python script to run
    script: PathBuf,
    /// Arguments for the script
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

fn grant_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(
        text,
        BareUnit::Millis,
        Duration::from_millis(1),
        Duration::from_secs(600),
    )
}

fn stop_grace(text: &str) -> Result<Duration, String> {
    parse_duration(
        text,
        BareUnit::Millis,
        Duration::ZERO,
        Duration::from_secs(600),
    )
}

fn main() -> ExitCode {
    // The hidden --generate-completions SHELL / --generate-man (src/cli/extras.rs).
    if let Some(code) = helicopter_parent::cli::extras::generate_if_asked::<Args>() {
        return code;
    }
    let args = Args::parse();
    let journal = match (args.no_journal, args.journal) {
        (true, _) => Some(None),
        (false, Some(path)) => Some(Some(path)),
        (false, None) => None,
    };
    let uid = nix::unistd::getuid().as_raw();
    // A bad name is a bad command line (2); a named root that cannot be used is the
    // controller's own failure (125).
    let chosen = match choose_from_env(args.pipe_dir, args.name, uid) {
        Ok(chosen) => chosen,
        Err(e) => {
            eprintln!("heli-controller: error: {e}");
            return ExitCode::from(ControllerExit::USAGE_CODE as u8);
        }
    };
    if chosen.name.is_some() {
        if let Err(e) = ensure_named_root(&named_root(uid)) {
            eprintln!("heli-controller: error: {e}");
            return ExitCode::from(EXIT_CONTROLLER_FAILED as u8);
        }
    }
    let options = ControllerOptions {
        pipe_dir: chosen.dir,
        python: args.python,
        dialect: args.dialect,
        journal,
        grant_timeout_ms: args.grant_timeout.as_millis() as u64,
        stop_grace_ms: args.stop_grace.as_millis() as u64,
        stop_signal: args.stop_signal,
        wake: !args.no_wake && !helicopter_parent::io::wake::disabled_by_env(),
        script: args.script,
        args: args.args,
    };
    let code = run(options).unwrap_or_else(|e| {
        eprintln!("heli-controller: error: {e}");
        EXIT_CONTROLLER_FAILED
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
