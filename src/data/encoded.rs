//! What an encoded image's bytes say before any decoding: its format, its size from the header,
//! and whether it is whole. These checks run before TensorFlow sees a file, everywhere a file
//! comes in (the training pipeline's up-front check, the decoder, predict, the server), so a bad
//! file gets the same plain reason wherever it is met, and a cut-off file never reaches libjpeg,
//! which would print its own warning on stderr.

/// Images larger than this are refused before decoding (3 bytes a pixel while decoding: 750 MB).
pub const MAX_PIXELS: u64 = 250_000_000;

/// Width and height from a JPEG, PNG, GIF or BMP header, when the header is readable.
pub fn image_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32);
    let le16 = |i: usize| Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32);
    let be32 = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let le32 = |i: usize| Some(i32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?).unsigned_abs());
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some((be32(16)?, be32(20)?));
    }
    if b.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if b.starts_with(b"BM") {
        return Some((le32(18)?, le32(22)?));
    }
    if b.starts_with(&[0xFF, 0xD8]) {
        // Walk the markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
        let mut i = 2;
        while i + 9 < b.len() {
            if b[i] != 0xFF {
                return None;
            }
            let marker = b[i + 1];
            if marker == 0xFF {
                i += 1;
                continue;
            }
            let len = be16(i + 2)? as usize;
            if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            i += 2 + len;
        }
    }
    None
}

/// The format TensorFlow's DecodeImage would take the bytes for (it sniffs the same signatures),
/// or None for anything it refuses.
pub fn image_format(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("JPEG")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("PNG")
    } else if b.starts_with(b"GIF") {
        Some("GIF")
    } else if b.starts_with(b"BM") {
        Some("BMP")
    } else {
        None
    }
}

/// The checks of an encoded image's start that need no decoding, in plain words: empty, not a
/// format TensorFlow decodes, or a header giving more than [`MAX_PIXELS`].
pub fn check_encoded(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    if image_format(bytes).is_none() {
        return Err("not a JPEG, PNG, GIF or BMP image".into());
    }
    if let Some((w, h)) = image_dimensions(bytes) {
        let pixels = w as u64 * h as u64;
        if pixels > MAX_PIXELS {
            let (mp, max) = (pixels / 1_000_000, MAX_PIXELS / 1_000_000);
            return Err(format!("{w} x {h} pixels ({mp} megapixels) is more than the {max} megapixels this program decodes; downscale it first"));
        }
    }
    Ok(())
}

/// [`check_encoded`] and [`check_end`] on a whole file in memory.
pub fn check_whole(bytes: &[u8]) -> Result<(), String> {
    check_encoded(bytes)?;
    check_end(bytes, bytes, bytes.len() as u64)
}

/// Whether a file ends as its format requires, from its first bytes (`head`), its last bytes
/// (`tail`, up to the whole file) and its length: a JPEG's end-of-image marker, a PNG's IEND
/// chunk, a GIF's trailer, a BMP as long as its header says. Bytes after the marker are allowed
/// (some cameras append data there).
pub fn check_end(head: &[u8], tail: &[u8], len: u64) -> Result<(), String> {
    let has = |marker: &[u8]| tail.windows(marker.len()).any(|w| w == marker);
    let truncated = |format: &str, what: &str| Err(format!("truncated {format} file (it stops before {what})"));
    match image_format(head) {
        Some("JPEG") if !jpeg_has_end(head, tail, len) => truncated("JPEG", "its end-of-image marker"),
        Some("PNG") if !has(b"IEND") => truncated("PNG", "its IEND chunk"),
        Some("GIF") if !tail.ends_with(&[0x3B]) && !has(&[0x00, 0x3B]) => truncated("GIF", "its trailer"),
        Some("BMP") => {
            let declared = head.get(2..6).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
            if declared > len { Err(format!("truncated BMP file ({len} bytes, its header says {declared})")) } else { Ok(()) }
        }
        _ => Ok(()),
    }
}

/// Entropy-coded data escapes every 0xFF, so after the first start-of-scan the only FF D9 is the
/// end marker; an EXIF thumbnail's own FF D9 comes before it, in APP1, so the search starts at the
/// scan where the tail reaches back that far.
fn jpeg_has_end(head: &[u8], tail: &[u8], len: u64) -> bool {
    let tail_start = len.saturating_sub(tail.len() as u64);
    let skip = jpeg_scan_start(head).map_or(0, |sos| (sos as u64).saturating_sub(tail_start) as usize);
    tail.get(skip..).is_some_and(|t| t.windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// Offset of a JPEG's first start-of-scan marker, walking the segments before it by their lengths
/// (None when `b` ends first).
pub fn jpeg_scan_start(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        match b[i + 1] {
            0xFF => i += 1,
            0xDA => return Some(i),
            0xD0..=0xD7 | 0x01 => i += 2,
            _ => i += 2 + u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_markers_in_the_tail() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 2, 0xFF, 0xDA, 0, 2, 1, 2, 3];
        assert!(check_end(&jpeg, &[1, 2, 0xFF, 0xD9], 100).is_ok());
        // Bytes appended after the marker are fine.
        assert!(check_end(&jpeg, &[0xFF, 0xD9, 7, 7, 7], 100).is_ok());
        assert!(check_end(&jpeg, &[1, 2, 3], 100).unwrap_err().contains("truncated JPEG file"));
        let png = b"\x89PNG\r\n\x1a\n....";
        assert!(check_end(png, b"..IEND\xaeB`\x82", 100).is_ok());
        assert!(check_end(png, b"......", 100).unwrap_err().contains("truncated PNG file"));
    }

    #[test]
    fn a_thumbnail_end_marker_before_the_scan_does_not_count() {
        // APP1 holding a thumbnail's FF D9, then the scan, cut before the image's own marker.
        let cut = [0xFF, 0xD8, 0xFF, 0xE1, 0, 4, 0xFF, 0xD9, 0xFF, 0xDA, 0, 2, 5, 6];
        assert!(check_whole(&cut).unwrap_err().contains("end-of-image"));
        let whole: Vec<u8> = cut.iter().copied().chain([0xFF, 0xD9]).collect();
        assert!(check_whole(&whole).is_ok());
        // The same file seen through a tail that starts inside APP1: the thumbnail's marker is skipped.
        assert!(check_end(&cut, &cut[4..], cut.len() as u64).is_err());
    }
}
