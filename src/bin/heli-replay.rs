//! `heli-replay JOURNAL [--check] [--transcript] [--full]`: folds a controller's journal
//! through the same core and prints the header and the transcript (with `--check`, only
//! the verdict unless `--transcript`). Exit status: 0 ok, 1 replay failed or diverged,
//! 2 bad usage.
use clap::Parser;
use helicopter_parent::cli::exit::ToolExit;
use helicopter_parent::core::journal::{collapse_repeats, replay};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    // What --version prints (clap's default is the package name, the same for all four).
    name = "heli-replay",
    version,
    about = "Replay a heli-controller journal and print its transcript"
)]
struct Args {
    /// The journal (JSON Lines) written by heli-controller
    journal: PathBuf,
    /// Recompute every effect and compare with what the live controller did; prints only
    /// the verdict unless --transcript is given too
    #[arg(long)]
    check: bool,
    /// Print the transcript (the default without --check)
    #[arg(long)]
    transcript: bool,
    /// Do not fold repeated blocks of lines (a grant's surveys while the target waits)
    #[arg(long)]
    full: bool,
}

fn main() -> ExitCode {
    // The hidden --generate-completions SHELL / --generate-man (src/cli/extras.rs).
    if let Some(code) = helicopter_parent::cli::extras::generate_if_asked::<Args>() {
        return code;
    }
    let args = Args::parse();
    let text = match std::fs::read(&args.journal) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                eprintln!(
                    "heli-replay: {}: not UTF-8 text (byte {})",
                    args.journal.display(),
                    e.utf8_error().valid_up_to()
                );
                return ToolExit::Failed.into();
            }
        },
        Err(e) => {
            eprintln!("heli-replay: {}: {e}", args.journal.display());
            return ToolExit::Failed.into();
        }
    };
    match replay(&text, args.check) {
        Ok(done) => {
            if args.transcript || !args.check {
                print!("{}", done.header.describe());
                let transcript = done.session.transcript();
                if args.full {
                    print!("{transcript}");
                } else {
                    print!("{}", collapse_repeats(transcript));
                }
            }
            if args.check {
                eprintln!(
                    "heli-replay: {} inputs replayed, every effect matches the recording",
                    done.inputs
                );
            }
            ToolExit::Ok.into()
        }
        Err(e) => {
            eprintln!("heli-replay: {}: {e}", args.journal.display());
            ToolExit::Failed.into()
        }
    }
}
