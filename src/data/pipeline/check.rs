//! The up-front check of the pipeline: each file's header and its last bytes, read in parallel,
//! catch zero-byte, non-image and truncated files (a JPEG without its end-of-image marker, a PNG
//! without its IEND chunk, a GIF without its trailer, a BMP shorter than its header says) in
//! seconds, without decoding. Files that pass but still fail to decode are caught during the
//! epoch (see the module above).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::data::images::{BadImage, check_encoded, image_format};

/// How far from the end an end marker may sit: some cameras append data after a JPEG's EOI.
const TAIL: u64 = 64 * 1024;

/// The files that fail the check, with why, in input order.
pub fn quick_check(paths: &[&Path]) -> Vec<BadImage> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let results: Vec<Mutex<Option<String>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(i) else { break };
            *results[i].lock().unwrap() = check_file(path).err();
        }
    };
    // File reads wait on the disk more than on a core: a few more threads than cores.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) * 4;
    std::thread::scope(|s| {
        for _ in 1..threads.min(paths.len()) {
            s.spawn(work);
        }
        work();
    });
    paths.iter().zip(results).filter_map(|(p, r)| r.into_inner().unwrap().map(|reason| BadImage { path: p.to_path_buf(), reason })).collect()
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

/// The end of the file as its format requires.
fn check_end(head: &[u8], tail: &[u8], len: u64) -> Result<(), String> {
    let has = |marker: &[u8]| tail.windows(marker.len()).any(|w| w == marker);
    match image_format(head) {
        Some("JPEG") if !has(&[0xFF, 0xD9]) => Err("truncated JPEG: no end-of-image marker (FFD9)".into()),
        Some("PNG") if !has(b"IEND") => Err("truncated PNG: no IEND chunk".into()),
        Some("GIF") if !tail.ends_with(&[0x3B]) && !has(&[0x00, 0x3B]) => Err("truncated GIF: no trailer".into()),
        Some("BMP") => {
            let declared = head.get(2..6).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as u64).unwrap_or(0);
            if declared > len { Err(format!("truncated BMP: {len} bytes, its header says {declared}")) } else { Ok(()) }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_markers() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
        assert!(check_end(&jpeg, &[1, 2, 0xFF, 0xD9], 100).is_ok());
        // Bytes appended after the marker are fine.
        assert!(check_end(&jpeg, &[0xFF, 0xD9, 7, 7, 7], 100).is_ok());
        assert!(check_end(&jpeg, &[1, 2, 3], 100).unwrap_err().contains("end-of-image"));
        let png = b"\x89PNG\r\n\x1a\n....";
        assert!(check_end(png, b"..IEND\xaeB`\x82", 100).is_ok());
        assert!(check_end(png, b"......", 100).unwrap_err().contains("IEND"));
    }
}
