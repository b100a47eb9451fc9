//! CPython's location table (`co_linetable`, PEP 626 and PEP 657; the format is described
//! in CPython's `InternalDocs/code_objects.md`, formerly `Objects/locations.md`): which
//! source line each instruction of a code object comes from.
//!
//! The table is a sequence of entries, each covering 1 to 8 code units (2-byte
//! instructions and inline caches). An entry starts with a byte whose high bit is set:
//! bits 3..=6 are the entry's kind, bits 0..=2 its length minus one. What follows depends
//! on the kind:
//!
//! | kind   | meaning                     | line                                   |
//! |--------|-----------------------------|----------------------------------------|
//! | 0..=9  | short form, 1 column byte   | same as the previous entry             |
//! | 10..=12| one-line form, 2 col bytes  | previous + (kind - 10)                 |
//! | 13     | no columns                  | previous + signed varint               |
//! | 14     | long form                   | previous + signed varint, then 3 varints (end line delta, column+1, end column+1) |
//! | 15     | no location                 | none (the running line is unchanged)   |
//!
//! Varints are little-endian 6-bit groups with bit 6 as "more follows"; a signed varint
//! keeps its sign in the lowest bit. The running line starts at `co_firstlineno`.
//!
//! The bytes come from another process, so the decoder never trusts them: a truncated or
//! malformed table ends the decoding (the remaining code units have no line), and no
//! input makes it panic or loop.

/// One run of code units that share a line: `[start, end)` in code units (not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub start: u64,
    pub end: u64,
    /// `None` for entries of kind 15 (no location), as `co_lines()` yields `None`.
    pub line: Option<i64>,
}

const KIND_NO_COLUMNS: u8 = 13;
const KIND_LONG: u8 = 14;
const KIND_NONE: u8 = 15;
const KIND_ONE_LINE_FIRST: u8 = 10;
const KIND_ONE_LINE_LAST: u8 = 12;

/// A varint longer than this is malformed (a 32-bit value needs at most 6 groups).
const MAX_VARINT_GROUPS: u32 = 6;

/// Every entry of `table` in order, with its line; stops at the first malformed entry.
pub fn line_ranges(table: &[u8], first_line: i64) -> LineRanges<'_> {
    LineRanges {
        table,
        at: 0,
        unit: 0,
        line: first_line,
    }
}

/// The line of the instruction at code unit `unit` (`(instr_ptr - co_code_adaptive) / 2`),
/// or `None` when the table gives it none (or does not reach it).
pub fn line_at(table: &[u8], first_line: i64, unit: u64) -> Option<i64> {
    line_ranges(table, first_line)
        .find(|range| range.start <= unit && unit < range.end)
        .and_then(|range| range.line)
}

/// Iterator over the entries of a location table.
pub struct LineRanges<'a> {
    table: &'a [u8],
    at: usize,
    unit: u64,
    line: i64,
}

impl LineRanges<'_> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.table.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut byte = self.byte()?;
        let mut value = u64::from(byte & 63);
        let mut shift = 0;
        let mut groups = 1;
        while byte & 64 != 0 {
            groups += 1;
            if groups > MAX_VARINT_GROUPS {
                return None;
            }
            byte = self.byte()?;
            shift += 6;
            value |= u64::from(byte & 63) << shift;
        }
        Some(value)
    }

    fn signed_varint(&mut self) -> Option<i64> {
        let raw = self.varint()?;
        let magnitude = (raw >> 1) as i64;
        Some(if raw & 1 != 0 { -magnitude } else { magnitude })
    }

    fn entry(&mut self) -> Option<LineRange> {
        let first = self.byte()?;
        // Every entry starts with the high bit set; anything else is not a table.
        if first & 0x80 == 0 {
            return None;
        }
        let kind = (first >> 3) & 15;
        let length = u64::from(first & 7) + 1;
        let line = match kind {
            KIND_NONE => None,
            KIND_LONG => {
                self.line = self.line.checked_add(self.signed_varint()?)?;
                // End line delta, column + 1, end column + 1: not needed for the line.
                for _ in 0..3 {
                    self.varint()?;
                }
                Some(self.line)
            }
            KIND_NO_COLUMNS => {
                self.line = self.line.checked_add(self.signed_varint()?)?;
                Some(self.line)
            }
            KIND_ONE_LINE_FIRST..=KIND_ONE_LINE_LAST => {
                self.line = self
                    .line
                    .checked_add(i64::from(kind - KIND_ONE_LINE_FIRST))?;
                self.byte()?;
                self.byte()?;
                Some(self.line)
            }
            _ => {
                self.byte()?;
                Some(self.line)
            }
        };
        let start = self.unit;
        self.unit = self.unit.checked_add(length)?;
        Some(LineRange {
            start,
            end: self.unit,
            line,
        })
    }
}

impl Iterator for LineRanges<'_> {
    type Item = LineRange;

    fn next(&mut self) -> Option<LineRange> {
        let entry = self.entry();
        if entry.is_none() {
            // Malformed or finished: stay finished.
            self.at = self.table.len();
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_moves_the_line_as_documented() {
        let table = [
            0x80 | (13 << 3) | 1, // no columns, 2 units, line +2
            4,
            0x80 | (11 << 3), // one-line form, 1 unit, line +1
            5,
            9,
            0x80 | (3 << 3) | 2, // short form, 3 units, same line
            0x12,
            0x80 | (15 << 3), // no location, 1 unit
            0x80 | (14 << 3), // long form, 1 unit, line -3
            7,
            0,
            1,
            1,
        ];
        let ranges: Vec<_> = line_ranges(&table, 10).collect();
        let expected = [
            (0, 2, Some(12)),
            (2, 3, Some(13)),
            (3, 6, Some(13)),
            (6, 7, None),
            (7, 8, Some(10)),
        ];
        assert_eq!(ranges.len(), expected.len());
        for (range, (start, end, line)) in ranges.iter().zip(expected) {
            assert_eq!((range.start, range.end, range.line), (start, end, line));
        }
        assert_eq!(line_at(&table, 10, 4), Some(13));
        assert_eq!(line_at(&table, 10, 6), None);
        assert_eq!(line_at(&table, 10, 8), None, "past the table");
    }

    #[test]
    fn multi_group_varints() {
        // No-columns entry with delta +200: 400 = 0b110010000 -> groups 16 (|64), 6.
        let table = [0x80 | (13 << 3), 16 | 64, 6];
        assert_eq!(line_at(&table, 1, 0), Some(201));
    }

    #[test]
    fn malformed_tables_end_the_decoding_without_panicking() {
        assert_eq!(line_ranges(&[], 1).count(), 0);
        // A byte without the entry bit.
        assert_eq!(line_ranges(&[0x05, 0x80 | (13 << 3), 2], 1).count(), 0);
        // Truncated in the middle of an entry: the complete entries before it stand.
        let truncated = [0x80 | (13 << 3), 2, 0x80 | (14 << 3), 2];
        assert_eq!(line_ranges(&truncated, 1).count(), 1);
        // An endless varint.
        let endless = [
            0x80 | (13 << 3),
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
        ];
        assert_eq!(line_ranges(&endless, 1).count(), 0);
        // Every byte sequence of length 3 decodes without panicking.
        for a in 0..=255u8 {
            for b in [0u8, 64, 127, 128, 255] {
                for c in [0u8, 1, 64, 200] {
                    let _ = line_ranges(&[a, b, c], i64::MAX - 1).count();
                }
            }
        }
    }
}
