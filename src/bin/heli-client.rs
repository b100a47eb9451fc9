//! `heli-client [options]`: the REPL that attaches pdb to a controller's target.
//! Exit status: 0 when every attach and terminate succeeded (typos do not count), 1 when
//! one failed, 2 for bad usage, 3 when no controller of yours serves the pipes.
use clap::Parser;
use helicopter_parent::cli::duration::{parse_duration, BareUnit};
use helicopter_parent::core::wire::Dialect;
use helicopter_parent::io::client::{self, ClientOptions};
use helicopter_parent::io::pipes::DEFAULT_PIPE_DIR;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    // What --version prints (clap's default is the package name, the same for all four).
    name = "heli-client",
    version,
    about = "Attach pdb to a program started by heli-controller; commands: attach, quit, terminate, help"
)]
struct Args {
    /// Directory of the controller's pipes
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIPE_DIR)]
    pipe_dir: PathBuf,
    /// Python for `-m pdb -p` [default: the target's own interpreter, /proc/PID/exe]
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// How long to wait for each controller reply, opening the pipes included (e.g. 2s,
    /// 500ms; a bare number is seconds; 1ms to 10m)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = reply_timeout)]
    timeout: Duration,
    /// Wire dialect: seed, or legacy to talk to a helicopter-parent 0.x controller
    #[arg(long, default_value = "seed")]
    dialect: Dialect,
    /// How long an attach waits for the target to run the grant and pdb's request (e.g.
    /// 30s, 5m; a bare number is seconds; `none`: no limit) [default: until Ctrl-C on a
    /// terminal, 60s otherwise]
    #[arg(long, value_name = "DURATION", value_parser = attach_timeout)]
    attach_timeout: Option<AttachTimeout>,
}

/// `--attach-timeout`: a duration, or `none` for no limit.
#[derive(Clone, Copy)]
struct AttachTimeout(Option<Duration>);

fn attach_timeout(text: &str) -> Result<AttachTimeout, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(AttachTimeout(None));
    }
    parse_duration(
        text,
        BareUnit::Seconds,
        Duration::from_millis(1),
        Duration::from_secs(24 * 3600),
    )
    .map(|d| AttachTimeout(Some(d)))
}

fn reply_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(
        text,
        BareUnit::Seconds,
        Duration::from_millis(1),
        Duration::from_secs(600),
    )
}

fn main() -> ExitCode {
    // The hidden --generate-completions SHELL / --generate-man (src/cli/extras.rs).
    if let Some(code) = helicopter_parent::cli::extras::generate_if_asked::<Args>() {
        return code;
    }
    let args = Args::parse();
    let code = client::run(ClientOptions {
        pipe_dir: args.pipe_dir,
        python: args.python,
        timeout: args.timeout,
        dialect: args.dialect,
        attach_timeout: args.attach_timeout.map(|t| t.0),
    });
    ExitCode::from(code as u8)
}
