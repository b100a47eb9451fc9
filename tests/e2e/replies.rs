//! Every line gets its reply: a reader late to read still gets them all (issue 9, defect
//! 8), and a 0.x client, which opens `response` only after sending, is answered (defect 11).
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

#[test]
fn five_thousand_pipelined_lines_with_a_reader_two_seconds_late_all_get_their_replies() {
    const LINES: usize = 5000;
    let controller = Controller::start("counter.py");
    let mut response =
        helicopter_parent::io::pipes::open_reader(&controller.pipe("response")).unwrap();
    let dir = controller.dir.clone();
    // The writer runs beside: the control pipe holds 64 KiB and the lines are more.
    let writer = std::thread::spawn(move || {
        let mut control = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("control"))
            .unwrap();
        control
            .write_all("GET_TARGET_PID\n".repeat(LINES).as_bytes())
            .unwrap();
    });
    // The scenario itself: the reader is late. (Not synchronisation: nothing is awaited.)
    std::thread::sleep(Duration::from_secs(2));
    let expected = format!("TARGET_PID {}", controller.target_pid);
    let deadline = Instant::now() + TIMEOUT;
    let mut text = String::new();
    let mut buf = [0u8; 65536];
    while text.matches('\n').count() < LINES && Instant::now() < deadline {
        let mut fds = [PollFd::new(response.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        match response.read(&mut buf) {
            Ok(n) => text.push_str(std::str::from_utf8(&buf[..n]).unwrap()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading replies: {e}"),
        }
    }
    writer.join().unwrap();
    let replies: Vec<&str> = text.lines().collect();
    assert_eq!(replies.len(), LINES, "replies received");
    assert!(
        replies.iter().all(|r| *r == expected),
        "a reply was not {expected}"
    );
}

/// What the published 0.x client does: write the command, close `control`, and only then
/// open `response` with a blocking open.
fn legacy_exchange(controller: &Controller, line: &str) -> String {
    let mut control = std::fs::OpenOptions::new()
        .write(true)
        .open(controller.pipe("control"))
        .unwrap();
    control.write_all(format!("{line}\n").as_bytes()).unwrap();
    drop(control);
    let response = controller.pipe("response");
    let (tx, rx) = crossbeam_channel::bounded(1);
    // A blocking open cannot time out: a watcher thread does it, the test waits with a
    // deadline and, past it, opens the pipe for writing itself to release the thread.
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&response).unwrap();
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let reply = rx.recv_timeout(Duration::from_secs(10));
    if reply.is_err() {
        let _ = helicopter_parent::io::pipes::open_writer(&controller.pipe("response"));
    }
    let _ = reader.join();
    reply.unwrap_or_else(|_| panic!("{line:?}: no reply within 10 s (the 0.x client hangs)"))
}

#[test]
fn a_client_in_the_0x_order_is_answered_every_time() {
    let controller = Controller::start_with("counter.py", &["--dialect", "legacy"]);
    let expected = format!("target_pid {}\n", controller.target_pid);
    for _ in 0..20 {
        assert_eq!(legacy_exchange(&controller, "get_target_pid"), expected);
    }
}

/// A 0.x controller closes `control` after each client and opens it again: the client
/// must wait for the reader within its timeout instead of calling the pipes stale (issue
/// 9, defect 11, the other direction).
#[test]
fn a_legacy_client_waits_through_a_0x_controllers_reopen_window() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pipes");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .unwrap();
    for name in ["control", "response"] {
        nix::unistd::mkfifo(
            &dir.join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    // The fake 0.x controller: between two clients (the window is the scenario, not a
    // synchronisation) nobody reads `control`; then it reads one line and answers it.
    let served = dir.clone();
    let controller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // Non-blocking, with a deadline: a client that gave up must fail the test, not
        // leave this thread waiting for a writer forever.
        let mut control =
            helicopter_parent::io::pipes::open_reader(&served.join("control")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while std::time::Instant::now() < deadline {
            let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u16));
            match control.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ => {}
            }
        }
        if let Ok(mut response) =
            helicopter_parent::io::pipes::open_writer(&served.join("response"))
        {
            let _ = response.write_all(b"target_pid 4321\n");
        }
        String::from_utf8(line).unwrap()
    });
    let (code, out) = run_client(&dir, "quit\n", &["--dialect", "legacy"]);
    let asked = controller.join().unwrap();
    assert_eq!(
        asked, "get_target_pid",
        "the client did not wait for the reader:\n{out}"
    );
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    assert!(out.contains("Type 'help'"), "{out}");
}
