//! `PY_VERSION_HEX` decoding and CPython's rules for which targets a layout may serve.

use std::fmt;

/// `PY_RELEASE_LEVEL_FINAL`: the low nibble pair of a release's `PY_VERSION_HEX` is `0xF0`.
const RELEASE_LEVEL_FINAL: u8 = 0xF;

/// A decoded `PY_VERSION_HEX`: `major << 24 | minor << 16 | micro << 8 | level << 4 | serial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyVersion {
    pub major: u8,
    pub minor: u8,
    pub micro: u8,
    /// 0xA alpha, 0xB beta, 0xC release candidate, 0xF final.
    pub level: u8,
    pub serial: u8,
    /// The raw value, kept so exact-match rules compare what the target wrote.
    pub hex: u64,
}

impl PyVersion {
    pub fn from_hex(hex: u64) -> PyVersion {
        PyVersion {
            major: ((hex >> 24) & 0xFF) as u8,
            minor: ((hex >> 16) & 0xFF) as u8,
            micro: ((hex >> 8) & 0xFF) as u8,
            level: ((hex >> 4) & 0xF) as u8,
            serial: (hex & 0xF) as u8,
            hex,
        }
    }

    pub fn is_final(&self) -> bool {
        self.level == RELEASE_LEVEL_FINAL
    }
}

impl fmt::Display for PyVersion {
    /// The spelling of `sys.version`: `3.14.10`, `3.14.0rc2`, `3.15.0a1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        let suffix = match self.level {
            0xA => "a",
            0xB => "b",
            0xC => "rc",
            RELEASE_LEVEL_FINAL => return Ok(()),
            _ => "?",
        };
        write!(f, "{suffix}{}", self.serial)
    }
}

/// Why a target's version cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionProblem {
    /// No layout for this major.minor.
    UnknownMinor { found: PyVersion },
    /// A pre-release of a known minor from before its layout was frozen: layouts still move
    /// during alphas and betas (3.15 gained a thread-state field in 3.15.0b4).
    UnverifiedPrerelease { found: PyVersion },
}

/// CPython's rule, applied to a table entry instead of the caller's own build: same
/// major.minor; any patch level of a final release; a pre-release only from `frozen_since`
/// on (the `PY_VERSION_HEX` of the pre-release from which `_Py_DebugOffsets` no longer
/// changed; `None`: final releases only).
pub fn is_served_by(
    found: &PyVersion,
    major: u8,
    minor: u8,
    frozen_since: Option<u64>,
) -> Result<(), VersionProblem> {
    if found.major != major || found.minor != minor {
        return Err(VersionProblem::UnknownMinor { found: *found });
    }
    let frozen = |since: u64| found.hex >= since;
    if !found.is_final() && !frozen_since.is_some_and(frozen) {
        return Err(VersionProblem::UnverifiedPrerelease { found: *found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_prints_versions() {
        let v = PyVersion::from_hex(0x030E0AF0);
        assert_eq!(
            (v.major, v.minor, v.micro, v.level, v.serial),
            (3, 14, 10, 0xF, 0)
        );
        assert!(v.is_final());
        assert_eq!(v.to_string(), "3.14.10");
        assert_eq!(PyVersion::from_hex(0x030E00C2).to_string(), "3.14.0rc2");
        assert_eq!(PyVersion::from_hex(0x030F00A1).to_string(), "3.15.0a1");
        assert_eq!(PyVersion::from_hex(0x030E00B3).to_string(), "3.14.0b3");
    }

    #[test]
    fn any_patch_level_of_the_same_minor_is_served() {
        for hex in [0x030E00F0, 0x030E0AF0, 0x030E63F0] {
            assert_eq!(is_served_by(&PyVersion::from_hex(hex), 3, 14, None), Ok(()));
        }
    }

    #[test]
    fn other_minors_are_refused() {
        for hex in [0x030D05F0, 0x030F00F0, 0x020E00F0] {
            let v = PyVersion::from_hex(hex);
            assert_eq!(
                is_served_by(&v, 3, 14, None),
                Err(VersionProblem::UnknownMinor { found: v })
            );
        }
    }

    #[test]
    fn prereleases_only_once_the_layout_is_frozen() {
        let rc2 = PyVersion::from_hex(0x030E00C2);
        assert_eq!(
            is_served_by(&rc2, 3, 14, None),
            Err(VersionProblem::UnverifiedPrerelease { found: rc2 })
        );
        // Frozen at rc2: rc2, rc3 and finals are served; rc1 and every beta are not.
        assert_eq!(is_served_by(&rc2, 3, 14, Some(0x030E00C2)), Ok(()));
        let rc3 = PyVersion::from_hex(0x030E00C3);
        assert_eq!(is_served_by(&rc3, 3, 14, Some(0x030E00C2)), Ok(()));
        for early in [0x030E00C1, 0x030E00B4, 0x030E00A1] {
            let v = PyVersion::from_hex(early);
            assert_eq!(
                is_served_by(&v, 3, 14, Some(0x030E00C2)),
                Err(VersionProblem::UnverifiedPrerelease { found: v })
            );
        }
    }
}
