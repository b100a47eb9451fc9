//! `heli-replay JOURNAL [--check]`: folds a controller's journal through the same core and
//! prints the transcript. Exit status: 0 ok, 1 replay failed or diverged, 2 bad usage.
use clap::Parser;
use helicopter_parent::core::journal::replay;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Replay a heli-controller journal and print its transcript"
)]
struct Args {
    /// The journal (JSON Lines) written by heli-controller
    journal: PathBuf,
    /// Recompute every effect and compare with what the live controller did
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
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
                return ExitCode::from(1);
            }
        },
        Err(e) => {
            eprintln!("heli-replay: {}: {e}", args.journal.display());
            return ExitCode::from(1);
        }
    };
    match replay(&text, args.check) {
        Ok(done) => {
            print!("{}", done.session.transcript());
            if args.check {
                eprintln!(
                    "heli-replay: {} inputs replayed, every effect matches the recording",
                    done.inputs
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("heli-replay: {}: {e}", args.journal.display());
            ExitCode::from(1)
        }
    }
}
