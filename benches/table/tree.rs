//! The supervised tree (issue 11): reading stacks and listing processes.
//!
//! - `stack` of a 4-thread target (`tests/fixtures/stacks/four_threads.py`: the main
//!   thread asleep, three computing, each a few frames deep), beside `py-spy dump --pid`
//!   on the same target, the tool Python developers use for this. Measured whole, as a
//!   user types them: `heli-client stack` (client, controller, native reading) and the
//!   `py-spy` process. py-spy comes from PyPI (`scripts/py-spy.sh`, or `$HELI_PYSPY`); it
//!   runs here as root (at `ptrace_scope=1` it would need root, `heli-client` does not).
//!   Also `io::stack_reader::read_stacks` alone, in this process, beside `py-spy dump
//!   --nonblocking` (py-spy's mode that does not stop the target, as ours never does).
//! - `ps` of a 20-process tree (`tests/fixtures/tree_of_20.py`: the target, 10 Python
//!   children, 9 pool workers), beside procps `ps` listing the same pids (pid, ppid,
//!   threads, state, command): ours also reads every Python process's version and each
//!   thread's innermost frame.
//! - What the start-up waker (`io::startup_waker`) costs each interpreter of the tree:
//!   `python -c 'import json'` with the controller's `sitecustomize` archive on its
//!   `PYTHONPATH` beside the same command without it, runs alternating.
use crate::common::stats::{Row, Samples};
use crate::common::{root, time_to_exit, Controller, Target};
use crate::{Bench, Emit};
use helicopter_parent::io::stack_reader::read_stacks;
use helicopter_parent::io::tree::children;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const N: usize = 30;
const LIMIT: Duration = Duration::from_secs(10);

/// py-spy's binary, or why there is none.
fn pyspy() -> Result<PathBuf, String> {
    let out = Command::new(root().join("scripts/py-spy.sh"))
        .output()
        .map_err(|e| format!("scripts/py-spy.sh: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn runs(command: &dyn Fn() -> Command) -> Vec<Option<Duration>> {
    (0..N)
        .map(|_| time_to_exit(&mut command(), LIMIT))
        .collect()
}

/// Descendants of `pid` (the crate's own `/proc/PID/task/*/children` reading).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let children = children(parent);
        found.extend(&children);
        queue.extend(children);
    }
    found
}

pub fn rows(bench: &Bench, emit: Emit) {
    let pyspy = pyspy();
    {
        let controller = Controller::start(&bench.python, "stacks/four_threads.py", "ready");
        let target = controller.target.to_string();
        let ours = runs(&|| {
            let mut k = controller.client();
            k.arg("stack");
            k
        });
        let reference = match &pyspy {
            Ok(pyspy) => Samples::times(
                "py-spy dump --pid",
                runs(&|| {
                    let mut k = Command::new(pyspy);
                    k.args(["dump", "--pid", &target]);
                    k
                }),
                LIMIT,
            ),
            Err(why) => panic!("stack row: no py-spy to compare with: {why}"),
        };
        emit(Row::new(
            "tree",
            Samples::times("heli-client stack, 4 threads", ours, LIMIT),
            reference,
        ));
    }
    {
        let target = Target::start(&bench.python, "stacks/four_threads.py", "ready");
        let pid = target.pid();
        let ours: Vec<Option<Duration>> = (0..N * 10)
            .map(|_| {
                let started = Instant::now();
                let read = read_stacks(pid);
                read.is_ok_and(|s| s.threads.len() == 4)
                    .then(|| started.elapsed())
            })
            .collect();
        let pyspy = pyspy.as_ref().expect("checked above");
        let reference = runs(&|| {
            let mut k = Command::new(pyspy);
            k.args(["dump", "--nonblocking", "--pid", &pid.to_string()]);
            k
        });
        emit(Row::new(
            "tree",
            Samples::times("read_stacks in-process, 4 threads", ours, LIMIT),
            Samples::times("py-spy dump --nonblocking", reference, LIMIT),
        ));
    }
    {
        let controller = Controller::start(&bench.python, "tree_of_20.py", "ready");
        let mut pids = vec![controller.target];
        pids.extend(descendants(controller.target));
        assert_eq!(pids.len(), 20, "tree_of_20.py: the tree is {pids:?}");
        let list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let ours = runs(&|| {
            let mut k = controller.client();
            k.arg("ps");
            k
        });
        let reference = runs(&|| {
            let mut k = Command::new("ps");
            k.args(["-o", "pid,ppid,nlwp,stat,args", "-p", &list]);
            k
        });
        emit(Row::new(
            "tree",
            Samples::times("heli-client ps, 20 processes", ours, LIMIT),
            Samples::times("procps ps -p (same 20 pids)", reference, LIMIT),
        ));
    }
    startup_archive_cost(bench, emit);
}

/// The start-up waker's cost to each interpreter: the same short program with and without
/// the archive, alternating so that both see the same machine.
fn startup_archive_cost(bench: &Bench, emit: Emit) {
    use helicopter_parent::io::startup_waker::{archive, sitecustomize_source};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let zip = dir.path().join("heli-sitecustomize.zip");
    std::fs::write(&zip, archive(&sitecustomize_source())).expect("write the archive");
    let python = |with_archive: bool| {
        let mut k = Command::new(&bench.python);
        k.args(["-c", "import json"]).env_remove("PYTHONPATH");
        if with_archive {
            k.env("PYTHONPATH", &zip);
        }
        k
    };
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    for _ in 0..N * 2 {
        ours.push(time_to_exit(&mut python(true), LIMIT));
        reference.push(time_to_exit(&mut python(false), LIMIT));
    }
    emit(Row::new(
        "tree",
        Samples::times(
            format!("{} -c 'import json', start-up waker", bench.python_name),
            ours,
            LIMIT,
        ),
        Samples::times(
            format!("{} -c 'import json', no PYTHONPATH", bench.python_name),
            reference,
            LIMIT,
        ),
    ));
}
