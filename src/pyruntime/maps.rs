//! `/proc/PID/maps` lines, and which mapped files may hold a CPython runtime.
//!
//! Line format (proc(5)): `start-end perms offset dev inode    path`. The path is padded
//! with spaces and may itself contain spaces; the kernel appends ` (deleted)` when the file
//! was unlinked after it was mapped.

/// Access bits of one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// `s` (shared) rather than `p` (private, copy-on-write).
    pub shared: bool,
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRegion {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    /// Offset of `start` inside the mapped file.
    pub offset: u64,
    pub inode: u64,
    /// The file path with any ` (deleted)` suffix removed; `None` for anonymous memory
    /// and pseudo entries such as `[heap]`.
    pub path: Option<String>,
    /// The kernel marked the file ` (deleted)`.
    pub deleted: bool,
}

impl MapRegion {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of this region in `/proc/PID/map_files/`, which opens the mapped file
    /// itself even when it was deleted or lives in another mount namespace.
    pub fn map_files_name(&self) -> String {
        format!("{:x}-{:x}", self.start, self.end)
    }
}

const DELETED_SUFFIX: &str = " (deleted)";

/// Parses one maps line; `None` for a line that does not have the documented shape (the
/// kernel never writes one, but a truncated read could).
pub fn parse_maps_line(line: &str) -> Option<MapRegion> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let rest = fields.next().unwrap_or("").trim_start();

    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start {
        return None;
    }
    let perms = parse_perms(perms)?;
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let inode = inode.parse::<u64>().ok()?;

    // Only absolute paths are files; `[heap]`, `[vdso]` and friends are not.
    let (path, deleted) = if rest.starts_with('/') {
        match rest.strip_suffix(DELETED_SUFFIX) {
            Some(stripped) => (Some(stripped.to_owned()), true),
            None => (Some(rest.to_owned()), false),
        }
    } else {
        (None, false)
    };
    Some(MapRegion {
        start,
        end,
        perms,
        offset,
        inode,
        path,
        deleted,
    })
}

fn parse_perms(text: &str) -> Option<Perms> {
    let bytes = text.as_bytes();
    if bytes.len() != 4 {
        return None;
    }
    Some(Perms {
        read: bytes[0] == b'r',
        write: bytes[1] == b'w',
        exec: bytes[2] == b'x',
        shared: bytes[3] == b's',
    })
}

/// Parses a whole maps file, skipping lines that do not parse.
pub fn parse_maps(text: &str) -> Vec<MapRegion> {
    text.lines().filter_map(parse_maps_line).collect()
}

/// CPython's own test for a file that may hold `_PyRuntime`: the basename contains
/// `python` (`python3.14`, `libpython3.14.so.1.0`).
pub fn is_python_file(path: &str) -> bool {
    let basename = path.rsplit('/').next().unwrap_or(path);
    basename.contains("python")
}

/// The `major.minor` a file's name announces (`python3.11`, `libpython3.11.so.1.0`,
/// `libpython3.13d.so`): a hint for an error message about a process whose runtime this
/// tool cannot read, never a basis for reading memory.
pub fn python_version_in_name(path: &str) -> Option<(u8, u8)> {
    let basename = path.rsplit('/').next().unwrap_or(path);
    let (_, rest) = basename.split_once("python")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// All the mappings of one file (same path, same inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile<'a> {
    pub path: &'a str,
    pub inode: u64,
    pub deleted: bool,
    pub regions: Vec<&'a MapRegion>,
}

impl<'a> MappedFile<'a> {
    /// The mapping of file offset 0: its start is the load base used by the section
    /// address arithmetic.
    pub fn offset_zero_region(&self) -> Option<&'a MapRegion> {
        self.regions.iter().copied().find(|r| r.offset == 0)
    }

    /// Private writable mappings: where the initialised `_PyRuntime` lives. The cookie
    /// also appears in read-only text, so a fallback scan must stay in these.
    pub fn writable_private_regions(&self) -> impl Iterator<Item = &'a MapRegion> + '_ {
        self.regions
            .iter()
            .copied()
            .filter(|r| r.perms.read && r.perms.write && !r.perms.shared)
    }
}

/// Files whose name says they may be CPython, in the order they first appear in the maps
/// (the executable before the shared libraries it loaded).
pub fn python_files(regions: &[MapRegion]) -> Vec<MappedFile<'_>> {
    let mut files: Vec<MappedFile<'_>> = Vec::new();
    for region in regions {
        let Some(path) = region.path.as_deref() else {
            continue;
        };
        if !is_python_file(path) {
            continue;
        }
        match files
            .iter_mut()
            .find(|f| f.path == path && f.inode == region.inode)
        {
            Some(file) => file.regions.push(region),
            None => files.push(MappedFile {
                path,
                inode: region.inode,
                deleted: region.deleted,
                regions: vec![region],
            }),
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIE_MAPS: &str = "\
55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01 1311       /usr/bin/python3.14
55d0c0a2a000-55d0c0e4b000 r-xp 0002a000 fe:01 1311       /usr/bin/python3.14
55d0c1150000-55d0c11ed000 rw-p 00750000 fe:01 1311       /usr/bin/python3.14
55d0c11ed000-55d0c1235000 rw-p 00000000 00:00 0 
55d0c2000000-55d0c2100000 rw-p 00000000 00:00 0          [heap]
7f0000000000-7f0000001000 r--p 00000000 fe:01 2222       /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0          [stack]
";

    #[test]
    fn parses_a_file_mapping() {
        let region = parse_maps_line(
            "55d0c1150000-55d0c11ed000 rw-p 00750000 fe:01 1311       /usr/bin/python3.14",
        )
        .unwrap();
        assert_eq!(region.start, 0x55d0c1150000);
        assert_eq!(region.end, 0x55d0c11ed000);
        assert_eq!(region.offset, 0x750000);
        assert_eq!(region.inode, 1311);
        assert!(region.perms.read && region.perms.write && !region.perms.exec);
        assert!(!region.perms.shared);
        assert_eq!(region.path.as_deref(), Some("/usr/bin/python3.14"));
        assert!(!region.deleted);
        assert_eq!(region.map_files_name(), "55d0c1150000-55d0c11ed000");
    }

    #[test]
    fn strips_deleted_suffix_and_keeps_spaces_in_paths() {
        let region = parse_maps_line(
            "00400000-00401000 r--p 00000000 08:01 77   /tmp/my dir/python3 (deleted)",
        )
        .unwrap();
        assert_eq!(region.path.as_deref(), Some("/tmp/my dir/python3"));
        assert!(region.deleted);
    }

    #[test]
    fn anonymous_and_pseudo_regions_have_no_path() {
        assert_eq!(
            parse_maps_line("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0          [stack]")
                .unwrap()
                .path,
            None
        );
        assert_eq!(
            parse_maps_line("55d0c11ed000-55d0c1235000 rw-p 00000000 00:00 0 ")
                .unwrap()
                .path,
            None
        );
        assert_eq!(
            parse_maps_line("55d0c11ed000-55d0c1235000 rw-p 00000000 00:00 0")
                .unwrap()
                .path,
            None
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in [
            "",
            "garbage",
            "zz-10 rw-p 0 0 0",
            "20-10 rw-p 00000000 00:00 0",
            "10-20 rwx 00000000 00:00 0",
            "10-20 rw-p 0000000g 00:00 0",
        ] {
            assert_eq!(parse_maps_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn version_in_a_file_name() {
        assert_eq!(python_version_in_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(
            python_version_in_name("/x/lib/libpython3.13d.so.1.0"),
            Some((3, 13))
        );
        assert_eq!(python_version_in_name("/usr/bin/python3"), None);
        assert_eq!(
            python_version_in_name("/lib/_asyncio.cpython-314-x86_64-linux-gnu.so"),
            None
        );
        assert_eq!(python_version_in_name("/opt/python3.x/bin/node"), None);
    }

    #[test]
    fn python_name_test_looks_at_the_basename_only() {
        assert!(is_python_file("/usr/bin/python3.14"));
        assert!(is_python_file("/usr/lib/libpython3.14.so.1.0"));
        assert!(!is_python_file("/opt/python/bin/node"));
        assert!(!is_python_file("/usr/bin/pypy"));
    }

    #[test]
    fn groups_python_mappings_per_file() {
        let regions = parse_maps(PIE_MAPS);
        assert_eq!(regions.len(), 7);
        let files = python_files(&regions);
        assert_eq!(files.len(), 1);
        let file = &files[0];
        assert_eq!(file.path, "/usr/bin/python3.14");
        assert_eq!(file.regions.len(), 3);
        assert_eq!(file.offset_zero_region().unwrap().start, 0x55d0c0a00000);
        let writable: Vec<_> = file.writable_private_regions().collect();
        assert_eq!(writable.len(), 1);
        assert_eq!(writable[0].offset, 0x750000);
    }

    #[test]
    fn executable_and_libpython_are_separate_files_in_map_order() {
        let maps = "\
00400000-00401000 r--p 00000000 08:01 10 /usr/bin/python3.14
7f0000000000-7f0000100000 r--p 00000000 08:01 11 /usr/lib/libpython3.14.so.1.0
7f0000100000-7f0000200000 rw-p 00100000 08:01 11 /usr/lib/libpython3.14.so.1.0
";
        let regions = parse_maps(maps);
        let files = python_files(&regions);
        let paths: Vec<_> = files.iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            ["/usr/bin/python3.14", "/usr/lib/libpython3.14.so.1.0"]
        );
    }

    #[test]
    fn a_replaced_file_at_the_same_path_is_a_different_file() {
        let maps = "\
00400000-00401000 r--p 00000000 08:01 10 /usr/bin/python3.14 (deleted)
00401000-00402000 rw-p 00001000 08:01 10 /usr/bin/python3.14 (deleted)
7f0000000000-7f0000001000 r--p 00000000 08:01 99 /usr/bin/python3.14
";
        let regions = parse_maps(maps);
        let files = python_files(&regions);
        assert_eq!(files.len(), 2);
        assert!(files[0].deleted);
        assert_eq!(files[0].regions.len(), 2);
        assert!(!files[1].deleted);
    }
}
