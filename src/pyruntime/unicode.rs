//! The shape of a CPython `str` object (PEP 393), from the bytes of its header, and the
//! decoding of its characters.
//!
//! Code object names and file names are "compact" strings: the characters follow the
//! header. ASCII-only strings put them right after `PyASCIIObject` (`asciiobject_size` in
//! `_Py_DebugOffsets`); other compact strings after `PyCompactUnicodeObject`, which adds
//! `utf8_length` and `utf8` (two words). The `state` bit field holds `interned` (2 bits),
//! `kind` (3 bits: 1, 2 or 4 bytes per character), `compact` and `ascii` — the same bits
//! in 3.14 and 3.15.

/// The longest string this reader decodes, in characters; longer ones are cut and marked.
pub const MAX_CHARS: u64 = 4096;

/// What the `state` word says about a string's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnicodeShape {
    /// Bytes per character: 1, 2 or 4.
    pub kind: u8,
    pub compact: bool,
    pub ascii: bool,
}

/// Why a string's header cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnicodeProblem {
    /// Not a compact string (legacy strings are never code object names).
    NotCompact,
    BadKind(u8),
    /// `ascii` set for a kind other than 1.
    AsciiNotOneByte,
    NegativeLength(i64),
}

/// Decodes the `state` word.
pub fn shape(state: u32) -> Result<UnicodeShape, UnicodeProblem> {
    let kind = ((state >> 2) & 7) as u8;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !matches!(kind, 1 | 2 | 4) {
        return Err(UnicodeProblem::BadKind(kind));
    }
    if !compact {
        return Err(UnicodeProblem::NotCompact);
    }
    if ascii && kind != 1 {
        return Err(UnicodeProblem::AsciiNotOneByte);
    }
    Ok(UnicodeShape {
        kind,
        compact,
        ascii,
    })
}

/// Where the characters start, relative to the object, and how many bytes to read for at
/// most [`MAX_CHARS`] characters: `(offset, bytes, truncated)`.
pub fn data_span(
    shape: &UnicodeShape,
    length: i64,
    asciiobject_size: u64,
) -> Result<(u64, u64, bool), UnicodeProblem> {
    let length = u64::try_from(length).map_err(|_| UnicodeProblem::NegativeLength(length))?;
    // `PyCompactUnicodeObject` = `PyASCIIObject` + `Py_ssize_t utf8_length` + `char *utf8`.
    let offset = if shape.ascii {
        asciiobject_size
    } else {
        asciiobject_size + 16
    };
    let chars = length.min(MAX_CHARS);
    Ok((offset, chars * u64::from(shape.kind), length > MAX_CHARS))
}

/// The characters of `data` (as read at [`data_span`]); invalid code points (lone
/// surrogates, which a `str` may hold) become U+FFFD, as a traceback would escape them.
pub fn decode(shape: &UnicodeShape, data: &[u8], truncated: bool) -> String {
    let mut text: String = match shape.kind {
        1 => data.iter().map(|&b| char::from(b)).collect(),
        2 => data
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_ne_bytes([c[0], c[1]])))
            .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => data
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    };
    if truncated {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // States observed in live 3.14.10 and 3.15.2 processes (`ctypes` at offset 32).
    const ASCII_INTERNED: u32 = 0x66;
    const LATIN1: u32 = 0x24;
    const UCS2: u32 = 0x28;
    const UCS4: u32 = 0x30;

    #[test]
    fn observed_states_decode_to_their_kinds() {
        let ascii = shape(ASCII_INTERNED).unwrap();
        assert_eq!((ascii.kind, ascii.ascii), (1, true));
        assert_eq!(data_span(&ascii, 3, 40), Ok((40, 3, false)));
        let latin1 = shape(LATIN1).unwrap();
        assert_eq!((latin1.kind, latin1.ascii), (1, false));
        assert_eq!(data_span(&latin1, 5, 40), Ok((56, 5, false)));
        assert_eq!(shape(UCS2).unwrap().kind, 2);
        assert_eq!(shape(UCS4).unwrap().kind, 4);
    }

    #[test]
    fn characters_of_every_kind() {
        let latin1 = shape(LATIN1).unwrap();
        assert_eq!(decode(&latin1, &[b'h', 0xe9], false), "hé");
        let ucs2 = shape(UCS2).unwrap();
        let data: Vec<u8> = "日本".encode_utf16().flat_map(u16::to_ne_bytes).collect();
        assert_eq!(decode(&ucs2, &data, false), "日本");
        let ucs4 = shape(UCS4).unwrap();
        let data: Vec<u8> = "😀x"
            .chars()
            .flat_map(|c| (c as u32).to_ne_bytes())
            .collect();
        assert_eq!(decode(&ucs4, &data, true), "😀x…");
        // A lone surrogate is kept visible, not dropped.
        assert_eq!(decode(&ucs2, &0xD800u16.to_ne_bytes(), false), "\u{FFFD}");
    }

    #[test]
    fn bad_headers_are_refused_and_long_strings_cut() {
        assert_eq!(shape(0), Err(UnicodeProblem::BadKind(0)));
        assert_eq!(shape(0x04), Err(UnicodeProblem::NotCompact));
        assert_eq!(shape(0x68), Err(UnicodeProblem::AsciiNotOneByte));
        let ascii = shape(ASCII_INTERNED).unwrap();
        assert_eq!(
            data_span(&ascii, -1, 40),
            Err(UnicodeProblem::NegativeLength(-1))
        );
        assert_eq!(data_span(&ascii, 1 << 40, 40), Ok((40, MAX_CHARS, true)));
        let ucs4 = shape(UCS4).unwrap();
        assert_eq!(data_span(&ucs4, 5000, 40), Ok((56, MAX_CHARS * 4, true)));
    }
}
