//! The up-front check of the pipeline: each file's header and its last bytes, read in parallel,
//! catch zero-byte, non-image and truncated files (a JPEG without its end-of-image marker, a PNG
//! without its IEND chunk, a GIF without its trailer, a BMP shorter than its header says) in
//! seconds, without decoding. Files that pass but still fail to decode are caught during the
//! epoch (see the module above).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::data::encoded::{check_encoded, check_end, image_format, jpeg_scan_start};
use crate::data::images::BadImage;
use crate::util::parallel::map_each;

/// How far from the end an end marker may sit (some cameras append data after a JPEG's EOI),
/// and how far into the file a JPEG's start-of-scan may sit (behind a large EXIF block).
const WIDE: u64 = 64 * 1024;

/// What is read first at each end: enough for nearly every file, and a few pages instead of the
/// whole of a typical photo, which is what a cold disk spends its time on.
const NARROW: u64 = 4 * 1024;

/// The reads wait on the disk, not on a core: a cold disk answers many small reads at once
/// faster than a few (20,000 evicted files, two runs each on a busy 2-core machine: 2.3-2.4 s
/// with 8 threads, 1.7-2.1 s with 32).
const IO_THREADS: usize = 32;

/// The files that fail the check, with why, in input order.
pub fn quick_check(paths: &[&Path]) -> Vec<BadImage> {
    let results = map_each(paths.to_vec(), IO_THREADS, check_file);
    paths.iter().zip(results).filter_map(|(p, r)| r.err().map(|reason| BadImage { path: p.to_path_buf(), reason })).collect()
}

/// Whether every file of `paths` starts as a JPEG does (an unreadable file counts as not).
pub fn all_jpeg(paths: &[String]) -> bool {
    paths.iter().all(|p| {
        let mut head = [0u8; 3];
        std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut head)).is_ok() && image_format(&head) == Some("JPEG")
    })
}

/// One file's header and tail check: the same verdict as reading [`WIDE`] bytes at each end,
/// from [`NARROW`] reads unless those can't decide.
pub fn check_file(path: &Path) -> Result<(), String> {
    let unreadable = |e: std::io::Error| format!("cannot read the file ({e})");
    let f = std::fs::File::open(path).map_err(unreadable)?;
    let len = f.metadata().map_err(unreadable)?.len();
    let mut head = read_at(&f, 0, NARROW.min(len)).map_err(unreadable)?;
    // A JPEG's size (for the pixel limit) and its scan start (for the end check) come from its
    // segments; past the narrow head, read the wide one.
    if image_format(&head) == Some("JPEG") && jpeg_scan_start(&head).is_none() && len > NARROW {
        head = read_at(&f, 0, WIDE.min(len)).map_err(unreadable)?;
    }
    check_encoded(&head)?;
    let narrow = NARROW.min(len);
    let tail = read_at(&f, len - narrow, narrow).map_err(unreadable)?;
    let verdict = check_end(&head, &tail, len);
    if verdict.is_ok() || narrow == WIDE.min(len) {
        return verdict;
    }
    let wide = WIDE.min(len);
    check_end(&head, &read_at(&f, len - wide, wide).map_err(unreadable)?, len)
}

/// `len` bytes of `f` from `offset`.
fn read_at(f: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG's bytes: SOI, an APP1 of `app1` bytes holding a thumbnail's end marker, a scan, then
    /// `after` (the end marker and whatever a camera appends, or nothing when cut off).
    fn jpeg(app1: usize, after: &[u8]) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1];
        b.extend(((app1 + 2) as u16).to_be_bytes());
        b.extend([0xFF, 0xD9]);
        b.resize(b.len() + app1 - 2, 0);
        b.extend([0xFF, 0xDA, 0, 2]);
        b.resize(b.len() + 20_000, 0x55);
        b.extend(after);
        b
    }

    #[test]
    fn narrow_reads_give_the_wide_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let verdict = |name: &str, bytes: Vec<u8>| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            check_file(&path)
        };
        let appended = |n: usize| [&[0xFF, 0xD9][..], &vec![7u8; n]].concat();
        assert!(verdict("plain.jpg", jpeg(100, &[0xFF, 0xD9])).is_ok());
        // The scan behind 30 KB of EXIF: only the wide head finds it, and the thumbnail's marker
        // is not taken for the image's.
        assert!(verdict("exif.jpg", jpeg(30_000, &[0xFF, 0xD9])).is_ok());
        assert!(verdict("exif-cut.jpg", jpeg(30_000, &[])).unwrap_err().contains("truncated JPEG"));
        assert!(verdict("cut.jpg", jpeg(100, &[])).unwrap_err().contains("truncated JPEG"));
        // 10 KB appended after the marker: past the narrow tail, inside the wide one.
        assert!(verdict("appended.jpg", jpeg(100, &appended(10_000))).is_ok());
        assert!(verdict("appended-too-much.jpg", jpeg(100, &appended(70_000))).is_err());
        assert!(verdict("empty.jpg", vec![]).unwrap_err().contains("empty"));
    }
}
