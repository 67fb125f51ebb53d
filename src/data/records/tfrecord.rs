//! The TFRecord file format, as TensorFlow's `RecordWriter` and `RecordReader` frame it: each
//! record is its length (u64, little-endian), the masked CRC32C of those 8 bytes, the data and
//! the masked CRC32C of the data. A shard may be GZIP- or ZLIB-compressed as a whole (the
//! stream, not each record); which one is told from its first bytes, as a user's shards carry no
//! other sign of it.
//!
//! Reading here is the host's scan of a shard (counting its records and checking every CRC before
//! training); the training graph reads the same shards with TensorFlow's own `TFRecordDataset`.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use flate2::Compression as Level;
use flate2::read::{MultiGzDecoder, ZlibDecoder};
use flate2::write::GzEncoder;

/// CRC32C (Castagnoli), the checksum TFRecord uses.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TensorFlow's masked CRC (`crc32c::Mask`): a CRC of data that holds CRCs is itself weak, so the
/// stored value is rotated and offset.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = CRC32C.checksum(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// How a shard's bytes are compressed: the names `TFRecordDataset`'s `compression_type` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    None,
    Gzip,
    Zlib,
}

impl Compression {
    /// The `compression_type` string of TensorFlow's readers and writers.
    pub fn tf_name(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "GZIP",
            Compression::Zlib => "ZLIB",
        }
    }

    /// Told from a shard's first bytes: an uncompressed shard starts with a record's length and
    /// that length's CRC, which no compressed stream's first 12 bytes match by chance (a length
    /// of 376 bytes starts as a ZLIB header does); else GZIP's magic, or a ZLIB header (deflate
    /// method, and the checksum that makes the first two bytes a multiple of 31).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.len() >= 12 && masked_crc(&head[..8]).to_le_bytes() == head[8..12] {
            return Compression::None;
        }
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [a, b, ..] if a & 0x0f == 8 && a >> 4 <= 7 && (u16::from(*a) * 256 + u16::from(*b)) % 31 == 0 => Compression::Zlib,
            _ => Compression::None,
        }
    }

    /// Of the file at `path`.
    pub fn of_file(path: &Path) -> Result<Compression> {
        let mut head = [0u8; 12];
        let f = File::open(path).with_context(|| format!("cannot open shard {}", path.display()))?;
        let n = read_full(&mut f.take(12), &mut head).map_err(anyhow::Error::msg).with_context(|| format!("cannot read shard {}", path.display()))?;
        Ok(Compression::sniff(&head[..n]))
    }
}

/// Writes records to a shard.
pub struct Writer {
    out: Box<dyn Write>,
}

impl Writer {
    /// A writer of `path` (created or replaced), compressed as `compression` says (ZLIB is
    /// only read, never written).
    pub fn create(path: &Path, compression: Compression) -> Result<Writer> {
        let file = BufWriter::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
        let out: Box<dyn Write> = match compression {
            // The fastest level: a shard is mostly JPEG bytes, which deflate barely shrinks (1% at
            // the default level 6 on the Swift photos, at 174 images/s on 2 busy cores).
            Compression::Gzip => Box::new(GzEncoder::new(file, Level::fast())),
            Compression::None => Box::new(file),
            Compression::Zlib => anyhow::bail!("make-records writes uncompressed or GZIP shards, not ZLIB"),
        };
        Ok(Writer { out })
    }

    /// Appends one record.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.out.write_all(&frame_header(data.len() as u64))?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }

    /// Flushes the shard (and the GZIP stream's trailer, dropped with it).
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()?;
        drop(self.out);
        Ok(())
    }
}

/// The 12 bytes before a record's data: its length and that length's masked CRC.
fn frame_header(len: u64) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..8].copy_from_slice(&len.to_le_bytes());
    let crc = masked_crc(&h[..8]);
    h[8..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a shard's records stop before its end (TensorFlow's reader stops there too: its
/// `TFRecordDataset` reports a data-loss error and goes on with the next file).
#[derive(Clone, Debug, PartialEq)]
pub struct Corrupt {
    /// The record (0-based) that cannot be read; every record before it is good.
    pub record: u64,
    pub reason: String,
}

/// Reads a shard's records one by one, checking both CRCs of each.
pub struct Reader {
    input: Box<dyn Read + Send>,
    next: u64,
    failed: bool,
}

impl Reader {
    /// A reader of `path`, decompressing as its first bytes say.
    pub fn open(path: &Path) -> Result<Reader> {
        let compression = Compression::of_file(path)?;
        let file = BufReader::with_capacity(1 << 20, File::open(path).with_context(|| format!("cannot open shard {}", path.display()))?);
        let input: Box<dyn Read + Send> = match compression {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(BufReader::new(MultiGzDecoder::new(file))),
            Compression::Zlib => Box::new(BufReader::new(ZlibDecoder::new(file))),
        };
        Ok(Reader { input, next: 0, failed: false })
    }

    /// The next record's data; None at the clean end of the shard; Err for the first record that
    /// cannot be read (then None ever after).
    pub fn next_record(&mut self) -> Option<Result<Vec<u8>, Corrupt>> {
        if self.failed {
            return None;
        }
        let record = self.next;
        let r = self.read_one();
        self.next += 1;
        match r {
            Ok(Some(data)) => Some(Ok(data)),
            Ok(None) => None,
            Err(reason) => {
                self.failed = true;
                Some(Err(Corrupt { record, reason }))
            }
        }
    }

    fn read_one(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut header = [0u8; 12];
        match read_full(&mut self.input, &mut header)? {
            0 => return Ok(None),
            12 => {}
            n => return Err(format!("truncated record (the shard ends {n} bytes into its header)")),
        }
        if masked_crc(&header[..8]).to_le_bytes() != header[8..] {
            return Err("corrupt record (its length's CRC does not match)".into());
        }
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        // Read as it comes rather than allocated up front: a length the CRC happened to pass
        // (or a shard cut short) costs only the bytes that are there.
        let want = len.saturating_add(4);
        let mut data = Vec::new();
        match self.input.by_ref().take(want).read_to_end(&mut data) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(format!("unreadable compressed data ({e})")),
        }
        if (data.len() as u64) < want {
            return Err(format!("truncated record (the shard ends {} of {want} bytes into it)", data.len()));
        }
        let crc = data.split_off(len as usize);
        if masked_crc(&data).to_le_bytes()[..] != crc[..] {
            return Err("corrupt record (its data's CRC does not match)".into());
        }
        Ok(Some(data))
    }
}

/// Reads until `buf` is full or the input ends; how many bytes came. A decompression error is
/// named as such.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("unreadable compressed data ({e})")),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_is_tensorflows() {
        // CRC32C test vector (RFC 3720): 32 zero bytes -> 0x8a9136aa; TensorFlow masks it.
        assert_eq!(CRC32C.checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(masked_crc(&[0u8; 32]), 0x8a91_36aau32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn records_round_trip_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for compression in [Compression::None, Compression::Gzip] {
            let path = dir.path().join(format!("shard-{compression:?}"));
            let mut w = Writer::create(&path, compression).unwrap();
            let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
            records.iter().for_each(|r| w.write(r).unwrap());
            w.finish().unwrap();
            assert_eq!(Compression::of_file(&path).unwrap(), compression);
            let mut r = Reader::open(&path).unwrap();
            let read: Vec<Vec<u8>> = std::iter::from_fn(|| r.next_record()).map(|x| x.unwrap()).collect();
            assert_eq!(read, records);
        }
        let path = dir.path().join("shard-None");
        let mut bytes = std::fs::read(&path).unwrap();
        // Record 2's data starts after two records of 116 and 117 bytes and its own 12-byte header.
        bytes[116 + 117 + 12 + 3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(&path).unwrap();
        let out: Vec<_> = std::iter::from_fn(|| r.next_record()).collect();
        assert_eq!(out.len(), 3, "two good records, then the corrupt one, then nothing");
        assert_eq!(out[2].clone().unwrap_err(), Corrupt { record: 2, reason: "corrupt record (its data's CRC does not match)".into() });
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let mut r = Reader::open(&path).unwrap();
        let last = std::iter::from_fn(|| r.next_record()).last().unwrap().unwrap_err();
        assert_eq!(last.record, 2, "the flipped byte still comes first");
    }

    proptest::proptest! {
        /// Any bytes after a good record: the record reads back, then the reader ends or names
        /// the next record as corrupt, and never panics.
        #[test]
        fn garbage_never_panics(garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("shard");
            let mut bytes = frame_header(3).to_vec();
            bytes.extend(b"abc");
            bytes.extend(masked_crc(b"abc").to_le_bytes());
            bytes.extend(&garbage);
            std::fs::write(&path, &bytes).unwrap();
            let mut r = Reader::open(&path).unwrap();
            proptest::prop_assert_eq!(r.next_record(), Some(Ok(b"abc".to_vec())));
            if let Some(next) = r.next_record() {
                let corrupt = next.unwrap_err();
                proptest::prop_assert_eq!(corrupt.record, 1);
            }
            proptest::prop_assert!(r.next_record().is_none());
        }
    }

    #[test]
    fn zlib_headers_are_told_from_records() {
        assert_eq!(Compression::sniff(&[0x78, 0x9c]), Compression::Zlib);
        assert_eq!(Compression::sniff(&[0x78, 0x01]), Compression::Zlib);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b]), Compression::Gzip);
        // A record of 0x7a bytes: its length's low byte is no ZLIB header.
        assert_eq!(Compression::sniff(&[0x7a, 0x00]), Compression::None);
        // One of 376 (0x178) bytes starts as a ZLIB header does; its length's CRC tells it apart.
        assert_eq!(Compression::sniff(&frame_header(376)), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }
}
