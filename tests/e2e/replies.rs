//! Every line gets its reply: a reader late to read still gets them all (issue 9, defect
//! 8), and a 0.x client, which opens `response` only after sending, is answered (defect 11).
use crate::support::*;
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
