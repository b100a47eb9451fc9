//! Where the `.PyRuntime` section of a mapped ELF file sits in the target's memory.
//!
//! The loader maps the file so that its first `PT_LOAD` segment (rounded down to that
//! segment's alignment) lands at the start of the file's offset-0 mapping. A section's
//! run-time address is therefore `load_base + sh_addr - aligned_first_load_vaddr`. This
//! one formula covers PIE executables (first `p_vaddr` 0), non-PIE executables (the load
//! base equals the link-time address, so the two cancel), and `libpython*.so`.

/// The facts read from the ELF headers that the arithmetic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSection {
    /// `sh_addr` of `.PyRuntime`.
    pub section_addr: u64,
    /// `sh_size` of `.PyRuntime`.
    pub section_size: u64,
    /// `p_vaddr` of the first `PT_LOAD` program header.
    pub first_load_vaddr: u64,
    /// `p_align` of that header (0 and 1 mean "no alignment").
    pub first_load_align: u64,
}

/// Why the arithmetic refused the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionAddressError {
    /// `p_align` is not a power of two, which the ELF specification requires.
    BadAlignment(u64),
    /// The section lies before the first loadable segment.
    SectionBeforeFirstLoad,
    /// The sum does not fit in an address.
    Overflow,
}

/// The run-time address of `.PyRuntime` given the start of the file's offset-0 mapping.
pub fn runtime_address(
    load_base: u64,
    section: &RuntimeSection,
) -> Result<u64, SectionAddressError> {
    let align = section.first_load_align.max(1);
    if !align.is_power_of_two() {
        return Err(SectionAddressError::BadAlignment(align));
    }
    let aligned_vaddr = section.first_load_vaddr & !(align - 1);
    let delta = section
        .section_addr
        .checked_sub(aligned_vaddr)
        .ok_or(SectionAddressError::SectionBeforeFirstLoad)?;
    load_base
        .checked_add(delta)
        .ok_or(SectionAddressError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pie_executable_adds_the_section_address_to_the_load_base() {
        let section = RuntimeSection {
            section_addr: 0x7a17c0,
            section_size: 316616,
            first_load_vaddr: 0,
            first_load_align: 0x1000,
        };
        assert_eq!(
            runtime_address(0x55d0c0a00000, &section),
            Ok(0x55d0c11a17c0)
        );
    }

    #[test]
    fn non_pie_executable_lands_at_its_link_time_address() {
        // The provisioned interpreter: ET_EXEC whose first PT_LOAD (added by patchelf) is
        // at 0x3ff000, mapped at 0x3ff000.
        let section = RuntimeSection {
            section_addr: 0xba07c0,
            section_size: 316616,
            first_load_vaddr: 0x3ff000,
            first_load_align: 0x1000,
        };
        assert_eq!(runtime_address(0x3ff000, &section), Ok(0xba07c0));
    }

    #[test]
    fn first_load_vaddr_is_rounded_down_to_its_alignment() {
        let section = RuntimeSection {
            section_addr: 0x401000,
            section_size: 8,
            first_load_vaddr: 0x400040,
            first_load_align: 0x1000,
        };
        assert_eq!(runtime_address(0x400000, &section), Ok(0x401000));
    }

    #[test]
    fn shared_library_uses_its_own_base() {
        let section = RuntimeSection {
            section_addr: 0x5a0000,
            section_size: 300000,
            first_load_vaddr: 0,
            first_load_align: 0x1000,
        };
        assert_eq!(
            runtime_address(0x7f1200000000, &section),
            Ok(0x7f12005a0000)
        );
    }

    #[test]
    fn zero_alignment_means_none() {
        let section = RuntimeSection {
            section_addr: 0x2010,
            section_size: 8,
            first_load_vaddr: 0x10,
            first_load_align: 0,
        };
        assert_eq!(runtime_address(0x1000, &section), Ok(0x3000));
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let mut section = RuntimeSection {
            section_addr: 0x10,
            section_size: 8,
            first_load_vaddr: 0x400000,
            first_load_align: 0x1000,
        };
        assert_eq!(
            runtime_address(0x400000, &section),
            Err(SectionAddressError::SectionBeforeFirstLoad)
        );
        section.first_load_align = 0x1001;
        assert_eq!(
            runtime_address(0x400000, &section),
            Err(SectionAddressError::BadAlignment(0x1001))
        );
        section.first_load_align = 0x1000;
        section.section_addr = u64::MAX;
        section.first_load_vaddr = 0;
        assert_eq!(
            runtime_address(2, &section),
            Err(SectionAddressError::Overflow)
        );
    }
}
