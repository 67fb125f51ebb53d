//! The up-front check of the pipeline: each file's header and its last bytes, read in parallel,
//! catch zero-byte, non-image and truncated files (a JPEG without its end-of-image marker, a PNG
//! without its IEND chunk, a GIF without its trailer, a BMP shorter than its header says) in
//! seconds, without decoding. Files that pass but still fail to decode are caught during the
//! epoch (see the module above).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::data::encoded::{check_encoded, check_end, image_format};
use crate::data::images::BadImage;
use crate::util::parallel::map_each;

/// How far from the end an end marker may sit: some cameras append data after a JPEG's EOI.
const TAIL: u64 = 64 * 1024;

/// The files that fail the check, with why, in input order.
pub fn quick_check(paths: &[&Path]) -> Vec<BadImage> {
    // File reads wait on the disk more than on a core: a few more threads than cores.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) * 4;
    let results = map_each(paths.to_vec(), threads, check_file);
    paths.iter().zip(results).filter_map(|(p, r)| r.err().map(|reason| BadImage { path: p.to_path_buf(), reason })).collect()
}

/// Whether every file of `paths` starts as a JPEG does (an unreadable file counts as not).
pub fn all_jpeg(paths: &[String]) -> bool {
    paths.iter().all(|p| {
        let mut head = [0u8; 3];
        std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut head)).is_ok() && image_format(&head) == Some("JPEG")
    })
}

/// One file's header and tail check.
pub fn check_file(path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read the file ({e})"))?;
    let len = f.metadata().map_err(|e| format!("cannot read the file ({e})"))?.len();
    let mut head = vec![0u8; (64 * 1024).min(len as usize)];
    f.read_exact(&mut head).map_err(|e| format!("cannot read the file ({e})"))?;
    check_encoded(&head)?;
    let tail_len = TAIL.min(len);
    f.seek(SeekFrom::Start(len - tail_len)).map_err(|e| format!("cannot read the file ({e})"))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).map_err(|e| format!("cannot read the file ({e})"))?;
    check_end(&head, &tail, len)
}
