//! The binaries' `--version`, and the completions and man pages they generate
//! (`--generate-completions SHELL`, `--generate-man`; src/cli/extras.rs), checked against
//! each binary's own `--help`: every option the help lists must be in every output.
use assert_cmd::Command;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

const BINARIES: [&str; 4] = [
    "heli-controller",
    "heli-client",
    "heli-replay",
    "heli-conformance",
];

/// Every run is a pure print; a few seconds is generous even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::cargo_bin(bin)
        .unwrap()
        .args(args)
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The long options `--help` lists (`--pipe-dir`, `--help`, ...).
fn long_options(bin: &str) -> BTreeSet<String> {
    let help = run(bin, &["--help"]);
    let options: BTreeSet<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.len() > 2 && word.starts_with("--") && !word.starts_with("---"))
        .map(str::to_string)
        .collect();
    assert!(options.contains("--version"), "{bin} --help: {help}");
    options
}

#[test]
fn version_names_each_binary() {
    for bin in BINARIES {
        let expected = format!("{bin} {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(run(bin, &["--version"]), expected);
    }
}

#[test]
fn generation_is_hidden_from_help() {
    for bin in BINARIES {
        let help = run(bin, &["--help"]);
        assert!(!help.contains("generate"), "{bin} --help: {help}");
    }
}

#[test]
fn completions_name_the_binary_and_every_option() {
    for bin in BINARIES {
        let options = long_options(bin);
        for shell in ["bash", "zsh", "fish"] {
            let script = run(bin, &["--generate-completions", shell]);
            assert!(script.contains(bin), "{bin} {shell}: no binary name");
            for option in &options {
                // fish writes `-l pipe-dir`, the others `--pipe-dir`.
                let bare = option.trim_start_matches('-');
                let found = match shell {
                    "fish" => script.contains(&format!("-l {bare}")),
                    _ => script.contains(option.as_str()),
                };
                assert!(found, "{bin} {shell} completions lack {option}");
            }
        }
        // The bash script at least parses.
        let script = run(bin, &["--generate-completions", "bash"]);
        let status = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "{bin}: bash -n rejected the completions");
    }
}

#[test]
fn man_pages_have_every_option_and_render() {
    let have_man = std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    for bin in BINARIES {
        let options = long_options(bin);
        let roff = run(bin, &["--generate-man"]);
        assert!(roff.contains(&format!(".TH {bin} 1")), "{bin}: {roff}");
        for option in &options {
            // roff writes a hyphen as `\-`.
            let escaped = option.replace('-', "\\-");
            assert!(roff.contains(&escaped), "{bin} man page lacks {option}");
        }
        if !have_man {
            eprintln!("man is not installed: {bin}'s page checked as roff text only");
            continue;
        }
        let page = tempfile::Builder::new().suffix(".1").tempfile().unwrap();
        page.as_file().write_all(roff.as_bytes()).unwrap();
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(page.path())
            .env("MANWIDTH", "100")
            .env("LANG", "C.UTF-8")
            .timeout(DEADLINE)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "man -l {bin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{bin}: {text}"
        );
        assert!(text.contains("SEE ALSO"), "{bin}: {text}");
        for option in &options {
            assert!(
                text.contains(option.as_str()),
                "{bin} rendered page lacks {option}: {text}"
            );
        }
    }
}

#[test]
fn misuse_is_a_usage_error() {
    let out = Command::cargo_bin("heli-client")
        .unwrap()
        .args(["--generate-completions", "tcsh"])
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("heli-client: error: --generate-completions: unknown shell"),
        "{stderr}"
    );
}
