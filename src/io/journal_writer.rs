//! Writes the journal: one JSON line per record, each written with one `write` call as
//! soon as it exists, so a crash of the controller loses nothing it had handled (but the
//! count of a run of repeats, see below).
//!
//! Bounded whatever the input: a step (input and its effects) equal to the one before is
//! counted, not written again, and written as one `Repeated` record when the run ends,
//! every [`FLUSH_REPEATS_EVERY`] repeats, or at the end; past `limit_bytes` one `Capped`
//! record says where recording stopped.
use crate::core::journal::Record;
use crate::core::supervisor::{Effect, Input, Millis};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The default size limit of a journal.
pub const DEFAULT_LIMIT_BYTES: u64 = 64 << 20;

/// A run of repeats is written at least this often, so a controller killed in a flood
/// loses at most this many repeats of one step from its journal.
pub const FLUSH_REPEATS_EVERY: u64 = 10_000;

pub struct JournalWriter {
    file: File,
    path: PathBuf,
    written: u64,
    limit_bytes: u64,
    capped: bool,
    /// The last step written, and how many times it repeated since (not written yet).
    last: Option<(Input, Vec<Effect>)>,
    repeats: u64,
    last_repeat_at: Millis,
}

/// What became of a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    Written,
    /// The journal is at its limit; this was the first step left out.
    CappedNow,
    AlreadyCapped,
}

impl JournalWriter {
    /// Creates the journal; an existing file is never overwritten (it is someone's record).
    pub fn create(path: &Path, limit_bytes: u64) -> io::Result<JournalWriter> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(JournalWriter::from_new_file(
            file,
            path.to_path_buf(),
            limit_bytes,
        ))
    }

    /// A journal in a file the caller has just created (exclusively, with mode 0600),
    /// for example relative to the pipe directory's handle; `path` is for messages.
    pub fn from_new_file(file: File, path: PathBuf, limit_bytes: u64) -> JournalWriter {
        JournalWriter {
            file,
            path,
            written: 0,
            limit_bytes,
            capped: false,
            last: None,
            repeats: 0,
            last_repeat_at: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the header (or any single record), within the limit.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Whether `input` repeats the last step's input: such an input is journaled with its
    /// effects after handling (as a count), the others before handling.
    pub fn repeats_last(&self, input: &Input) -> bool {
        self.last.as_ref().is_some_and(|(last, _)| last == input)
    }

    /// Journals a step: call with `effects: None` before handling (writes the input unless
    /// it repeats the last one), then with the effects after.
    pub fn step(
        &mut self,
        at: Millis,
        input: &Input,
        effects: Option<&[Effect]>,
    ) -> io::Result<Appended> {
        if self.capped {
            return Ok(Appended::AlreadyCapped);
        }
        let repeat = self.repeats_last(input);
        match effects {
            None if repeat => Ok(Appended::Written),
            None => {
                self.flush_repeats()?;
                self.within_limit(
                    at,
                    &Record::Input {
                        at,
                        input: input.clone(),
                    },
                )
            }
            Some(effects) if repeat => {
                let same = self.last.as_ref().is_some_and(|(_, last)| last == effects);
                if same {
                    self.repeats += 1;
                    self.last_repeat_at = at;
                    if self.repeats >= FLUSH_REPEATS_EVERY {
                        self.flush_repeats()?;
                    }
                    return Ok(Appended::Written);
                }
                // Same input, other effects: not a repeat after all; write both in full.
                self.flush_repeats()?;
                let input_written = self.within_limit(
                    at,
                    &Record::Input {
                        at,
                        input: input.clone(),
                    },
                )?;
                if input_written != Appended::Written {
                    return Ok(input_written);
                }
                self.write_effects(at, input, effects)
            }
            Some(effects) => self.write_effects(at, input, effects),
        }
    }

    fn write_effects(
        &mut self,
        at: Millis,
        input: &Input,
        effects: &[Effect],
    ) -> io::Result<Appended> {
        let result = self.within_limit(
            at,
            &Record::Effects {
                at,
                effects: effects.to_vec(),
            },
        )?;
        self.last = Some((input.clone(), effects.to_vec()));
        Ok(result)
    }

    /// Writes the count of a run of repeats, if any (also at the end of a session).
    pub fn flush_repeats(&mut self) -> io::Result<()> {
        if self.repeats == 0 || self.capped {
            return Ok(());
        }
        let record = Record::Repeated {
            count: self.repeats,
            last_at: self.last_repeat_at,
        };
        self.repeats = 0;
        self.within_limit(self.last_repeat_at, &record).map(|_| ())
    }

    fn within_limit(&mut self, at: Millis, record: &Record) -> io::Result<Appended> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.written + line.len() as u64 > self.limit_bytes {
            self.capped = true;
            self.append(&Record::Capped {
                at,
                limit_bytes: self.limit_bytes,
            })?;
            return Ok(Appended::CappedNow);
        }
        self.file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(Appended::Written)
    }
}
