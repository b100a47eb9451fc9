//! Transition tests of the client machine: inputs in, effects out; nothing touches the OS.
use super::trust::{EntryFacts, EntryKind, ExecutableFacts};
use super::*;
use rstest::rstest;

const ME: u32 = 4242;
const UID: u32 = 1000;
const TARGET: u32 = 777;
const PYTHON: &str = "/usr/bin/python3.14";

fn config(input: InputSource) -> Config {
    Config {
        dialect: Dialect::Seed,
        input,
        pipe_dir: "/tmp/heliparent_debug".into(),
        request_timeout_ms: 2000,
        own_pid: ME,
        uid: UID,
        python: None,
        yama: Yama::Scope(1),
        privilege: TracerPrivilege::Ordinary,
        attach_timeout_ms: None,
        one_shot: None,
    }
}

fn trusted_exe() -> ExecutableFacts {
    let dir = |p: &str| {
        (
            PathBuf::from(p),
            Some(EntryFacts {
                kind: EntryKind::Directory,
                uid: 0,
                mode: 0o755,
            }),
        )
    };
    ExecutableFacts::Found {
        path: PYTHON.into(),
        same_file: true,
        components: vec![
            dir("/"),
            dir("/usr"),
            dir("/usr/bin"),
            (
                PathBuf::from(PYTHON),
                Some(EntryFacts {
                    kind: EntryKind::File,
                    uid: 0,
                    mode: 0o755,
                }),
            ),
        ],
    }
}

fn target_facts(uid: u32, exe: ExecutableFacts, yama: Yama) -> TargetFacts {
    TargetFacts::Running {
        uid,
        exe,
        yama,
        privilege: TracerPrivilege::Ordinary,
    }
}

fn line(text: &str) -> Input {
    Input::LineRead { text: text.into() }
}

fn replied(text: &str) -> Input {
    Input::Replied { line: text.into() }
}

/// The grant the client asks for: it waits (with progress) for as long as `timeout_ms`
/// allows; `process` names a process other than the target.
fn grant_waiting(process: Option<u32>, timeout_ms: Option<u64>) -> Effect {
    Effect::SendWaiting {
        command: Command::GrantAccess {
            pid: ME,
            process,
            wait: true,
        },
        timeout_ms,
    }
}

fn send(command: Command) -> Effect {
    Effect::Send {
        command,
        expect_reply: true,
        timeout_ms: 2000,
    }
}

/// Given a client in some state, when an input arrives, then these effects come out.
struct Given {
    client: Client,
}

impl Given {
    /// A client that found its controller and shows the prompt.
    fn at_prompt(input: InputSource) -> Given {
        Given::at_prompt_with(config(input))
    }
    fn at_prompt_with(config: Config) -> Given {
        let mut given = Given {
            client: Client::new(config),
        };
        given.when(Input::Started);
        given.when(replied(&format!("TARGET_PID {TARGET}")));
        assert_eq!(given.client.wants_line(), Some(LineWanted::Prompt(PROMPT)));
        given
    }
    /// A client whose pdb runs.
    fn pdb_running(input: InputSource) -> Given {
        let mut given = Given::at_prompt(input);
        given.when(line("attach"));
        given.when(replied(&format!("TARGET_PID {TARGET}")));
        given.when(Input::TargetInspected {
            pid: TARGET,
            facts: target_facts(UID, trusted_exe(), Yama::Scope(1)),
        });
        given.when(replied("READY"));
        assert_eq!(given.client.state_name(), "PdbRunning");
        given
    }
    fn when(&mut self, input: Input) -> Vec<Effect> {
        self.client.handle(input)
    }
    fn state(&self) -> &'static str {
        self.client.state_name()
    }
}

fn texts(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Say { text, .. } | Effect::Warn { text } => Some(text.clone()),
            Effect::Progress { text } => Some(text.clone()),
            Effect::Send { .. }
            | Effect::SendWaiting { .. }
            | Effect::CancelRequest
            | Effect::CancelPdb
            | Effect::InspectTarget { .. }
            | Effect::RunPdb { .. }
            | Effect::FeedPdb { .. }
            | Effect::ClosePdbInput
            | Effect::Exit { .. } => None,
        })
        .collect()
}

fn exit_code(effects: &[Effect]) -> Option<i32> {
    effects.iter().find_map(|e| match e {
        Effect::Exit { code } => Some(*code),
        Effect::Say { .. }
        | Effect::Warn { .. }
        | Effect::Send { .. }
        | Effect::SendWaiting { .. }
        | Effect::CancelRequest
        | Effect::CancelPdb
        | Effect::Progress { .. }
        | Effect::InspectTarget { .. }
        | Effect::RunPdb { .. }
        | Effect::FeedPdb { .. }
        | Effect::ClosePdbInput => None,
    })
}

#[test]
fn start_up_asks_for_the_target_then_shows_the_prompt() {
    let mut client = Client::new(config(InputSource::Terminal));
    let effects = client.handle(Input::Started);
    assert_eq!(
        effects,
        vec![
            Effect::Say {
                text: "Helicopter Parent - Debug Client".into(),
                tone: Tone::Plain
            },
            send(Command::GetTargetPid)
        ]
    );
    assert_eq!(client.wants_line(), None);
    let effects = client.handle(replied("TARGET_PID 777"));
    assert_eq!(texts(&effects), ["Type 'help' for available commands"]);
    assert_eq!(client.wants_line(), Some(LineWanted::Prompt(">>> ")));
}

#[rstest]
#[case::no_pipes(Input::RequestFailed { failure: RequestFailure::PipesMissing }, "❌ Controller not running (pipes not found)")]
#[case::not_served(Input::RequestFailed { failure: RequestFailure::NotServed }, "❌ Controller not responding: the pipes in /tmp/heliparent_debug exist")]
#[case::timed_out(Input::RequestFailed { failure: RequestFailure::TimedOut { waited_ms: 2000 } }, "❌ Timeout waiting for response to GET_TARGET_PID after 2.0 s")]
#[case::untrusted(Input::RequestFailed { failure: RequestFailure::Untrusted("refusing to use /tmp/x: it belongs to uid 5".into()) }, "❌ refusing to use /tmp/x")]
#[case::error_reply(
    replied("ERROR: target process 1 exited"),
    "❌ Controller error: target process 1 exited"
)]
#[case::nonsense(replied("hello"), "❌ unexpected reply from the controller: 'hello'")]
fn without_a_controller_the_client_exits_3(#[case] input: Input, #[case] first_line: &str) {
    let mut client = Client::new(config(InputSource::Piped));
    client.handle(Input::Started);
    let effects = client.handle(input);
    assert!(texts(&effects)[0].starts_with(first_line), "{effects:?}");
    assert_eq!(exit_code(&effects), Some(EXIT_NO_CONTROLLER));
    assert_eq!(client.state_name(), "Finished");
}

#[test]
fn without_a_controller_a_forbidding_scope_is_named() {
    let mut client = Client::new(Config {
        yama: Yama::Scope(3),
        ..config(InputSource::Terminal)
    });
    client.handle(Input::Started);
    let effects = client.handle(Input::RequestFailed {
        failure: RequestFailure::PipesMissing,
    });
    assert!(
        texts(&effects)[1].starts_with("   note: kernel.yama.ptrace_scope is 3"),
        "{effects:?}"
    );
}

#[test]
fn a_piped_attach_hands_pdb_its_lines_up_to_quit() {
    // given
    let mut given = Given::at_prompt(InputSource::Piped);
    // when attach is typed, then the target is asked for
    assert_eq!(
        given.when(line("attach")),
        vec![send(Command::GetTargetPid)]
    );
    assert_eq!(given.client.wants_line(), None);
    assert_eq!(
        given.when(replied("TARGET_PID 777")),
        vec![Effect::InspectTarget { pid: TARGET }]
    );
    let effects = given.when(Input::TargetInspected {
        pid: TARGET,
        facts: target_facts(UID, trusted_exe(), Yama::Scope(1)),
    });
    assert_eq!(
        texts(&effects),
        ["Requesting ptrace permission for client PID 4242..."]
    );
    assert_eq!(effects[1], grant_waiting(None, None));
    let effects = given.when(replied("READY"));
    assert_eq!(texts(&effects)[0], "✅ Permission granted");
    assert_eq!(
        effects.last(),
        Some(&Effect::RunPdb {
            interpreter: Interpreter::Path(PYTHON.into()),
            target: TARGET
        })
    );
    assert_eq!(given.client.wants_line(), Some(LineWanted::ForPdb));
    assert_eq!(
        given.when(line("p counter")),
        vec![Effect::FeedPdb {
            line: "p counter".into()
        }]
    );
    assert_eq!(
        given.when(line("q")),
        vec![Effect::FeedPdb { line: "q".into() }, Effect::ClosePdbInput]
    );
    // pdb's quit handed over: lines after it stay with the client
    assert_eq!(given.client.wants_line(), None);
    let effects = given.when(Input::PdbExited {
        status: PdbExit::Code(0),
    });
    assert_eq!(texts(&effects), ["\nDebugger detached"]);
    // The grant ends with the session: the client gives it back.
    assert_eq!(
        effects.last(),
        Some(&send(Command::RevokeAccess { pid: ME }))
    );
    assert_eq!(given.state(), "Revoking");
    assert_eq!(given.client.wants_line(), None, "no line is read meanwhile");
    given.when(replied("READY"));
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(given.client.exit_code(), EXIT_OK);
}

#[rstest]
#[case::replaced("ERROR: pid 4242 holds no grant (pid 5000 does)", None)]
#[case::refused(
    "ERROR: the controller is shutting down",
    Some("heli-client: the grant was not taken back: the controller is shutting down")
)]
fn giving_the_grant_back_never_fails_the_attach(#[case] reply: &str, #[case] warned: Option<&str>) {
    let mut given = Given::pdb_running(InputSource::Terminal);
    given.when(Input::PdbExited {
        status: PdbExit::Code(0),
    });
    let effects = given.when(replied(reply));
    let warnings: Vec<&str> = effects
        .iter()
        .filter_map(|e| {
            if let Effect::Warn { text } = e {
                Some(text.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(warnings, warned.into_iter().collect::<Vec<_>>());
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(given.client.exit_code(), EXIT_OK);
}

#[test]
fn on_a_terminal_pdb_reads_the_terminal_itself() {
    let mut given = Given::pdb_running(InputSource::Terminal);
    assert_eq!(given.client.wants_line(), None);
    let effects = given.when(Input::PdbExited {
        status: PdbExit::Code(0),
    });
    assert!(!effects.contains(&Effect::ClosePdbInput));
    given.when(replied("READY"));
    assert_eq!(given.state(), "AtPrompt");
}

#[rstest]
#[case::status(PdbExit::Code(1), "❌ pdb exited with status 1")]
#[case::signal(PdbExit::Signal(9), "❌ pdb was killed by signal 9")]
fn a_failed_pdb_counts_and_its_lines_are_skipped(#[case] status: PdbExit, #[case] said: &str) {
    let mut given = Given::pdb_running(InputSource::Piped);
    let effects = given.when(Input::PdbExited { status });
    assert_eq!(texts(&effects), [said, "\nDebugger detached"]);
    assert_eq!(
        effects[0],
        Effect::ClosePdbInput,
        "pdb's input is closed first"
    );
    given.when(replied("READY"));
    assert_eq!(given.state(), "SkippingPdbLines");
    let effects = given.when(line("p counter"));
    assert_eq!(
        texts(&effects),
        ["heli-client: not run (meant for pdb, which is not attached): p counter"]
    );
    given.when(line("q"));
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(given.client.exit_code(), EXIT_COMMAND_FAILED);
}

#[test]
fn pdb_that_stopped_reading_gets_no_more_lines() {
    let mut given = Given::pdb_running(InputSource::Piped);
    assert_eq!(
        given.when(Input::PdbInputBroken),
        vec![Effect::ClosePdbInput]
    );
    assert_eq!(given.client.wants_line(), None);
}

#[test]
fn end_of_input_while_pdb_runs_closes_its_input_then_says_goodbye() {
    let mut given = Given::pdb_running(InputSource::Piped);
    assert_eq!(given.when(Input::InputEnded), vec![Effect::ClosePdbInput]);
    given.when(Input::PdbExited {
        status: PdbExit::Code(0),
    });
    given.when(replied("READY"));
    assert_eq!(given.state(), "SkippingPdbLines");
    given.when(Input::InputEnded);
    let effects = given.when(Input::InputEnded);
    assert_eq!(texts(&effects), ["\nGoodbye!"]);
    assert_eq!(exit_code(&effects), Some(EXIT_OK));
}

#[test]
fn pdb_that_cannot_start_is_reported() {
    let mut given = Given::pdb_running(InputSource::Terminal);
    let effects = given.when(Input::PdbNotStarted {
        error: "No such file or directory".into(),
    });
    assert_eq!(
        texts(&effects),
        [
            "❌ cannot run /usr/bin/python3.14 -m pdb: No such file or directory",
            "\nDebugger detached"
        ]
    );
    // The grant is given back all the same.
    given.when(replied("READY"));
    assert_eq!(given.client.exit_code(), EXIT_COMMAND_FAILED);
}

#[rstest]
#[case::denied(
    replied("ERROR: pid 4242 is not a running process"),
    "❌ Permission denied: pid 4242 is not a running process"
)]
#[case::odd(
    replied("TARGET_PID 5"),
    "❌ unexpected reply to GRANT_ACCESS: TARGET_PID 5"
)]
#[case::timeout(Input::RequestFailed { failure: RequestFailure::TimedOut { waited_ms: 1500 } }, "❌ Timeout waiting for response to GRANT_ACCESS 4242 after 1.5 s (is the controller stuck or stopped?)")]
fn a_refused_grant_runs_no_pdb(#[case] input: Input, #[case] said: &str) {
    let mut given = Given::at_prompt(InputSource::Terminal);
    given.when(line("attach"));
    given.when(replied("TARGET_PID 777"));
    given.when(Input::TargetInspected {
        pid: TARGET,
        facts: target_facts(UID, trusted_exe(), Yama::Scope(1)),
    });
    let effects = given.when(input);
    assert_eq!(texts(&effects), [said]);
    assert!(!effects.iter().any(|e| matches!(e, Effect::RunPdb { .. })));
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(given.client.exit_code(), EXIT_COMMAND_FAILED);
}

#[rstest]
#[case::another_users_target(target_facts(UID + 1, trusted_exe(), Yama::Scope(1)), "❌ refusing to attach: target process 777 belongs to uid 1001, not to you (uid 1000)")]
#[case::deleted_exe(target_facts(UID, ExecutableFacts::Deleted { path: "/tmp/evil/python".into() }, Yama::Scope(1)), "❌ refusing to run the target's interpreter /tmp/evil/python: the kernel reports it deleted")]
#[case::scope_2(
    target_facts(UID, trusted_exe(), Yama::Scope(2)),
    "❌ kernel.yama.ptrace_scope is 2"
)]
#[case::gone(TargetFacts::NotRunning, "❌ target process 777 is not running")]
fn an_untrusted_or_unreachable_target_is_refused_before_any_grant(
    #[case] facts: TargetFacts,
    #[case] said: &str,
) {
    let mut given = Given::at_prompt(InputSource::Piped);
    given.when(line("attach"));
    given.when(replied("TARGET_PID 777"));
    let effects = given.when(Input::TargetInspected { pid: TARGET, facts });
    assert!(texts(&effects)[0].starts_with(said), "{effects:?}");
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::Send { .. } | Effect::RunPdb { .. })));
    // The piped lines meant for pdb are not run as client commands.
    assert_eq!(given.state(), "SkippingPdbLines");
}

#[test]
fn a_chosen_python_is_run_as_given_even_when_the_targets_was_deleted() {
    let mut given = Given::at_prompt_with(Config {
        python: Some("/opt/py/bin/python3.14".into()),
        ..config(InputSource::Terminal)
    });
    given.when(line("attach"));
    given.when(replied("TARGET_PID 777"));
    given.when(Input::TargetInspected {
        pid: TARGET,
        facts: target_facts(
            UID,
            ExecutableFacts::Deleted {
                path: PYTHON.into(),
            },
            Yama::Scope(1),
        ),
    });
    let effects = given.when(replied("READY"));
    assert_eq!(
        effects.last(),
        Some(&Effect::RunPdb {
            interpreter: Interpreter::Path("/opt/py/bin/python3.14".into()),
            target: TARGET
        })
    );
}

#[test]
fn an_unreadable_executable_falls_back_to_python_on_the_path() {
    let mut given = Given::at_prompt(InputSource::Terminal);
    given.when(line("attach"));
    given.when(replied("TARGET_PID 777"));
    given.when(Input::TargetInspected {
        pid: TARGET,
        facts: target_facts(UID, ExecutableFacts::Unreadable, Yama::Absent),
    });
    let effects = given.when(replied("READY"));
    assert_eq!(
        effects.last(),
        Some(&Effect::RunPdb {
            interpreter: Interpreter::SearchPath,
            target: TARGET
        })
    );
}

#[rstest]
#[case::quit("quit", "Goodbye!")]
#[case::exit("EXIT", "Goodbye!")]
fn quitting_leaves_with_the_sessions_status(#[case] typed: &str, #[case] said: &str) {
    let mut given = Given::at_prompt(InputSource::Terminal);
    let effects = given.when(line(typed));
    assert_eq!(texts(&effects), [said]);
    assert_eq!(exit_code(&effects), Some(EXIT_OK));
}

#[test]
fn help_blank_lines_and_interrupts_keep_the_prompt() {
    let mut given = Given::at_prompt(InputSource::Terminal);
    assert!(texts(&given.when(line("help")))[0].starts_with("Available commands:"));
    assert_eq!(given.when(line("   ")), vec![]);
    assert_eq!(
        texts(&given.when(Input::PromptInterrupted)),
        ["\nInterrupted (type 'quit' to exit)"]
    );
    assert_eq!(given.client.wants_line(), Some(LineWanted::Prompt(PROMPT)));
}

#[test]
fn an_unknown_command_is_named() {
    let mut given = Given::at_prompt(InputSource::Terminal);
    assert_eq!(
        texts(&given.when(line("atach"))),
        ["Unknown command: atach. Type 'help' for available commands"]
    );
    assert_eq!(given.state(), "AtPrompt");
}

#[rstest]
#[case::ready(
    Dialect::Seed,
    replied("READY"),
    EXIT_OK,
    "✅ Controller is stopping the target"
)]
#[case::legacy_no_reply(Dialect::Legacy, Input::Delivered, EXIT_OK, "")]
#[case::refused(
    Dialect::Seed,
    replied("ERROR: no"),
    EXIT_COMMAND_FAILED,
    "❌ Controller error: no"
)]
#[case::gone(Dialect::Seed, Input::RequestFailed { failure: RequestFailure::PipesMissing }, EXIT_COMMAND_FAILED, "❌ Controller not running")]
fn terminate_ends_the_session(
    #[case] dialect: Dialect,
    #[case] outcome: Input,
    #[case] code: i32,
    #[case] said: &str,
) {
    let mut given = Given::at_prompt_with(Config {
        dialect,
        ..config(InputSource::Piped)
    });
    let effects = given.when(line("terminate"));
    assert_eq!(
        effects[1],
        Effect::Send {
            command: Command::Terminate,
            expect_reply: dialect == Dialect::Seed,
            timeout_ms: 2000
        }
    );
    let effects = given.when(outcome);
    assert_eq!(exit_code(&effects), Some(code));
    assert!(
        texts(&effects).first().map_or("", |t| t).starts_with(said),
        "{effects:?}"
    );
    assert_eq!(given.state(), "Finished");
}

#[test]
fn failure_tones_mark_success_and_failure_lines() {
    let mut given = Given::pdb_running(InputSource::Terminal);
    let effects = given.when(Input::PdbExited {
        status: PdbExit::Code(2),
    });
    assert_eq!(
        effects[0],
        Effect::Say {
            text: "❌ pdb exited with status 2".into(),
            tone: Tone::Failure
        }
    );
}

#[test]
fn a_typo_does_not_fail_the_session() {
    let mut given = Given::at_prompt(InputSource::Piped);
    given.when(line("atach"));
    let effects = given.when(line("quit"));
    assert_eq!(exit_code(&effects), Some(EXIT_OK));
}

#[test]
fn q_quits_at_the_prompt() {
    let mut given = Given::at_prompt(InputSource::Terminal);
    let effects = given.when(line("q"));
    assert_eq!(texts(&effects), ["Goodbye!"]);
    assert_eq!(exit_code(&effects), Some(EXIT_OK));
}

#[test]
fn missing_pipes_name_the_directory_and_the_option() {
    let mut client = Client::new(config(InputSource::Piped));
    client.handle(Input::Started);
    let effects = client.handle(Input::RequestFailed {
        failure: RequestFailure::PipesMissing,
    });
    assert_eq!(
        texts(&effects)[0],
        "❌ Controller not running (pipes not found) in /tmp/heliparent_debug. Start heli-controller first, or point to its pipes with --pipe-dir DIR"
    );
}

#[rstest]
#[case::target_exited(
    TargetFacts::NotRunning,
    "its target (PID 777) has exited; a controller ends with its target"
)]
#[case::target_runs(
    target_facts(UID, trusted_exe(), Yama::Absent),
    "yet its target (PID 777) still runs"
)]
fn a_controller_that_went_away_is_explained(#[case] facts: TargetFacts, #[case] said: &str) {
    let mut given = Given::at_prompt(InputSource::Terminal);
    given.when(line("attach"));
    let effects = given.when(Input::RequestFailed {
        failure: RequestFailure::PipesMissing,
    });
    assert_eq!(effects, vec![Effect::InspectTarget { pid: TARGET }]);
    let effects = given.when(Input::TargetInspected { pid: TARGET, facts });
    let text = &texts(&effects)[0];
    assert!(
        text.starts_with(
            "❌ Controller not running any more: its pipes in /tmp/heliparent_debug are gone"
        ),
        "{text}"
    );
    assert!(text.contains(said), "{text}");
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(given.client.exit_code(), EXIT_COMMAND_FAILED);
}

/// The seed's example session, piped, as the machine sees it: one line per input and per
/// effect. Reviewing a change in behaviour starts with this snapshot's diff.
#[test]
fn transcript_of_a_piped_seed_session() {
    let mut client = Client::new(config(InputSource::Piped));
    let inputs = vec![
        Input::Started,
        replied("TARGET_PID 777"),
        line("attach"),
        replied("TARGET_PID 777"),
        Input::TargetInspected {
            pid: TARGET,
            facts: target_facts(UID, trusted_exe(), Yama::Scope(1)),
        },
        replied("READY"),
        line("p counter"),
        line("q"),
        Input::PdbExited {
            status: PdbExit::Code(0),
        },
        replied("READY"),
        line("terminate"),
        replied("READY"),
    ];
    let mut transcript = String::new();
    for input in inputs {
        transcript.push_str(&format!("input  {input:?}\n"));
        for effect in client.handle(input) {
            transcript.push_str(&format!("effect {effect:?}\n"));
        }
        transcript.push_str(&format!(
            "state  {} (wants line: {:?})\n",
            client.state_name(),
            client.wants_line()
        ));
    }
    insta::assert_snapshot!(transcript);
}

#[rstest]
#[case("ps", Command::Ps)]
#[case("stack", Command::Stack { which: crate::core::wire::StackTarget::Pid(TARGET) })]
#[case("STACK 77", Command::Stack { which: crate::core::wire::StackTarget::Pid(77) })]
#[case("stack --all", Command::Stack { which: crate::core::wire::StackTarget::All })]
#[case("tasks", Command::Tasks { pid: TARGET })]
#[case("tasks 9", Command::Tasks { pid: 9 })]
fn tree_questions_at_the_prompt_ask_the_controller(#[case] typed: &str, #[case] asked: Command) {
    let mut given = Given::at_prompt(InputSource::Piped);
    let allowance = crate::core::tree::READING_ALLOWANCE_MS;
    assert_eq!(
        given.when(line(typed)),
        vec![Effect::Send {
            command: asked,
            expect_reply: true,
            timeout_ms: 2000 + allowance
        }]
    );
    assert_eq!(given.state(), "Asking");
}

#[test]
fn the_answer_to_ps_is_printed_and_an_error_counts_as_a_failure() {
    let mut given = Given::at_prompt(InputSource::Piped);
    given.when(line("ps"));
    let json = format!(
        r#"{{"target":{TARGET},"processes":[{{"pid":{TARGET},"ppid":1,"interpreter":{{"kind":"python","version":"3.14.2"}},"threads":2,"state":"S (sleeping)","cmdline":["python3.14","app.py"],"frames":[{{"tid":{TARGET},"is_main":true,"frame":{{"filename":"/srv/app.py","line":44,"function":"work_loop"}}}}]}}],"truncated":false}}"#
    );
    let said = texts(&given.when(replied(&format!("PROCESSES {json}"))));
    assert!(
        said[1].contains("3.14.2") && said[1].ends_with("python3.14 app.py [target]"),
        "{said:?}"
    );
    assert!(
        said[2].ends_with(&format!("thread {TARGET} (main): /srv/app.py:44 work_loop")),
        "{said:?}"
    );
    assert_eq!(given.state(), "AtPrompt");
    given.when(line("stack 1"));
    let said = texts(&given.when(replied(
        "ERROR: pid 1 is not in the supervised tree (target 4242)",
    )));
    assert_eq!(
        said,
        ["❌ Controller error: pid 1 is not in the supervised tree (target 4242)"]
    );
    assert_eq!(
        exit_code(&given.when(line("quit"))),
        Some(EXIT_COMMAND_FAILED)
    );
}

#[rstest]
#[case("stack 1 2", "usage: stack [PID] [--all]")]
#[case("stack -5", "usage: stack [PID] [--all]")]
#[case("tasks --all", "usage: tasks [PID]")]
#[case("ps aux", "usage: ps")]
fn a_malformed_tree_question_asks_nothing_and_is_no_failure(
    #[case] typed: &str,
    #[case] usage: &str,
) {
    let mut given = Given::at_prompt(InputSource::Piped);
    let effects = given.when(line(typed));
    assert!(texts(&effects)[0].contains(usage), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Send { .. })));
    assert_eq!(exit_code(&given.when(line("quit"))), Some(EXIT_OK));
}

/// A client whose grant for `attach [chosen]` is out.
fn granting(config: Config, chosen: Option<u32>) -> (Given, Vec<Effect>) {
    let mut given = Given::at_prompt_with(config);
    let typed = chosen.map_or("attach".to_string(), |pid| format!("attach {pid}"));
    given.when(line(&typed));
    let pid = chosen.unwrap_or(TARGET);
    assert_eq!(
        given.when(replied(&format!("TARGET_PID {TARGET}"))),
        vec![Effect::InspectTarget { pid }]
    );
    let effects = given.when(Input::TargetInspected {
        pid,
        facts: target_facts(UID, trusted_exe(), Yama::Scope(1)),
    });
    assert_eq!(given.state(), "Granting");
    (given, effects)
}

fn progress(elapsed_ms: u64) -> Input {
    Input::GrantProgress {
        elapsed_ms,
        controller: format!("{elapsed_ms} pid 777 ran no Python code yet (threads: 777 (main) S)"),
    }
}

#[test]
fn attach_pid_asks_a_grant_in_that_process_and_runs_pdb_on_it() {
    let (mut given, effects) = granting(config(InputSource::Terminal), Some(900));
    assert_eq!(effects[1], grant_waiting(Some(900), None));
    let effects = given.when(replied("READY"));
    assert_eq!(
        effects.last(),
        Some(&Effect::RunPdb {
            interpreter: Interpreter::Path(PYTHON.into()),
            target: 900
        })
    );
}

#[rstest]
#[case("attach x", "attach: invalid pid 'x': not a decimal number")]
#[case("attach 0", "attach: invalid pid '0'")]
fn attach_with_a_bad_pid_says_what_is_wrong(#[case] typed: &str, #[case] said: &str) {
    let mut given = Given::at_prompt(InputSource::Terminal);
    let effects = given.when(line(typed));
    assert!(texts(&effects)[0].starts_with(said), "{effects:?}");
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(
        given.client.exit_code(),
        EXIT_OK,
        "a typo is no failed attach"
    );
}

#[test]
fn progress_says_once_that_it_waits_then_updates_one_line() {
    let config = Config {
        attach_timeout_ms: Some(60_000),
        ..config(InputSource::Terminal)
    };
    let (mut given, effects) = granting(config, None);
    assert_eq!(effects[1], grant_waiting(None, Some(60_000)));
    let first = given.when(progress(500));
    assert_eq!(
        texts(&first),
        [
            "⏳ pid 777 has not run the grant yet: waiting for it (Ctrl-C cancels, gives up after 1m 00s)",
            "   waiting 0.5 s: pid 777 ran no Python code yet (threads: 777 (main) S)"
        ]
    );
    assert!(matches!(first.last(), Some(Effect::Progress { .. })));
    let second = given.when(progress(1500));
    assert_eq!(
        second,
        vec![Effect::Progress {
            text: "   waiting 1.5 s: pid 777 ran no Python code yet (threads: 777 (main) S)".into()
        }]
    );
    let framed = given.when(Input::GrantProgress {
        elapsed_ms: 2500,
        controller: "2500 pid 777 ran no Python code yet (threads: 777 (main) S in do_sys_poll at x.py:3 main)".into(),
    });
    assert_eq!(
        texts(&framed),
        ["   waiting 2.5 s: pid 777 ran no Python code yet (threads: 777 (main) S in do_sys_poll at x.py:3 main)"]
    );
}

#[test]
fn the_clients_own_timeout_is_not_called_a_permission_problem() {
    let config = Config {
        attach_timeout_ms: Some(2_000),
        ..config(InputSource::Piped)
    };
    let (mut given, _) = granting(config, None);
    let effects = given.when(Input::RequestFailed {
        failure: RequestFailure::TimedOut { waited_ms: 2_000 },
    });
    assert_eq!(
        texts(&effects),
        ["❌ Not attached: pid 777 did not run the grant within 2.0 s (--attach-timeout); the controller took its request back"]
    );
    assert_eq!(given.client.exit_code(), EXIT_COMMAND_FAILED);
}

#[test]
fn ctrl_c_during_the_grant_cancels_then_gives_the_grant_back() {
    let (mut given, _) = granting(config(InputSource::Terminal), None);
    assert_eq!(given.when(Input::Interrupted), vec![Effect::CancelRequest]);
    assert_eq!(given.state(), "Cancelling");
    // A second Ctrl-C while it ends changes nothing.
    assert!(given.when(Input::Interrupted).is_empty());
    // Whatever ended the request (here a READY that crossed the cancel), the grant is
    // given back before the prompt.
    assert_eq!(
        given.when(replied("READY")),
        vec![send(Command::RevokeAccess { pid: ME })]
    );
    let effects = given.when(replied("ERROR: pid 4242 holds no grant"));
    assert_eq!(texts(&effects), ["\nattach cancelled"]);
    assert_eq!(given.state(), "AtPrompt");
    assert_eq!(given.client.exit_code(), EXIT_COMMAND_FAILED);
}

#[test]
fn ctrl_c_while_pdb_waits_stops_it_and_its_exit_is_the_cancellation() {
    let mut given = Given::pdb_running(InputSource::Terminal);
    assert_eq!(given.when(Input::Interrupted), vec![Effect::CancelPdb]);
    // The session was up: the driver left Ctrl-C to pdb, nothing came back; pdb ends
    // normally later.
    assert_eq!(given.state(), "PdbRunning");
    assert!(given
        .when(Input::PdbCancelled { withdrawn: true })
        .is_empty());
    let effects = given.when(Input::PdbExited {
        status: PdbExit::Signal(9),
    });
    assert!(
        texts(&effects).is_empty(),
        "no 'killed by signal 9': {effects:?}"
    );
    assert_eq!(effects, vec![send(Command::RevokeAccess { pid: ME })]);
    let effects = given.when(replied("READY"));
    assert_eq!(texts(&effects), ["\nattach cancelled"]);
}

#[test]
fn pdb_given_up_after_the_attach_timeout_says_so() {
    let mut given = Given::pdb_running(InputSource::Piped);
    given.when(Input::PdbGaveUp { waited_ms: 3_000 });
    given.when(Input::PdbExited {
        status: PdbExit::Signal(9),
    });
    let effects = given.when(replied("READY"));
    assert_eq!(
        texts(&effects),
        ["❌ Not attached: the target did not run pdb's request within 3.0 s (--attach-timeout); it was taken back"]
    );
}

#[test]
fn the_one_shot_attach_ends_the_session_when_the_attach_ends() {
    let config = Config {
        one_shot: Some("attach 900".into()),
        ..config(InputSource::Piped)
    };
    let mut client = Client::new(config);
    client.handle(Input::Started);
    assert_eq!(
        client.handle(replied(&format!("TARGET_PID {TARGET}"))),
        vec![send(Command::GetTargetPid)]
    );
    client.handle(replied(&format!("TARGET_PID {TARGET}")));
    client.handle(Input::TargetInspected {
        pid: 900,
        facts: target_facts(UID, trusted_exe(), Yama::Scope(1)),
    });
    let effects = client.handle(replied(
        "ERROR: pid 900 is not in the supervised tree (target 777; heli-client ps lists it)",
    ));
    assert_eq!(
        texts(&effects),
        ["❌ Not attached: pid 900 is not in the supervised tree (target 777; heli-client ps lists it)"]
    );
    assert_eq!(exit_code(&effects), Some(EXIT_COMMAND_FAILED));
}
