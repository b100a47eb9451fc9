//! Attaching to targets that wait (issue 10): the grant and pdb's own injection wake a
//! main thread blocked in a system call with SIGURG (see `io::wake`). Each target runs no
//! Python code while it waits; without waking every attach here failed ("timed out").
use crate::support::*;
use std::io::Read;
use std::time::{Duration, Instant};

/// Waits until every thread of `pid` sleeps (state `S`): the target waits, it does not
/// run Python code by chance while we attach.
fn wait_until_all_asleep(pid: u32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let asleep = !tasks.is_empty()
            && tasks.iter().all(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit_once(')')
                            .map(|(_, r)| r.trim_start().starts_with('S'))
                    })
                    .unwrap_or(false)
            });
        if asleep {
            return;
        }
        assert!(Instant::now() < deadline, "target {pid} never fell asleep");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `attach`, `p EXPR`, `q`, twice (first attach and re-attach), then `quit`; returns the
/// client's output after checking both sessions ran.
fn attach_twice(controller: &Controller, expr: &str, expected: &str) -> String {
    wait_until_all_asleep(controller.target_pid);
    let started = Instant::now();
    let (code, out) =
        controller.client(&format!("attach\np {expr}\nq\nattach\np {expr}\nq\nquit\n"));
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("✅ Permission granted").count(), 2, "{out}");
    assert_eq!(out.matches("Debugger detached").count(), 2, "{out}");
    assert!(
        out.lines().filter(|l| l.contains(expected)).count() >= 2,
        "{expr} did not print {expected}:\n{out}"
    );
    // Without waking each attach either failed after 1.5 s or never ended; woken, both
    // take milliseconds. The bound leaves room for a loaded machine.
    assert!(
        took < Duration::from_secs(6),
        "two attaches took {took:?}\n{out}"
    );
    out
}

#[test]
fn an_idle_asyncio_server_is_attached_and_still_serves_after_detach() {
    let mut controller = Controller::start("wait_asyncio_server.py");
    let line = controller.stdout.wait_for("listening on port");
    let port: u16 = line.split_whitespace().last().unwrap().parse().unwrap();
    attach_twice(&controller, "('served', served)", "('served', 0)");
    let mut reply = String::new();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "served 1\n");
    assert!(is_alive(controller.target_pid));
}

#[test]
fn a_queue_consumer_with_main_in_join_is_attached() {
    let mut controller = Controller::start("wait_queue.py");
    controller
        .stdout
        .wait_for("consumer waiting on an empty queue");
    attach_twice(&controller, "(consumed, jobs.qsize())", "(0, 0)");
    // Both threads wait again as before.
    wait_until_all_asleep(controller.target_pid);
}

/// The waker is installed by the interpreter while `site` runs (`io::startup_waker`), so
/// a program that blocks at once is attachable however late the controller gets to run.
/// Checked where it is certain: in the program's own `sitecustomize`, which runs before
/// its main module and before the controller can write anything into it (the
/// interpreter has not finished starting). That module still runs, stays the one in
/// `sys.modules`, and the program's `sys.path` does not show the waker's archive.
#[test]
fn the_waker_is_in_place_before_the_program_s_own_sitecustomize_which_still_runs() {
    let own = fixture("own_sitecustomize");
    let target = TargetSpec::new(python(), "wait_queue.py").env("PYTHONPATH", &own);
    let mut controller = Controller::start_target(&target, &[]);
    let line = controller.stdout.wait_for("own sitecustomize ran");
    assert!(
        line.ends_with("SIGURG handler: helicopter_parent_woke_this_thread"),
        "{line}"
    );
    controller
        .stdout
        .wait_for("consumer waiting on an empty queue");
    attach_twice(&controller, "(consumed, jobs.qsize())", "(0, 0)");
    let (code, out) = controller.client(
        "attach\n\
         p __import__('sys').modules['sitecustomize'].__file__\n\
         p [e for e in __import__('sys').path if e.startswith('/proc/')]\n\
         p __import__('os').environ['PYTHONPATH'].split(':')[1:]\n\
         q\nquit\n",
    );
    assert_eq!(code, 0, "{out}");
    let own_module = own.join("sitecustomize.py");
    assert!(
        out.contains(&format!("'{}'", own_module.display())),
        "not the program's own sitecustomize:\n{out}"
    );
    assert!(
        out.contains("(Pdb) []"),
        "sys.path shows the archive:\n{out}"
    );
    assert!(
        out.contains(&format!("['{}']", own.display())),
        "the program's PYTHONPATH was not kept after the archive:\n{out}"
    );
}

#[test]
fn with_no_wake_the_program_s_environment_is_left_alone() {
    let mut controller = Controller::start_with("counter.py", &["--no-wake"]);
    controller.stdout.wait_for("counter ready");
    let (code, out) = controller.client(
        "attach\np (__import__('os').environ.get('PYTHONPATH'), __import__('signal').getsignal(__import__('signal').SIGURG))\nq\nquit\n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(None, <Handlers.SIG_DFL: 0>)"), "{out}");
}

#[test]
fn a_main_thread_in_a_300_s_sleep_is_attached_and_still_stops_on_terminate() {
    let mut controller = Controller::start("wait_long_sleep.py");
    controller.stdout.wait_for("sleeping 300 s");
    attach_twice(&controller, "marker", "asleep");
    // The first stop signal still interrupts the sleep at once: nothing pending in the
    // target swallowed its KeyboardInterrupt.
    assert_eq!(controller.send("TERMINATE"), "READY");
    assert_eq!(controller.wait(), 0);
    let log = controller.stderr.drain().join("\n");
    assert!(!log.contains("still running"), "{log}");
}

#[test]
fn a_target_with_its_own_sigurg_handler_keeps_it_and_is_attached() {
    let mut controller = Controller::start("wait_own_sigurg.py");
    controller.stdout.wait_for("own handler installed");
    attach_twice(&controller, "calls >= 0", "True");
    // Its handler is still the one SIGURG calls.
    controller.stdout.forget();
    unsafe { libc::kill(controller.target_pid as i32, libc::SIGURG) };
    controller.stdout.wait_for("own SIGURG handler called");
}

#[test]
fn with_no_wake_an_idle_server_is_not_woken() {
    let mut controller = Controller::start_with(
        "wait_asyncio_server.py",
        &["--no-wake", "--grant-timeout", "300"],
    );
    controller.stdout.wait_for("listening on port");
    wait_until_all_asleep(controller.target_pid);
    let reply = controller.send(&format!("GRANT_ACCESS {}", std::process::id()));
    assert!(
        reply.starts_with("ERROR: timed out after 300 ms"),
        "{reply}"
    );
    // No handler was installed: SIGURG keeps its default disposition.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", controller.target_pid)).unwrap();
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .unwrap();
    let caught = u64::from_str_radix(caught.trim(), 16).unwrap();
    assert_eq!(caught & (1 << (libc::SIGURG - 1)), 0, "{status}");
}
