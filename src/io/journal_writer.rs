//! Writes the journal: one JSON line per record, each written with one `write` call as
//! soon as it exists, so a crash of the controller loses nothing it had handled.
use crate::core::journal::Record;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct JournalWriter {
    file: File,
    path: PathBuf,
}

impl JournalWriter {
    /// Creates the journal; an existing file is never overwritten (it is someone's record).
    pub fn create(path: &Path) -> io::Result<JournalWriter> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(JournalWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// A journal in a file the caller has just created (exclusively, with mode 0600),
    /// for example relative to the pipe directory's handle; `path` is for messages.
    pub fn from_new_file(file: File, path: PathBuf) -> JournalWriter {
        JournalWriter { file, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}
