//! A flood of bad input leaves memory, journal and log bounded (issue 9, defect 5: a
//! million junk lines used to leave 211 MB RSS, a 283 MB journal and a 165 MB log).
use crate::support::*;
use helicopter_parent::io::exchange::{NextLine, ResponseReader};
use std::io::Write;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_million_junk_lines_leave_memory_journal_and_log_flat() {
    const LINES: usize = 1_000_000;
    let mut controller = Controller::start("counter.py");
    let controller_pid = controller.child.id();
    // Warm up: the first replies and grants allocate what a session keeps anyway.
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
    let before = rss_kib(controller_pid);
    let mut reader = ResponseReader::open(&controller.dir).unwrap();
    let dir = controller.dir.clone();
    let writer = std::thread::spawn(move || {
        let mut control = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("control"))
            .unwrap();
        control
            .write_all(b"junk\n".repeat(LINES).as_slice())
            .unwrap();
        control.write_all(b"GET_TARGET_PID\n").unwrap();
    });
    // Every junk line gets its own reply, then the last line its TARGET_PID.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut errors = 0;
    let last = loop {
        let NextLine::Line(line) = reader.next_line(deadline, None).unwrap() else {
            panic!("no reply within 120 s after {errors} junk replies");
        };
        if line.starts_with("ERROR: unknown command 'junk'") {
            errors += 1;
        } else {
            break line;
        }
    };
    writer.join().unwrap();
    assert_eq!(errors, LINES, "one reply per junk line");
    assert_eq!(last, format!("TARGET_PID {}", controller.target_pid));
    let after = rss_kib(controller_pid);
    let journal = std::fs::read_dir(&controller.dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .expect("the journal")
        .path();
    let journal_bytes = std::fs::metadata(&journal).unwrap().len();
    assert_eq!(controller.send("TERMINATE"), "READY");
    controller.wait();
    let log: usize = controller.stderr.drain().iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "controller RSS {before} KiB -> {after} KiB; journal {journal_bytes} bytes; log {log} bytes"
    );
    assert!(
        after < before + 4096,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(
        journal_bytes < 64 * 1024,
        "journal of {journal_bytes} bytes"
    );
    assert!(log < 64 * 1024, "log of {log} bytes");
}
