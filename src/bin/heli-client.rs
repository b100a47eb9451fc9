//! `heli-client [options] [COMMAND]`: without a command, the REPL that attaches pdb to a
//! controller's target; with one, a single request for shell scripts and CI (`ps`,
//! `stack`, `tasks`, `terminate`, `attach -c`, `ls`).
//! Exit status: 0 when everything asked for succeeded (typos do not count), 1 when a
//! command failed, 2 for bad usage, 3 when no controller of yours serves the pipes.
use clap::{Parser, Subcommand};
use helicopter_parent::cli::duration::{parse_duration, BareUnit};
use helicopter_parent::cli::pipe_dir::choose_from_env;
use helicopter_parent::core::wire::{parse_pid, Dialect};
use helicopter_parent::io::client::{self, ClientOptions, OneShot, EXIT_OK, EXIT_USAGE};
use helicopter_parent::io::controllers;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    // What --version prints (clap's default is the package name, the same for all four).
    name = "heli-client",
    version,
    about = "Attach pdb to a program started by heli-controller (REPL commands: attach, ps, stack, tasks, quit, terminate, help), or run one command from a script"
)]
struct Args {
    /// Directory of the controller's pipes [default: $HELI_PIPE_DIR, else
    /// /tmp/heliparent_debug]
    #[arg(long, value_name = "DIR", global = true)]
    pipe_dir: Option<PathBuf>,
    /// The controller started with `--name NAME` (also HELI_NAME): its pipes are in
    /// /tmp/heliparent_debug-<uid>/NAME
    #[arg(long, value_name = "NAME", global = true, conflicts_with = "pipe_dir")]
    name: Option<String>,
    /// Python for `-m pdb -p` [default: the target's own interpreter, /proc/PID/exe]
    #[arg(long, value_name = "PATH", global = true)]
    python: Option<PathBuf>,
    /// How long to wait for each controller reply, opening the pipes included (e.g. 2s,
    /// 500ms; a bare number is seconds; 1ms to 10m)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = reply_timeout, global = true)]
    timeout: Duration,
    /// Wire dialect: seed, or legacy to talk to a helicopter-parent 0.x controller
    #[arg(long, default_value = "seed", global = true)]
    dialect: Dialect,
    /// How long an attach waits for the target to run the grant and pdb's request (e.g.
    /// 30s, 5m; a bare number is seconds; `none`: no limit) [default: until Ctrl-C on a
    /// terminal, 60s otherwise]
    #[arg(long, value_name = "DURATION", value_parser = attach_timeout, global = true)]
    attach_timeout: Option<AttachTimeout>,
    #[command(subcommand)]
    command: Option<OneCommand>,
}

#[derive(Subcommand)]
enum OneCommand {
    /// List the target and every process it started: pid, parent, Python version,
    /// threads, state, command line, and each Python thread's innermost frame
    Ps,
    /// Print every thread's Python stack like a traceback, read without stopping the
    /// process
    Stack {
        /// A process of the supervised tree [default: the target]
        #[arg(value_parser = pid_arg)]
        pid: Option<u32>,
        /// Every Python process of the tree
        #[arg(long, conflicts_with = "pid")]
        all: bool,
    },
    /// List the asyncio tasks of a process and what each awaits
    Tasks {
        /// A process of the supervised tree [default: the target]
        #[arg(value_parser = pid_arg)]
        pid: Option<u32>,
    },
    /// Stop the controller, the target and its whole tree
    Terminate,
    /// Attach pdb, run the given commands in order, print their output, detach
    Attach {
        /// The process pdb attaches to [default: the target]
        #[arg(value_parser = pid_arg)]
        pid: Option<u32>,
        /// A pdb command (repeatable; run in order)
        #[arg(short = 'c', long = "command", value_name = "CMD")]
        commands: Vec<String>,
        /// A file of pdb commands, one a line, run after the -c ones ("-" reads stdin)
        #[arg(long = "commands", value_name = "FILE")]
        commands_file: Option<PathBuf>,
    },
    /// List the running controllers of this user: name, target, uptime, command
    Ls,
}

fn pid_arg(text: &str) -> Result<u32, String> {
    parse_pid(text).map_err(|e| e.to_string())
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

fn read_commands(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    text.map(|t| t.lines().map(String::from).collect())
        .map_err(|e| format!("--commands {}: {e}", path.display()))
}

fn main() -> ExitCode {
    // The hidden --generate-completions SHELL / --generate-man (src/cli/extras.rs).
    if let Some(code) = helicopter_parent::cli::extras::generate_if_asked::<Args>() {
        return code;
    }
    let args = Args::parse();
    let uid = nix::unistd::getuid().as_raw();
    let usage = |message: String| {
        eprintln!("heli-client: {message}");
        ExitCode::from(EXIT_USAGE as u8)
    };
    if let Some(OneCommand::Ls) = args.command {
        for line in controllers::render(&controllers::find(uid, args.timeout)) {
            println!("{line}");
        }
        return ExitCode::from(EXIT_OK as u8);
    }
    let chosen = match choose_from_env(args.pipe_dir, args.name, uid) {
        Ok(chosen) => chosen,
        Err(e) => return usage(e),
    };
    let opts = ClientOptions {
        pipe_dir: chosen.dir,
        python: args.python,
        timeout: args.timeout,
        dialect: args.dialect,
        attach_timeout: args.attach_timeout.map(|t| t.0),
    };
    let code = match args.command {
        None => client::run(opts),
        Some(OneCommand::Ps) => client::run_one_shot(&opts, OneShot::Ps),
        Some(OneCommand::Stack { pid, all }) => {
            client::run_one_shot(&opts, OneShot::Stack { pid, all })
        }
        Some(OneCommand::Tasks { pid }) => client::run_one_shot(&opts, OneShot::Tasks { pid }),
        Some(OneCommand::Terminate) => client::run_one_shot(&opts, OneShot::Terminate),
        Some(OneCommand::Attach {
            pid,
            mut commands,
            commands_file,
        }) => {
            if let Some(path) = &commands_file {
                match read_commands(path) {
                    Ok(more) => commands.extend(more),
                    Err(e) => return usage(e),
                }
            }
            client::run_scripted_attach(opts, pid, commands)
        }
        Some(OneCommand::Ls) => EXIT_OK,
    };
    ExitCode::from(code as u8)
}
