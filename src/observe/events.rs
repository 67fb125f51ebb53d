//! TensorBoard event files: TFRecord framing and the `Event` protos they hold.
//!
//! A TFRecord file is a sequence of records, each `u64` little-endian length, masked CRC32C of
//! those 8 bytes, the data, masked CRC32C of the data. In an event file every record is a
//! `tensorflow.Event` (tensorflow/core/util/event.proto, generated in [`crate::proto`], with
//! accessors for its `what` oneof here). TensorFlow's own summary writer makes
//! the files ([`crate::observe::tensorboard`]); this module reads them back, checking every CRC, and
//! encodes the one event the project writes itself (a SessionLog START when a run resumes).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

/// Generated from event.proto and summary.proto (see [`crate::proto`]).
pub use crate::proto::tensorflow::{Event, SessionLog, Summary};
use crate::proto::tensorflow::{event, session_log::SessionStatus, summary};

impl Event {
    /// The SessionLog START event a resumed run writes, at `step`.
    pub fn start(wall_time: f64, step: i64) -> Event {
        let log = SessionLog { status: SessionLog::START, ..Default::default() };
        Event { wall_time, step, what: Some(event::What::SessionLog(log)), ..Default::default() }
    }

    /// The `what` oneof, one accessor per kind this project reads.
    pub fn file_version(&self) -> Option<&str> {
        match &self.what {
            Some(event::What::FileVersion(v)) => Some(v),
            _ => None,
        }
    }

    /// A serialized GraphDef.
    pub fn graph_def(&self) -> Option<&Vec<u8>> {
        match &self.what {
            Some(event::What::GraphDef(g)) => Some(g),
            _ => None,
        }
    }

    pub fn summary(&self) -> Option<&Summary> {
        match &self.what {
            Some(event::What::Summary(s)) => Some(s),
            _ => None,
        }
    }

    pub fn session_log(&self) -> Option<&SessionLog> {
        match &self.what {
            Some(event::What::SessionLog(l)) => Some(l),
            _ => None,
        }
    }
}

impl SessionLog {
    /// At a START that is not a run's first, TensorBoard's Python loader drops the events of
    /// steps at or after its step that came before it: the epochs a crashed run trained past
    /// its last checkpoint.
    pub const START: i32 = SessionStatus::Start as i32;
}

impl summary::Value {
    /// An image summary's PNG and its size.
    pub fn image(&self) -> Option<&summary::Image> {
        match &self.value {
            Some(summary::value::Value::Image(i)) => Some(i),
            _ => None,
        }
    }

    /// The value of a scalar summary, whichever way it was written: a `simple_value`
    /// (WriteScalarSummary) or a scalar tensor (TF2's Python `tf.summary.scalar`).
    pub fn scalar(&self) -> Option<f64> {
        let t = match &self.value {
            Some(summary::value::Value::SimpleValue(v)) => return Some(*v as f64),
            Some(summary::value::Value::Tensor(t)) => t,
            _ => return None,
        };
        match t.dtype {
            1 => t.float_val.first().map(|&v| v as f64).or_else(|| Some(f32::from_le_bytes(t.tensor_content.get(..4)?.try_into().ok()?) as f64)),
            2 => t.double_val.first().copied().or_else(|| Some(f64::from_le_bytes(t.tensor_content.get(..8)?.try_into().ok()?))),
            _ => None,
        }
    }
}

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC32C: rotated and offset so a CRC of data that holds CRCs stays strong.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = CRC32C.checksum(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames `data` as one TFRecord.
pub fn encode_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Splits a TFRecord file into its records, checking both CRCs of each. `name` goes into errors.
pub fn decode_records<'a>(bytes: &'a [u8], name: &str) -> Result<Vec<&'a [u8]>> {
    let mut records = vec![];
    let mut at = 0;
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    while at < bytes.len() {
        ensure!(bytes.len() - at >= 12, "{name}: truncated record header at byte {at}");
        let len_bytes = &bytes[at..at + 8];
        ensure!(u32_at(at + 8) == masked_crc32c(len_bytes), "{name}: length CRC mismatch at byte {at}");
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let start = at + 12;
        if bytes.len() - start < len.saturating_add(4) {
            bail!("{name}: record at byte {at} claims {len} bytes, the file ends first (truncated?)");
        }
        let data = &bytes[start..start + len];
        ensure!(u32_at(start + len) == masked_crc32c(data), "{name}: data CRC mismatch in the record at byte {at}");
        records.push(data);
        at = start + len + 4;
    }
    Ok(records)
}

/// Every event of one event file, in order.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    decode_records(&bytes, &name)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| <Event as prost::Message>::decode(r).with_context(|| format!("{name}: record {i} is not an Event proto")))
        .collect()
}

/// The event files in `dir`, oldest first (TensorFlow names them events.out.tfevents.<seconds>...).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().contains("tfevents")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720).
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn records_round_trip_and_corruption_is_named() {
        let ev = Event::start(1.5, 7);
        let mut file = encode_record(&ev.encode_to_vec());
        file.extend(encode_record(b""));
        let records = decode_records(&file, "f").unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(Event::decode(records[0]).unwrap(), ev);
        let mut bad = file.clone();
        bad[14] ^= 1;
        assert!(format!("{:#}", decode_records(&bad, "f").unwrap_err()).contains("data CRC mismatch"));
        assert!(format!("{:#}", decode_records(&file[..file.len() - 1], "f").unwrap_err()).contains("f: "));
    }
}
