//! Fuzz target: the framer and the line parsers. A byte stream built from the fuzz input
//! is pushed into a `LineFramer` in arbitrary chunks; the frames must be exactly those of
//! a plain reference split, and every line must parse (or be refused) without a panic,
//! with replies that stay one line.
use super::bytes::Bytes;
use helicopter_parent::core::wire::{
    parse_command, parse_reply, Command, Dialect, Frame, LineFramer, Reply, MAX_LINE, PID_MAX_LIMIT,
};

/// Pieces the stream is made of: raw bytes alone rarely form a command or a long line.
fn stream(u: &mut Bytes) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..u.below(12) {
        match u.below(10) {
            0 => out.extend(u.bytes(40)),
            1 => out.push(b'\n'),
            2 => out.extend_from_slice(b"\r\n"),
            // Around the length bound, where off-by-one errors live.
            3 => out.extend(vec![b'A'; MAX_LINE - 2 + u.below(5)]),
            4 => out.extend_from_slice(b"\xff\xfe"),
            5 => out.extend_from_slice("é４２".as_bytes()),
            6 => out.extend_from_slice(
                u.pick(&[
                    "GET_TARGET_PID",
                    "grant_access",
                    "REVOKE_ACCESS",
                    "revoke_access",
                    "TERMINATE",
                    "READY",
                    "TARGET_PID",
                    "ERROR:",
                    "error :",
                ])
                .as_bytes(),
            ),
            7 => out.extend_from_slice(
                u.pick(&[" ", "\t", "0", "1", "-1", "+7", "007", "4194304", "4194305"])
                    .as_bytes(),
            ),
            8 => out.extend_from_slice(u.u32().to_string().as_bytes()),
            _ => out.extend_from_slice(&u.bytes(3).repeat(u.below(4))),
        }
    }
    out
}

/// The frames a correct framer must produce: split at `\n`, classify each line.
fn reference(stream: &[u8]) -> Vec<Frame> {
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let last = parts.pop().unwrap_or(&[]);
    let classify = |line: &[u8], terminated: bool| {
        if line.len() > MAX_LINE {
            Frame::Oversized { len: line.len() }
        } else {
            match std::str::from_utf8(line) {
                Ok(text) => Frame::Text {
                    text: text.to_string(),
                    terminated,
                },
                Err(_) => Frame::NotUtf8 { len: line.len() },
            }
        }
    };
    let mut frames: Vec<Frame> = parts.iter().map(|l| classify(l, true)).collect();
    if !last.is_empty() {
        frames.push(classify(last, false));
    }
    frames
}

pub fn run(data: &[u8]) -> Result<(), String> {
    let mut u = Bytes::new(data);
    let bytes = stream(&mut u);
    let mut framer = LineFramer::default();
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = 1 + u.below(rest.len().min(1500));
        frames.extend(framer.push(&rest[..n]));
        rest = &rest[n..];
    }
    frames.extend(framer.finish());
    if framer.finish().is_some() {
        return Err("finish() twice gave two frames".into());
    }
    let expected = reference(&bytes);
    if frames != expected {
        return Err(format!(
            "framer disagrees with the reference split\n  got      {frames:?}\n  expected {expected:?}"
        ));
    }
    for frame in &frames {
        if let Frame::Text { text, .. } = frame {
            check_line(text)?;
        }
    }
    Ok(())
}

fn check_line(text: &str) -> Result<(), String> {
    match parse_command(text) {
        Ok(command) => {
            if let Command::GrantAccess { pid, .. } | Command::RevokeAccess { pid } = command {
                if pid == 0 || pid > PID_MAX_LIMIT {
                    return Err(format!("{text:?} parsed to an impossible pid {pid}"));
                }
            }
            for dialect in [Dialect::Seed, Dialect::Legacy] {
                let again = parse_command(&command.to_line(dialect));
                if again != Ok(command) {
                    return Err(format!("{command:?} does not round-trip: {again:?}"));
                }
            }
        }
        Err(e) => check_reply(&Reply::Error(e.to_string()))?,
    }
    // The client parses whatever the controller sends: any line at all.
    if let Ok(reply) = parse_reply(text) {
        check_reply(&reply)?;
    }
    check_reply(&Reply::Error(text.to_string()))
}

/// A reply is one line in both dialects and reads back as itself (an error message with
/// its line breaks turned into spaces and its ends trimmed, as the reader trims it).
fn check_reply(reply: &Reply) -> Result<(), String> {
    let normal = match reply {
        Reply::Error(msg) => Reply::Error(msg.replace(['\n', '\r'], " ").trim().to_string()),
        Reply::Processes(json) => {
            Reply::Processes(json.replace(['\n', '\r'], " ").trim().to_string())
        }
        Reply::Stacks(json) => Reply::Stacks(json.replace(['\n', '\r'], " ").trim().to_string()),
        Reply::Tasks(json) => Reply::Tasks(json.replace(['\n', '\r'], " ").trim().to_string()),
        Reply::Waiting(msg) => Reply::Waiting(msg.replace(['\n', '\r'], " ").trim().to_string()),
        Reply::TargetPid(_) | Reply::Ready => reply.clone(),
    };
    for dialect in [Dialect::Seed, Dialect::Legacy] {
        let line = reply.to_line(dialect);
        if line.contains(['\n', '\r']) {
            return Err(format!("reply {reply:?} spans lines: {line:?}"));
        }
        if parse_reply(&line) != Ok(normal.clone()) {
            return Err(format!(
                "reply {reply:?} reads back as {:?}",
                parse_reply(&line)
            ));
        }
    }
    Ok(())
}
