//! Reading another CPython process's stacks and asyncio tasks from its memory, without
//! stopping it or running any code in it (at `ptrace_scope=1` only an ancestor, such as the
//! controller, may).
//!
//! Everything is found through `_Py_DebugOffsets` (the injector's
//! [`PythonProcess::open_for_reading`](crate::io::inject::PythonProcess) locates and
//! validates it) and, for tasks, through `_Py_AsyncioModuleDebugOffsets`, which the
//! `_asyncio` module keeps in its ELF section `.AsyncioDebug` (in
//! `lib-dynload/_asyncio.cpython-*.so`, or in the interpreter when the module is built
//! in). The pure parts (slot tables, location table, string shapes) live in
//! [`crate::pyruntime`].
//!
//! The target keeps running while it is read: every pointer is checked before it is
//! followed, every walk and every string is bounded, and what does not look like what it
//! should (a frame whose code object is not a code object, a string whose header is
//! impossible) is a *torn read*: the whole reading starts again, up to
//! [`MAX_ATTEMPTS`] times, then fails with a message that says so.
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::core::stacks::{AsyncTask, Frame, ProcessStacks, ThreadStack, MAX_FRAMES};
use crate::io::inject::locate::{elf_sources, read_maps, read_section};
use crate::io::inject::memory::{MemoryError, RemoteMemory};
use crate::io::inject::{memory_error, InjectError, PythonProcess, RuntimeSearch};
use crate::pyruntime::linetable::line_at;
use crate::pyruntime::maps::python_version_in_name;
use crate::pyruntime::stack_offsets::{
    stack_layout_for, AsyncioOffsets, StackOffsets, ASYNCIO_OFFSETS_LEN, FIRST_NON_PYTHON_OWNER,
    STACKREF_TAG_BITS, TPFLAGS_BYTES_SUBCLASS, TPFLAGS_LONG_SUBCLASS, TPFLAGS_UNICODE_SUBCLASS,
};
use crate::pyruntime::{
    is_plausible_pointer, parse_maps, python_files, runtime_address, supported_versions, unicode,
    LAYOUTS,
};

/// Why a reading failed, worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackError(pub String);

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StackError {}

/// How many times a reading starts again after a torn read before it gives up.
pub const MAX_ATTEMPTS: usize = 8;

/// A location table longer than this is not one (CPython's are a few KiB at most).
const MAX_LINETABLE: u64 = 1 << 20;

/// More asyncio tasks than this in one list means the list is corrupt or cyclic.
const MAX_TASKS: usize = 1 << 16;

/// Coroutines awaiting coroutines: deeper than this is cut.
const MAX_CORO_DEPTH: usize = 256;

/// Entries of an `awaited_by` set looked at, at most.
const MAX_SET_SLOTS: u64 = 1 << 16;

/// `FRAME_OWNED_BY_GENERATOR`: a coroutine's own frame.
const FRAME_OWNED_BY_GENERATOR: u8 = 1;

/// Every thread's Python stack of `pid` (main interpreter), the main thread first, the
/// others oldest first.
pub fn read_stacks(pid: i32) -> Result<ProcessStacks, StackError> {
    read_stacks_of(&open(pid)?)
}

/// [`read_stacks`] of a process already located (the grant injector's own handle): no
/// second search for its runtime, a few hundred microseconds less.
pub fn read_stacks_of(process: &PythonProcess) -> Result<ProcessStacks, StackError> {
    let pid = process.pid();
    let mut reader = Reader::new(process)?;
    let threads = with_retries(pid, "stacks", &mut reader, Reader::stacks)?;
    Ok(ProcessStacks {
        pid,
        python_version: process.offsets().version.to_string(),
        threads,
    })
}

/// The asyncio tasks of `pid` (main interpreter), in the order of their threads' lists.
pub fn read_tasks(pid: i32) -> Result<Vec<AsyncTask>, StackError> {
    let process = open(pid)?;
    let mut reader = Reader::new(&process)?;
    let asyncio = asyncio_offsets(pid, process.memory())?;
    with_retries(pid, "asyncio tasks", &mut reader, |reader| {
        reader.tasks(&asyncio)
    })
}

/// Runs `attempt` until it reads something that holds together, at most
/// [`MAX_ATTEMPTS`] times.
fn with_retries<'p, T>(
    pid: i32,
    what: &str,
    reader: &mut Reader<'p>,
    mut attempt: impl FnMut(&mut Reader<'p>) -> Attempt<T>,
) -> Result<T, StackError> {
    let mut last = String::new();
    for _ in 0..MAX_ATTEMPTS {
        match attempt(reader) {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(e)) => return Err(fatal(pid, e)),
            Err(Failure::Torn(why)) => {
                last = why;
                reader.forget();
            }
        }
    }
    Err(torn(pid, what, &last))
}

fn open(pid: i32) -> Result<PythonProcess, StackError> {
    PythonProcess::open_for_reading(pid, RuntimeSearch::Auto).map_err(|e| fatal(pid, e))
}

fn fatal(pid: i32, error: InjectError) -> StackError {
    if let InjectError::NotPython { .. } = error {
        if let Some(message) = older_python(pid) {
            return StackError(message);
        }
    }
    match error {
        // The injector's wording for these already names the process and the way out.
        InjectError::NoSuchProcess { .. }
        | InjectError::NotPython { .. }
        | InjectError::UnsupportedVersion { .. }
        | InjectError::FreeThreaded { .. }
        | InjectError::PermissionDenied { .. }
        | InjectError::NoMainInterpreter { .. } => StackError(error.to_string()),
        other => StackError(format!(
            "cannot read the Python memory of process {pid}: {other}"
        )),
    }
}

/// For a process with no readable runtime: whether its mapped files name a Python
/// version this tool does not serve (before 3.13 there are no debug offsets at all).
fn older_python(pid: i32) -> Option<String> {
    let maps = read_maps(pid).ok()?;
    let regions = parse_maps(&maps);
    let (major, minor) = python_files(&regions)
        .iter()
        .find_map(|file| python_version_in_name(file.path))?;
    let served = LAYOUTS
        .iter()
        .any(|layout| (layout.major, layout.minor) == (major, minor));
    (!served).then(|| {
        format!(
            "process {pid} runs Python {major}.{minor} (by the name of its interpreter), \
             whose memory this tool cannot read; supported: {}",
            supported_versions()
        )
    })
}

fn torn(pid: i32, what: &str, last: &str) -> StackError {
    StackError(format!(
        "the {what} of process {pid} kept changing while being read ({MAX_ATTEMPTS} attempts; \
         last: {last}); try again, or the remote-debug data of the target is damaged"
    ))
}

/// Why one attempt failed.
enum Failure {
    /// The process is gone, access is refused: no retry helps.
    Fatal(InjectError),
    /// What was read does not hold together (the target changed it under us).
    Torn(String),
}

type Attempt<T> = Result<T, Failure>;

/// A thread list that does not hold together is a list being changed (a thread starting
/// or exiting): worth another attempt; anything else the injector reports is final.
fn inject_failure(error: InjectError) -> Failure {
    match error {
        InjectError::Memory { detail, .. } => Failure::Torn(detail),
        other => Failure::Fatal(other),
    }
}

fn torn_err<T>(why: impl Into<String>) -> Attempt<T> {
    Err(Failure::Torn(why.into()))
}

/// What a frame's `f_executable` type is, cached per type address.
#[derive(Clone, Copy)]
struct TypeInfo {
    flags: u64,
    is_code: bool,
}

/// The parts of a code object a frame needs.
struct CodeInfo {
    filename: String,
    function: String,
    first_line: i64,
    linetable: Vec<u8>,
}

/// The fields of one `_PyInterpreterFrame`.
struct RawFrame {
    previous: u64,
    executable: u64,
    instr_ptr: u64,
    owner: u8,
    stackpointer: u64,
}

struct Reader<'p> {
    process: &'p PythonProcess,
    pid: i32,
    offsets: StackOffsets,
    /// Types and code objects seen during one attempt: code objects are immutable while
    /// a frame runs them, and a reading takes milliseconds.
    types: HashMap<u64, TypeInfo>,
    codes: HashMap<u64, Option<Rc<CodeInfo>>>,
}

impl<'p> Reader<'p> {
    fn new(process: &'p PythonProcess) -> Result<Reader<'p>, StackError> {
        let pid = process.pid();
        let layout = process.layout();
        let (slots, facts) = stack_layout_for(layout).ok_or_else(|| {
            StackError(format!(
                "process {pid} runs Python {}, whose frame layout this build does not know",
                process.offsets().version
            ))
        })?;
        let mut raw = vec![0u8; layout.struct_len];
        process
            .memory()
            .read(process.runtime_address(), &mut raw)
            .map_err(|e| fatal(pid, memory_error(pid, e, "reading _Py_DebugOffsets")))?;
        let offsets = StackOffsets::parse(slots, facts, &raw, process.offsets().tstate_size)
            .map_err(|e| {
                StackError(format!(
                    "the remote-debug data (_Py_DebugOffsets) of process {pid} is unreadable: {e:?}"
                ))
            })?;
        Ok(Reader {
            process,
            pid,
            offsets,
            types: HashMap::new(),
            codes: HashMap::new(),
        })
    }

    fn forget(&mut self) {
        self.types.clear();
        self.codes.clear();
    }

    fn memory(&self) -> &RemoteMemory {
        self.process.memory()
    }

    /// The main interpreter's thread states, checked against what the kernel says: a
    /// walk that ran through a thread state being freed can follow a stale `next` into
    /// memory that looks like more threads, or miss the rest of the list.
    fn thread_states(&self) -> Attempt<Vec<(u64, i32, bool)>> {
        let mut states = self.process.thread_states().map_err(inject_failure)?;
        // A thread state is listed before its thread binds to it and sets its native id:
        // such a thread is starting and runs no Python code yet.
        states.retain(|&(_, tid, is_main)| tid != 0 || is_main);
        let tasks: HashSet<i32> = crate::io::procfs::task_ids(self.pid).into_iter().collect();
        if tasks.is_empty() {
            return Err(Failure::Fatal(InjectError::NoSuchProcess { pid: self.pid }));
        }
        let mut seen = HashSet::new();
        for &(_, tid, _) in &states {
            if !tasks.contains(&tid) || !seen.insert(tid) {
                return torn_err(format!(
                    "thread state of tid {tid}, which is no thread of it"
                ));
            }
        }
        let has_main = self
            .process
            .main_thread_tid()
            .map_err(inject_failure)?
            .is_some();
        if has_main && !states.iter().any(|&(_, _, is_main)| is_main) {
            return torn_err("the thread list did not reach the main thread");
        }
        Ok(states)
    }

    fn stacks(&mut self) -> Attempt<Vec<ThreadStack>> {
        let states = self.thread_states()?;
        let mut threads = Vec::with_capacity(states.len());
        // CPython lists the newest thread first; people expect the main one first, then
        // the others in the order they started.
        for &(tstate, tid, is_main) in states.iter().rev() {
            let frames = self.thread_frames(tstate)?;
            threads.push(ThreadStack {
                tid,
                is_main,
                frames,
            });
        }
        threads.sort_by_key(|t| !t.is_main);
        Ok(threads)
    }

    fn thread_frames(&mut self, tstate: u64) -> Attempt<Vec<Frame>> {
        let mut address = self.read_u64(
            tstate + self.offsets.tstate_current_frame,
            "thread_state.current_frame",
        )?;
        let mut frames = Vec::new();
        // Frames that run no Python code (entry frames) are skipped but still counted, so
        // that a chain that loops through them ends too.
        let mut visited = 0;
        while address != 0 && frames.len() < MAX_FRAMES && visited < 2 * MAX_FRAMES {
            visited += 1;
            let raw = self.read_frame(address)?;
            if let Some(frame) = self.frame(&raw)? {
                frames.push(frame);
            }
            address = raw.previous;
        }
        Ok(frames)
    }

    fn read_frame(&self, address: u64) -> Attempt<RawFrame> {
        if !is_plausible_pointer(address) {
            return torn_err(format!("frame pointer {address:#x}"));
        }
        let o = &self.offsets;
        let mut raw = [0u8; 256];
        let len = o.frame_read_len() as usize;
        let buf = raw
            .get_mut(..len)
            .ok_or_else(|| Failure::Torn("frame fields implausibly far apart".into()))?;
        self.read(address, buf, "an interpreter frame")?;
        let word = |at: u64| word_at(buf, at);
        Ok(RawFrame {
            previous: word(o.frame_previous),
            executable: word(o.frame_executable) & !STACKREF_TAG_BITS,
            instr_ptr: word(o.frame_instr_ptr),
            owner: buf.get(o.frame_owner as usize).copied().unwrap_or(u8::MAX),
            stackpointer: word(o.frame_stackpointer),
        })
    }

    /// The Python frame a raw frame stands for; `None` for frames that run no Python
    /// code (owned by the interpreter or the C stack, or whose executable is no code
    /// object, such as `None` in entry frames).
    fn frame(&mut self, raw: &RawFrame) -> Attempt<Option<Frame>> {
        if raw.owner >= FIRST_NON_PYTHON_OWNER {
            // 3.14 knows owners up to 4 (`FRAME_OWNED_BY_CSTACK`).
            if raw.owner > 4 {
                return torn_err(format!("frame owner {}", raw.owner));
            }
            return Ok(None);
        }
        if raw.executable == 0 {
            return Ok(None);
        }
        let Some(code) = self.code(raw.executable)? else {
            return Ok(None);
        };
        let adaptive = raw.executable + self.offsets.code_co_code_adaptive;
        let line = raw
            .instr_ptr
            .checked_sub(adaptive)
            .and_then(|bytes| line_at(&code.linetable, code.first_line, bytes / 2))
            .and_then(|line| u32::try_from(line).ok());
        Ok(Some(Frame {
            filename: code.filename.clone(),
            line,
            function: code.function.clone(),
        }))
    }

    fn type_info(&mut self, object: u64) -> Attempt<TypeInfo> {
        if !is_plausible_pointer(object) {
            return torn_err(format!("object pointer {object:#x}"));
        }
        let ty = self.read_u64(object + self.offsets.pyobject_ob_type, "ob_type")?;
        if let Some(info) = self.types.get(&ty) {
            return Ok(*info);
        }
        if !is_plausible_pointer(ty) {
            return torn_err(format!("type pointer {ty:#x}"));
        }
        let flags = self.read_u64(ty + self.offsets.type_tp_flags, "tp_flags")?;
        let name = self.read_u64(ty + self.offsets.type_tp_name, "tp_name")?;
        // `tp_name` is a C string; "code" plus its NUL is all that matters here.
        let mut head = [0u8; 5];
        let is_code =
            name != 0 && self.memory().read(name, &mut head).is_ok() && &head == b"code\0";
        let info = TypeInfo { flags, is_code };
        self.types.insert(ty, info);
        Ok(info)
    }

    fn code(&mut self, address: u64) -> Attempt<Option<Rc<CodeInfo>>> {
        if let Some(code) = self.codes.get(&address) {
            return Ok(code.clone());
        }
        let code = if self.type_info(address)?.is_code {
            Some(Rc::new(self.read_code(address)?))
        } else {
            None
        };
        self.codes.insert(address, code.clone());
        Ok(code)
    }

    fn read_code(&mut self, address: u64) -> Attempt<CodeInfo> {
        let o = self.offsets;
        let mut header = vec![0u8; o.code_header_len() as usize];
        self.read(address, &mut header, "a code object")?;
        let word = |at: u64| word_at(&header, at) & !STACKREF_TAG_BITS;
        let first_line = header
            .get(o.code_firstlineno as usize..o.code_firstlineno as usize + 4)
            .and_then(|raw| raw.try_into().ok())
            .map(i32::from_ne_bytes)
            .unwrap_or(0);
        let filename = self.string(word(o.code_filename), "co_filename")?;
        let function = match self.string(word(o.code_qualname), "co_qualname") {
            Ok(name) => name,
            Err(Failure::Torn(_)) => self.string(word(o.code_name), "co_name")?,
            Err(fatal) => return Err(fatal),
        };
        let linetable = self.bytes(word(o.code_linetable), MAX_LINETABLE)?;
        Ok(CodeInfo {
            filename,
            function,
            first_line: i64::from(first_line),
            linetable,
        })
    }

    fn string(&mut self, address: u64, what: &str) -> Attempt<String> {
        if self.type_info(address)?.flags & TPFLAGS_UNICODE_SUBCLASS == 0 {
            return torn_err(format!("{what} is not a str"));
        }
        let o = self.offsets;
        let mut header = [0u8; 256];
        // `PyASCIIObject` holds length and state; reading no further never runs past
        // the end of a short ASCII string.
        let len = o.unicode_asciiobject_size as usize;
        let header = header
            .get_mut(..len)
            .ok_or_else(|| Failure::Torn("str header implausibly large".into()))?;
        self.read(address, header, what)?;
        let state = header
            .get(o.unicode_state as usize..o.unicode_state as usize + 4)
            .and_then(|raw| raw.try_into().ok())
            .map(u32::from_ne_bytes)
            .unwrap_or(0);
        let length = word_at(header, o.unicode_length) as i64;
        let shape = unicode::shape(state)
            .map_err(|problem| Failure::Torn(format!("{what}: {problem:?}")))?;
        let (offset, bytes, truncated) =
            unicode::data_span(&shape, length, o.unicode_asciiobject_size)
                .map_err(|problem| Failure::Torn(format!("{what}: {problem:?}")))?;
        let mut data = vec![0u8; bytes as usize];
        self.read(address + offset, &mut data, what)?;
        Ok(unicode::decode(&shape, &data, truncated))
    }

    fn bytes(&mut self, address: u64, max: u64) -> Attempt<Vec<u8>> {
        if self.type_info(address)?.flags & TPFLAGS_BYTES_SUBCLASS == 0 {
            return torn_err("co_linetable is not bytes");
        }
        let size = self.read_u64(address + self.offsets.bytes_ob_size, "bytes size")?;
        if size > max {
            return torn_err(format!("bytes of implausible size {size}"));
        }
        let mut data = vec![0u8; size as usize];
        self.read(address + self.offsets.bytes_ob_sval, &mut data, "bytes")?;
        Ok(data)
    }

    fn read(&self, address: u64, buf: &mut [u8], what: &str) -> Attempt<()> {
        self.memory().read(address, buf).map_err(|e| match e {
            MemoryError::Fault { .. } => {
                Failure::Torn(format!("{what} at {address:#x} is not mapped"))
            }
            other => Failure::Fatal(memory_error(self.pid, other, &format!("reading {what}"))),
        })
    }

    fn read_u64(&self, address: u64, what: &str) -> Attempt<u64> {
        let mut raw = [0u8; 8];
        self.read(address, &mut raw, what)?;
        Ok(u64::from_ne_bytes(raw))
    }

    fn read_u8(&self, address: u64, what: &str) -> Attempt<u8> {
        let mut raw = [0u8; 1];
        self.read(address, &mut raw, what)?;
        Ok(raw[0])
    }

    fn tasks(&mut self, asyncio: &AsyncioOffsets) -> Attempt<Vec<AsyncTask>> {
        let states = self.thread_states()?;
        // (task address, native tid of the thread whose list holds it)
        let mut found: Vec<(u64, i32)> = Vec::new();
        for &(tstate, tid, _) in states.iter().rev() {
            for task in self.task_list(tstate + asyncio.tstate_tasks_head, asyncio)? {
                found.push((task, tid));
            }
        }
        // Tasks of threads that have exited move to the interpreter's own list.
        let interp_head = self.process.main_interpreter() + asyncio.interp_tasks_head;
        for task in self.task_list(interp_head, asyncio)? {
            found.push((task, 0));
        }
        let known: HashSet<u64> = found.iter().map(|&(task, _)| task).collect();
        let mut tasks = Vec::with_capacity(found.len());
        for (task, thread) in found {
            let name = self.task_name(task, asyncio)?;
            let coroutine_stack = self.coroutine_stack(task, asyncio)?;
            let awaited_by = self
                .awaited_by(task, asyncio)?
                .into_iter()
                .filter(|waiter| known.contains(waiter))
                .collect();
            tasks.push(AsyncTask {
                id: task,
                name,
                coroutine_stack,
                awaited_by,
                thread,
            });
        }
        Ok(tasks)
    }

    /// The tasks of one circular `llist` whose head node is at `head`.
    fn task_list(&self, head: u64, asyncio: &AsyncioOffsets) -> Attempt<Vec<u64>> {
        let mut tasks = Vec::new();
        let mut node = self.read_u64(head, "an asyncio task list head")?;
        if node == 0 {
            // Never initialised: the thread never ran asyncio.
            return Ok(tasks);
        }
        while node != head {
            if tasks.len() >= MAX_TASKS {
                return torn_err(format!("a task list longer than {MAX_TASKS}"));
            }
            if !is_plausible_pointer(node) {
                return torn_err(format!("task list node {node:#x}"));
            }
            let task = node
                .checked_sub(asyncio.task_node)
                .ok_or_else(|| Failure::Torn("task node below its offset".into()))?;
            tasks.push(task);
            node = self.read_u64(node, "a task list node")?;
        }
        Ok(tasks)
    }

    fn task_name(&mut self, task: u64, asyncio: &AsyncioOffsets) -> Attempt<String> {
        let name = self.read_u64(task + asyncio.task_name, "a task name")? & !STACKREF_TAG_BITS;
        let flags = self.type_info(name)?.flags;
        if flags & TPFLAGS_LONG_SUBCLASS != 0 {
            // Unnamed tasks keep their counter; `get_name()` formats it on demand.
            return Ok(format!("Task-{}", self.small_int(name)?));
        }
        if flags & TPFLAGS_UNICODE_SUBCLASS != 0 {
            return self.string(name, "a task name");
        }
        torn_err("a task name is neither int nor str")
    }

    /// A non-negative `int` of at most two 30-bit digits (task counters).
    fn small_int(&self, address: u64) -> Attempt<u64> {
        let tag = self.read_u64(address + self.offsets.long_lv_tag, "an int")?;
        let digits = tag >> 3;
        let negative = tag & 3 == 2;
        if negative || digits > 2 {
            return torn_err("a task counter out of range");
        }
        let mut raw = [0u8; 8];
        let buf = &mut raw[..digits as usize * 4];
        self.read(address + self.offsets.long_ob_digit, buf, "int digits")?;
        let low = u64::from(u32::from_ne_bytes(raw[0..4].try_into().unwrap_or([0; 4])));
        let high = u64::from(u32::from_ne_bytes(raw[4..8].try_into().unwrap_or([0; 4])));
        Ok(low | (high << 30))
    }

    /// The task's coroutine and the coroutines it awaits, innermost first.
    fn coroutine_stack(&mut self, task: u64, asyncio: &AsyncioOffsets) -> Attempt<Vec<Frame>> {
        let mut coro =
            self.read_u64(task + asyncio.task_coro, "a task's coroutine")? & !STACKREF_TAG_BITS;
        let mut frames = Vec::new();
        if coro == 0 {
            return Ok(frames);
        }
        let coro_type = self.read_u64(coro + self.offsets.pyobject_ob_type, "ob_type")?;
        for _ in 0..MAX_CORO_DEPTH {
            let frame_address = coro + self.offsets.gen_gi_iframe;
            let raw = self.read_frame(frame_address)?;
            if let Some(frame) = self.frame(&raw)? {
                frames.push(frame);
            }
            let state = self.read_u8(coro + self.offsets.gen_gi_frame_state, "gi_frame_state")?;
            if !self.offsets.is_yield_from(state as i8)
                || raw.owner != FRAME_OWNED_BY_GENERATOR
                || raw.stackpointer == 0
            {
                break;
            }
            let slot = raw
                .stackpointer
                .checked_sub(8 * self.offsets.facts.awaited_depth)
                .ok_or_else(|| Failure::Torn("stack pointer below its slot".into()))?;
            let awaited = self.read_u64(slot, "the awaited object")? & !STACKREF_TAG_BITS;
            if awaited == 0 || !is_plausible_pointer(awaited) {
                break;
            }
            // A coroutine awaiting another coroutine goes on; awaiting anything else (a
            // future, an iterator) ends the chain.
            let awaited_type = self.read_u64(awaited + self.offsets.pyobject_ob_type, "ob_type")?;
            if awaited_type != coro_type {
                break;
            }
            coro = awaited;
        }
        frames.reverse();
        Ok(frames)
    }

    /// Addresses of what awaits `task` (a single waiter, or the keys of a set).
    fn awaited_by(&mut self, task: u64, asyncio: &AsyncioOffsets) -> Attempt<Vec<u64>> {
        let waiters =
            self.read_u64(task + asyncio.task_awaited_by, "awaited_by")? & !STACKREF_TAG_BITS;
        if waiters == 0 {
            return Ok(Vec::new());
        }
        let is_set = self.read_u8(task + asyncio.task_awaited_by_is_set, "awaited_by_is_set")?;
        if is_set == 0 {
            return Ok(vec![waiters]);
        }
        if !is_plausible_pointer(waiters) {
            return torn_err(format!("awaited_by set pointer {waiters:#x}"));
        }
        let o = self.offsets;
        let mask = self.read_u64(waiters + o.set_mask, "a set's mask")?;
        let table = self.read_u64(waiters + o.set_table, "a set's table")?;
        let slots = mask.saturating_add(1);
        if slots > MAX_SET_SLOTS || !slots.is_power_of_two() || !is_plausible_pointer(table) {
            return torn_err(format!("a set of {slots} slots at {table:#x}"));
        }
        // Each slot is `{ PyObject *key; Py_hash_t hash; }`.
        let mut raw = vec![0u8; slots as usize * 16];
        self.read(table, &mut raw, "a set's table")?;
        // Empty slots hold NULL, deleted ones a dummy key that is no task: the caller
        // keeps only known tasks.
        Ok(raw
            .chunks_exact(16)
            .map(|slot| word_at(slot, 0))
            .filter(|&key| key != 0)
            .collect())
    }
}

fn word_at(bytes: &[u8], at: u64) -> u64 {
    let at = at as usize;
    bytes
        .get(at..at + 8)
        .and_then(|raw| raw.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}

/// `_Py_AsyncioModuleDebugOffsets` of `pid`: from the `.AsyncioDebug` section of its
/// `_asyncio` extension module, or of the interpreter when the module is built in.
fn asyncio_offsets(pid: i32, memory: &RemoteMemory) -> Result<AsyncioOffsets, StackError> {
    let maps = read_maps(pid).map_err(|e| fatal(pid, e))?;
    let regions = parse_maps(&maps);
    // `python_files` groups the mappings of every file whose name holds "python", which
    // includes `_asyncio.cpython-314-x86_64-linux-gnu.so`; the module is tried first.
    let mut files = python_files(&regions);
    files.sort_by_key(|file| {
        let basename = file.path.rsplit('/').next().unwrap_or(file.path);
        !basename.starts_with("_asyncio")
    });
    let mut module_loaded = false;
    let mut problems = Vec::new();
    for file in &files {
        let basename = file.path.rsplit('/').next().unwrap_or(file.path);
        module_loaded |= basename.starts_with("_asyncio");
        let Some(base) = file.offset_zero_region().map(|r| r.start) else {
            continue;
        };
        for source in elf_sources(pid, file) {
            let section = match read_section(&source, b".AsyncioDebug") {
                Ok(Some(section)) => section,
                Ok(None) => break,
                Err(why) => {
                    problems.push(format!("{source}: {why}"));
                    continue;
                }
            };
            let Ok(address) = runtime_address(base, &section) else {
                problems.push(format!("{source}: .AsyncioDebug address does not compute"));
                continue;
            };
            let mut raw = [0u8; ASYNCIO_OFFSETS_LEN];
            memory
                .read(address, &mut raw)
                .map_err(|e| fatal(pid, memory_error(pid, e, "reading _AsyncioDebug")))?;
            return AsyncioOffsets::parse(&raw).map_err(|e| {
                StackError(format!(
                    "the asyncio debug data (_AsyncioDebug) of process {pid} is unreadable: {e:?}"
                ))
            });
        }
    }
    let hint = if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    };
    Err(StackError(if module_loaded {
        format!("process {pid} has the _asyncio module loaded but no readable .AsyncioDebug section{hint}")
    } else {
        format!(
            "process {pid} has no asyncio tasks to read: its _asyncio module is not loaded (the \
             program has not imported asyncio){hint}"
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_and_non_python_pids_are_clear_errors() {
        let error = read_stacks(0).unwrap_err().to_string();
        assert!(error.contains("no such process"), "{error}");
        let error = read_stacks(std::process::id() as i32)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a CPython process"), "{error}");
        let error = read_tasks(-3).unwrap_err().to_string();
        assert!(error.contains("no such process"), "{error}");
    }
}
