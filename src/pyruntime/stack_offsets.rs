//! The parts of `_Py_DebugOffsets` a stack reader needs (frames, code objects, strings,
//! bytes, generators, sets, ints), and `_Py_AsyncioModuleDebugOffsets` for asyncio tasks.
//!
//! As for the injector's slots ([`super::offsets`]), the *positions* of the slots are
//! fixed per major.minor and listed here, and the *values* are read from the target and
//! validated before use. Positions follow `Include/internal/pycore_debug_offsets.h`
//! (3.14 branch, and 3.15 as frozen at 3.15.0rc1) and were checked against the recorded
//! tables in `tests/fixtures/debug_offsets` (see the tests below).
//!
//! Also here: the few facts that are not in any table but change between versions
//! (generator frame states, where a suspended coroutine keeps the object it awaits).

use super::offsets::{fits_unaligned as fits, Layout, OffsetsError};

/// Byte positions, inside `_Py_DebugOffsets`, of the slots the stack reader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSlots {
    pub tstate_current_frame: usize,
    pub frame_size: usize,
    pub frame_previous: usize,
    pub frame_executable: usize,
    pub frame_instr_ptr: usize,
    pub frame_owner: usize,
    pub frame_stackpointer: usize,
    pub code_size: usize,
    pub code_filename: usize,
    pub code_name: usize,
    pub code_qualname: usize,
    pub code_linetable: usize,
    pub code_firstlineno: usize,
    pub code_co_code_adaptive: usize,
    pub pyobject_ob_type: usize,
    pub type_size: usize,
    pub type_tp_name: usize,
    pub type_tp_flags: usize,
    pub set_size: usize,
    pub set_used: usize,
    pub set_table: usize,
    pub set_mask: usize,
    pub long_size: usize,
    pub long_lv_tag: usize,
    pub long_ob_digit: usize,
    pub bytes_size: usize,
    pub bytes_ob_size: usize,
    pub bytes_ob_sval: usize,
    pub unicode_size: usize,
    pub unicode_state: usize,
    pub unicode_length: usize,
    pub unicode_asciiobject_size: usize,
    pub gen_size: usize,
    pub gen_gi_iframe: usize,
    pub gen_gi_frame_state: usize,
}

/// Version facts that no table carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackFacts {
    /// `gi_frame_state` values of a coroutine suspended in `await` (`yield from`):
    /// `FRAME_SUSPENDED_YIELD_FROM` (-1 in 3.14; 3.15 renumbered the states and added
    /// `FRAME_SUSPENDED_YIELD_FROM_LOCKED`: 2 and 3).
    pub yield_from_states: &'static [i8],
    /// Which slot below the frame's stack pointer holds the awaited object: 1 in 3.14,
    /// 2 in 3.15 (its `SEND` keeps a NULL on top since 3.15.0a8).
    pub awaited_depth: u64,
}

/// Frames owned by the interpreter itself (entry frames, 3.15's `base_frame`) or by the
/// C stack (3.14's `FRAME_OWNED_BY_CSTACK`) run no Python code: `owner` >= this is skipped.
pub const FIRST_NON_PYTHON_OWNER: u8 = 3;

/// `Py_TAG_BITS`: a `_PyStackRef` (such as `f_executable`) keeps tags in its low bits.
pub const STACKREF_TAG_BITS: u64 = 3;

/// `Py_TPFLAGS_LONG_SUBCLASS`, `Py_TPFLAGS_BYTES_SUBCLASS`, `Py_TPFLAGS_UNICODE_SUBCLASS`.
pub const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
pub const TPFLAGS_BYTES_SUBCLASS: u64 = 1 << 27;
pub const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;

pub const STACK_SLOTS_3_14: StackSlots = StackSlots {
    tstate_current_frame: 208,
    frame_size: 248,
    frame_previous: 256,
    frame_executable: 264,
    frame_instr_ptr: 272,
    frame_owner: 288,
    frame_stackpointer: 296,
    code_size: 312,
    code_filename: 320,
    code_name: 328,
    code_qualname: 336,
    code_linetable: 344,
    code_firstlineno: 352,
    code_co_code_adaptive: 384,
    pyobject_ob_type: 408,
    type_size: 416,
    type_tp_name: 424,
    type_tp_flags: 440,
    set_size: 496,
    set_used: 504,
    set_table: 512,
    set_mask: 520,
    long_size: 568,
    long_lv_tag: 576,
    long_ob_digit: 584,
    bytes_size: 592,
    bytes_ob_size: 600,
    bytes_ob_sval: 608,
    unicode_size: 616,
    unicode_state: 624,
    unicode_length: 632,
    unicode_asciiobject_size: 640,
    gen_size: 664,
    gen_gi_iframe: 680,
    gen_gi_frame_state: 688,
};

/// 3.15 grew `thread_state` (base_frame, last_profiled_frame, ...) and `type_object` and
/// `gc`, which moves every later table.
pub const STACK_SLOTS_3_15: StackSlots = StackSlots {
    tstate_current_frame: 208,
    frame_size: 312,
    frame_previous: 320,
    frame_executable: 328,
    frame_instr_ptr: 336,
    frame_owner: 352,
    frame_stackpointer: 360,
    code_size: 376,
    code_filename: 384,
    code_name: 392,
    code_qualname: 400,
    code_linetable: 408,
    code_firstlineno: 416,
    code_co_code_adaptive: 448,
    pyobject_ob_type: 472,
    type_size: 480,
    type_tp_name: 488,
    type_tp_flags: 504,
    set_size: 592,
    set_used: 600,
    set_table: 608,
    set_mask: 616,
    long_size: 664,
    long_lv_tag: 672,
    long_ob_digit: 680,
    bytes_size: 688,
    bytes_ob_size: 696,
    bytes_ob_sval: 704,
    unicode_size: 712,
    unicode_state: 720,
    unicode_length: 728,
    unicode_asciiobject_size: 736,
    gen_size: 792,
    gen_gi_iframe: 808,
    gen_gi_frame_state: 816,
};

pub const FACTS_3_14: StackFacts = StackFacts {
    yield_from_states: &[-1],
    awaited_depth: 1,
};

pub const FACTS_3_15: StackFacts = StackFacts {
    yield_from_states: &[2, 3],
    awaited_depth: 2,
};

/// The stack slots and facts of a layout's version; `None` for a version without them.
pub fn stack_layout_for(layout: &Layout) -> Option<(&'static StackSlots, &'static StackFacts)> {
    match (layout.major, layout.minor) {
        (3, 14) => Some((&STACK_SLOTS_3_14, &FACTS_3_14)),
        (3, 15) => Some((&STACK_SLOTS_3_15, &FACTS_3_15)),
        _ => None,
    }
}

/// Validated values of the stack slots of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackOffsets {
    pub tstate_current_frame: u64,
    pub frame_size: u64,
    pub frame_previous: u64,
    pub frame_executable: u64,
    pub frame_instr_ptr: u64,
    pub frame_owner: u64,
    pub frame_stackpointer: u64,
    pub code_size: u64,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    pub code_co_code_adaptive: u64,
    pub pyobject_ob_type: u64,
    pub type_tp_name: u64,
    pub type_tp_flags: u64,
    pub set_used: u64,
    pub set_table: u64,
    pub set_mask: u64,
    pub long_lv_tag: u64,
    pub long_ob_digit: u64,
    pub bytes_ob_size: u64,
    pub bytes_ob_sval: u64,
    pub unicode_state: u64,
    pub unicode_length: u64,
    pub unicode_asciiobject_size: u64,
    pub gen_gi_iframe: u64,
    pub gen_gi_frame_state: u64,
    pub facts: StackFacts,
}

/// How many bytes of a code object hold every header field the reader uses.
const CODE_HEADER_FIELDS: usize = 5;

impl StackOffsets {
    /// Reads the slots from the `_Py_DebugOffsets` bytes and validates every field
    /// against its struct's size (`tstate_size` is `thread_state.size`).
    pub fn parse(
        slots: &StackSlots,
        facts: &StackFacts,
        bytes: &[u8],
        tstate_size: u64,
    ) -> Result<StackOffsets, OffsetsError> {
        let read = |position: usize| {
            bytes
                .get(position..position + 8)
                .and_then(|raw| raw.try_into().ok())
                .map(u64::from_ne_bytes)
                .ok_or(OffsetsError::TooShort {
                    need: position + 8,
                    got: bytes.len(),
                })
        };
        let s = slots;
        let offsets = StackOffsets {
            tstate_current_frame: read(s.tstate_current_frame)?,
            frame_size: read(s.frame_size)?,
            frame_previous: read(s.frame_previous)?,
            frame_executable: read(s.frame_executable)?,
            frame_instr_ptr: read(s.frame_instr_ptr)?,
            frame_owner: read(s.frame_owner)?,
            frame_stackpointer: read(s.frame_stackpointer)?,
            code_size: read(s.code_size)?,
            code_filename: read(s.code_filename)?,
            code_name: read(s.code_name)?,
            code_qualname: read(s.code_qualname)?,
            code_linetable: read(s.code_linetable)?,
            code_firstlineno: read(s.code_firstlineno)?,
            code_co_code_adaptive: read(s.code_co_code_adaptive)?,
            pyobject_ob_type: read(s.pyobject_ob_type)?,
            type_tp_name: read(s.type_tp_name)?,
            type_tp_flags: read(s.type_tp_flags)?,
            set_used: read(s.set_used)?,
            set_table: read(s.set_table)?,
            set_mask: read(s.set_mask)?,
            long_lv_tag: read(s.long_lv_tag)?,
            long_ob_digit: read(s.long_ob_digit)?,
            bytes_ob_size: read(s.bytes_ob_size)?,
            bytes_ob_sval: read(s.bytes_ob_sval)?,
            unicode_state: read(s.unicode_state)?,
            unicode_length: read(s.unicode_length)?,
            unicode_asciiobject_size: read(s.unicode_asciiobject_size)?,
            gen_gi_iframe: read(s.gen_gi_iframe)?,
            gen_gi_frame_state: read(s.gen_gi_frame_state)?,
            facts: *facts,
        };
        let sizes = Sizes {
            tstate: tstate_size,
            frame: read(s.frame_size)?,
            code: read(s.code_size)?,
            pyobject: read(s.pyobject_ob_type)? + 8,
            type_: read(s.type_size)?,
            set: read(s.set_size)?,
            long: read(s.long_size)?,
            bytes: read(s.bytes_size)?,
            unicode: read(s.unicode_size)?,
            gen: read(s.gen_size)?,
        };
        offsets.validate(&sizes)?;
        Ok(offsets)
    }

    fn validate(&self, sizes: &Sizes) -> Result<(), OffsetsError> {
        let checks: [(&'static str, u64, u64, (&str, u64)); 28] = [
            (
                "thread_state.current_frame",
                self.tstate_current_frame,
                8,
                ("thread_state.size", sizes.tstate),
            ),
            (
                "interpreter_frame.previous",
                self.frame_previous,
                8,
                ("interpreter_frame.size", sizes.frame),
            ),
            (
                "interpreter_frame.executable",
                self.frame_executable,
                8,
                ("interpreter_frame.size", sizes.frame),
            ),
            (
                "interpreter_frame.instr_ptr",
                self.frame_instr_ptr,
                8,
                ("interpreter_frame.size", sizes.frame),
            ),
            (
                "interpreter_frame.owner",
                self.frame_owner,
                1,
                ("interpreter_frame.size", sizes.frame),
            ),
            (
                "interpreter_frame.stackpointer",
                self.frame_stackpointer,
                8,
                ("interpreter_frame.size", sizes.frame),
            ),
            (
                "code_object.filename",
                self.code_filename,
                8,
                ("code_object.size", sizes.code),
            ),
            (
                "code_object.name",
                self.code_name,
                8,
                ("code_object.size", sizes.code),
            ),
            (
                "code_object.qualname",
                self.code_qualname,
                8,
                ("code_object.size", sizes.code),
            ),
            (
                "code_object.linetable",
                self.code_linetable,
                8,
                ("code_object.size", sizes.code),
            ),
            (
                "code_object.firstlineno",
                self.code_firstlineno,
                4,
                ("code_object.size", sizes.code),
            ),
            (
                "code_object.co_code_adaptive",
                self.code_co_code_adaptive,
                2,
                ("code_object.size", sizes.code),
            ),
            (
                "pyobject.ob_type",
                self.pyobject_ob_type,
                8,
                ("pyobject.size", sizes.pyobject),
            ),
            (
                "type_object.tp_name",
                self.type_tp_name,
                8,
                ("type_object.size", sizes.type_),
            ),
            (
                "type_object.tp_flags",
                self.type_tp_flags,
                8,
                ("type_object.size", sizes.type_),
            ),
            (
                "set_object.used",
                self.set_used,
                8,
                ("set_object.size", sizes.set),
            ),
            (
                "set_object.table",
                self.set_table,
                8,
                ("set_object.size", sizes.set),
            ),
            (
                "set_object.mask",
                self.set_mask,
                8,
                ("set_object.size", sizes.set),
            ),
            (
                "long_object.lv_tag",
                self.long_lv_tag,
                8,
                ("long_object.size", sizes.long),
            ),
            (
                "long_object.ob_digit",
                self.long_ob_digit,
                4,
                ("long_object.size", sizes.long),
            ),
            (
                "bytes_object.ob_size",
                self.bytes_ob_size,
                8,
                ("bytes_object.size", sizes.bytes),
            ),
            (
                "bytes_object.ob_sval",
                self.bytes_ob_sval,
                1,
                ("bytes_object.size", sizes.bytes),
            ),
            (
                "unicode_object.state",
                self.unicode_state,
                4,
                ("unicode_object.size", sizes.unicode),
            ),
            (
                "unicode_object.length",
                self.unicode_length,
                8,
                ("unicode_object.size", sizes.unicode),
            ),
            // The compact header (`asciiobject_size` + two words) fits in a PyUnicodeObject.
            (
                "unicode_object.asciiobject_size",
                self.unicode_asciiobject_size,
                8,
                ("unicode_object.size", sizes.unicode),
            ),
            (
                "gen_object.gi_frame_state",
                self.gen_gi_frame_state,
                1,
                ("gen_object.size", sizes.gen),
            ),
            // The whole embedded frame lies inside the generator.
            (
                "gen_object.gi_iframe",
                self.gen_gi_iframe,
                sizes.frame,
                ("gen_object.size", sizes.gen),
            ),
            (
                "gen_object.gi_iframe",
                self.gen_gi_iframe,
                8,
                ("gen_object.size", sizes.gen),
            ),
        ];
        for (field, offset, width, size) in checks {
            fits(field, offset, width, size)?;
        }
        if sizes.frame == 0 || sizes.frame > MAX_STRUCT {
            return Err(OffsetsError::Invalid {
                field: "interpreter_frame.size",
                reason: format!("{} is outside 1..={MAX_STRUCT}", sizes.frame),
            });
        }
        if self.code_header_len() > MAX_STRUCT {
            return Err(OffsetsError::Invalid {
                field: "code_object.size",
                reason: "header fields lie implausibly far into the object".into(),
            });
        }
        Ok(())
    }

    /// How many bytes from a code object's start hold filename, qualname, name,
    /// linetable and firstlineno (read in one go).
    pub fn code_header_len(&self) -> u64 {
        let ends: [u64; CODE_HEADER_FIELDS] = [
            self.code_filename + 8,
            self.code_qualname + 8,
            self.code_name + 8,
            self.code_linetable + 8,
            self.code_firstlineno + 4,
        ];
        ends.into_iter().max().unwrap_or(0)
    }

    /// How many bytes of a frame hold every field read (previous, executable,
    /// instr_ptr, owner, stackpointer).
    pub fn frame_read_len(&self) -> u64 {
        [
            self.frame_previous + 8,
            self.frame_executable + 8,
            self.frame_instr_ptr + 8,
            self.frame_owner + 1,
            self.frame_stackpointer + 8,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// Whether a generator frame state means "suspended in `await`".
    pub fn is_yield_from(&self, state: i8) -> bool {
        self.facts.yield_from_states.contains(&state)
    }
}

/// No struct this reader looks into is larger than this: a bound for reads.
const MAX_STRUCT: u64 = 64 * 1024;

struct Sizes {
    tstate: u64,
    frame: u64,
    code: u64,
    pyobject: u64,
    type_: u64,
    set: u64,
    long: u64,
    bytes: u64,
    unicode: u64,
    gen: u64,
}

/// `struct _Py_AsyncioModuleDebugOffsets` (the `AsyncioDebug` section of `_asyncio`):
/// thirteen `uint64_t`, the same in 3.14 and 3.15.
pub const ASYNCIO_OFFSETS_LEN: usize = 13 * 8;

/// Validated asyncio offsets of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncioOffsets {
    pub task_name: u64,
    pub task_awaited_by: u64,
    pub task_is_task: u64,
    pub task_awaited_by_is_set: u64,
    pub task_coro: u64,
    pub task_node: u64,
    pub interp_tasks_head: u64,
    pub tstate_running_loop: u64,
    pub tstate_running_task: u64,
    pub tstate_tasks_head: u64,
}

impl AsyncioOffsets {
    pub fn parse(bytes: &[u8]) -> Result<AsyncioOffsets, OffsetsError> {
        if bytes.len() < ASYNCIO_OFFSETS_LEN {
            return Err(OffsetsError::TooShort {
                need: ASYNCIO_OFFSETS_LEN,
                got: bytes.len(),
            });
        }
        let word = |i: usize| {
            let raw: [u8; 8] = bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]);
            u64::from_ne_bytes(raw)
        };
        let task_size = word(0);
        let interp_size = word(7);
        let tstate_size = word(9);
        let offsets = AsyncioOffsets {
            task_name: word(1),
            task_awaited_by: word(2),
            task_is_task: word(3),
            task_awaited_by_is_set: word(4),
            task_coro: word(5),
            task_node: word(6),
            interp_tasks_head: word(8),
            tstate_running_loop: word(10),
            tstate_running_task: word(11),
            tstate_tasks_head: word(12),
        };
        let task = ("asyncio_task_object.size", task_size);
        let tstate = ("asyncio_thread_state.size", tstate_size);
        let checks: [(&'static str, u64, u64, (&str, u64)); 10] = [
            ("asyncio_task_object.task_name", offsets.task_name, 8, task),
            (
                "asyncio_task_object.task_awaited_by",
                offsets.task_awaited_by,
                8,
                task,
            ),
            (
                "asyncio_task_object.task_is_task",
                offsets.task_is_task,
                1,
                task,
            ),
            (
                "asyncio_task_object.task_awaited_by_is_set",
                offsets.task_awaited_by_is_set,
                1,
                task,
            ),
            ("asyncio_task_object.task_coro", offsets.task_coro, 8, task),
            ("asyncio_task_object.task_node", offsets.task_node, 16, task),
            (
                "asyncio_interpreter_state.asyncio_tasks_head",
                offsets.interp_tasks_head,
                16,
                ("asyncio_interpreter_state.size", interp_size),
            ),
            (
                "asyncio_thread_state.asyncio_running_loop",
                offsets.tstate_running_loop,
                8,
                tstate,
            ),
            (
                "asyncio_thread_state.asyncio_running_task",
                offsets.tstate_running_task,
                8,
                tstate,
            ),
            (
                "asyncio_thread_state.asyncio_tasks_head",
                offsets.tstate_tasks_head,
                16,
                tstate,
            ),
        ];
        for (field, offset, width, size) in checks {
            fits(field, offset, width, size)?;
        }
        if task_size > MAX_STRUCT || tstate_size > MAX_STRUCT * 4 || interp_size > MAX_STRUCT * 16 {
            return Err(OffsetsError::Invalid {
                field: "asyncio sizes",
                reason: format!("implausible sizes {task_size}, {tstate_size}, {interp_size}"),
            });
        }
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pyruntime::offsets::{layout_for, parse_header, DebugOffsets, LAYOUTS};

    const RECORDED: [&[u8]; 4] = [
        include_bytes!("../../tests/fixtures/debug_offsets/3.14.10-x86_64.bin"),
        include_bytes!("../../tests/fixtures/debug_offsets/3.14.10-dbg-x86_64.bin"),
        include_bytes!("../../tests/fixtures/debug_offsets/3.15.2-x86_64.bin"),
        include_bytes!("../../tests/fixtures/debug_offsets/3.15.2-dbg-x86_64.bin"),
    ];

    fn parse(bytes: &[u8]) -> StackOffsets {
        let layout = layout_for(&parse_header(bytes).unwrap()).unwrap();
        let base = DebugOffsets::parse(layout, bytes).unwrap();
        let (slots, facts) = stack_layout_for(layout).unwrap();
        StackOffsets::parse(slots, facts, bytes, base.tstate_size).unwrap()
    }

    #[test]
    fn every_layout_has_stack_slots() {
        for layout in LAYOUTS {
            let (slots, _) = stack_layout_for(layout).expect("stack slots");
            assert!(slots.gen_gi_frame_state + 8 <= layout.slots.eval_breaker);
        }
    }

    #[test]
    fn recorded_tables_give_the_facts_every_build_shares() {
        for bytes in RECORDED {
            let o = parse(bytes);
            // `f_executable` is the first field of a frame; `previous` the second.
            assert_eq!((o.frame_executable, o.frame_previous), (0, 8));
            // A code object's first instruction sits at its very end.
            assert!(o.code_co_code_adaptive >= o.code_header_len());
            // The generator's frame is its last member.
            assert_eq!(o.gen_gi_iframe, o.gen_gi_frame_state + 5);
            // A PyBytesObject keeps ob_shash between ob_size and the bytes.
            assert_eq!(o.bytes_ob_sval, o.bytes_ob_size + 16);
            assert!(o.unicode_length < o.unicode_state);
        }
    }

    #[test]
    fn recorded_release_tables_have_the_x86_64_values() {
        for bytes in [RECORDED[0], RECORDED[2]] {
            let o = parse(bytes);
            assert_eq!(o.tstate_current_frame, 72);
            assert_eq!(o.frame_instr_ptr, 56);
            assert_eq!(o.frame_owner, 74);
            assert_eq!(o.code_co_code_adaptive, 208);
            assert_eq!(o.code_qualname, 128);
            assert_eq!(o.pyobject_ob_type, 8);
            assert_eq!(o.type_tp_flags, 168);
            assert_eq!(o.unicode_asciiobject_size, 40);
            assert_eq!(o.gen_gi_iframe, 72);
        }
    }

    #[test]
    fn a_field_outside_its_struct_is_refused() {
        let mut bytes = RECORDED[0].to_vec();
        let position = STACK_SLOTS_3_14.frame_owner;
        bytes[position..position + 8].copy_from_slice(&4096u64.to_ne_bytes());
        let layout = layout_for(&parse_header(&bytes).unwrap()).unwrap();
        match StackOffsets::parse(&STACK_SLOTS_3_14, &FACTS_3_14, &bytes, 832) {
            Err(OffsetsError::Invalid { field, .. }) => {
                assert_eq!(field, "interpreter_frame.owner")
            }
            other => panic!("{other:?} ({layout:?})"),
        }
    }

    #[test]
    fn asyncio_offsets_are_validated() {
        // 3.14.10's `_asyncio` module (`readelf -x .AsyncioDebug`, Debian's x86_64 build).
        let values: [u64; 13] = [
            168, 136, 96, 108, 109, 128, 152, 0x37248, 0x2a80, 936, 864, 872, 880,
        ];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let o = AsyncioOffsets::parse(&bytes).unwrap();
        assert_eq!(o.task_node, 152);
        let mut bad = values;
        bad[6] = 160; // the node's two words do not fit in the task
        let bytes: Vec<u8> = bad.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(matches!(
            AsyncioOffsets::parse(&bytes),
            Err(OffsetsError::Invalid {
                field: "asyncio_task_object.task_node",
                ..
            })
        ));
        assert!(matches!(
            AsyncioOffsets::parse(&bytes[..50]),
            Err(OffsetsError::TooShort { .. })
        ));
    }
}
