//! `metrics.csv`: one row per epoch, the Swift original's table, then top-5 val accuracy (empty
//! where not measured, or with fewer than 5 classes) and the learning rate of the epoch's last
//! step. Files of older runs, without the `val_top5` or `lr` column, are still read (a resumed
//! old run is rewritten with them).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub const HEADER: &str = "epoch,loss,train_accuracy,val_accuracy,val_top5,lr";
/// The header before `val_top5`.
const HEADER_V1: &str = "epoch,loss,train_accuracy,val_accuracy";
/// The header before `lr`.
const HEADER_V2: &str = "epoch,loss,train_accuracy,val_accuracy,val_top5";

/// One epoch: the mean training loss and accuracies in percent (val only where measured).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub val_accuracy: Option<f64>,
    /// Percent of val images whose class is among the 5 highest logits (with 5 or more classes).
    pub val_top5: Option<f64>,
    /// The learning rate of the epoch's last step (None in files of older runs).
    pub lr: Option<f64>,
}

impl Row {
    /// The row as printed after each epoch.
    pub fn display(&self) -> String {
        let val = self.val_accuracy.map(|v| format!("{v:6.2}%")).unwrap_or_else(|| "       ".into());
        let row = format!("{:>5}  {:>9.6}  {:>6.2}%  {}", self.epoch, self.loss, self.train_accuracy, val);
        match self.val_top5 {
            Some(t) => format!("{row}  {t:6.2}%"),
            None => row,
        }
    }
}

/// The header that goes with [`Row::display`] (`top5`: with its column).
pub fn display_header(top5: bool) -> String {
    let header = format!("{:>5}  {:>9}  {:>7}  {:>7}", "epoch", "loss", "train", "val");
    if top5 { format!("{header}  {:>7}", "top5") } else { header }
}

pub fn to_csv(rows: &[Row]) -> String {
    let mut s = format!("{HEADER}\n");
    for r in rows {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
        let lr = r.lr.map(|v| format!("{v:e}")).unwrap_or_default();
        writeln!(s, "{},{:.8},{:.4},{},{},{lr}", r.epoch, r.loss, r.train_accuracy, opt(r.val_accuracy), opt(r.val_top5)).unwrap();
    }
    s
}

/// Parses a metrics.csv; `name` goes into error messages.
pub fn parse_csv(text: &str, name: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let width = match lines.next().map(str::trim) {
        Some(HEADER) => 6,
        Some(HEADER_V2) => 5,
        Some(HEADER_V1) => 4,
        other => bail!("{name}: first line should be '{HEADER}', found {:?}", other.unwrap_or("")),
    };
    let mut rows = vec![];
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != width {
            bail!("{name}: line {} has {} fields, expected {width}", i + 2, fields.len());
        }
        let num =
            |j: usize| -> Result<f64> { fields[j].trim().parse::<f64>().with_context(|| format!("{name}: line {}: '{}' is not a number", i + 2, fields[j])) };
        let opt = |j: usize| -> Result<Option<f64>> { if fields.get(j).is_none_or(|f| f.trim().is_empty()) { Ok(None) } else { Ok(Some(num(j)?)) } };
        rows.push(Row {
            epoch: fields[0].trim().parse().with_context(|| format!("{name}: line {}: bad epoch '{}'", i + 2, fields[0]))?,
            loss: num(1)?,
            train_accuracy: num(2)?,
            val_accuracy: opt(3)?,
            val_top5: opt(4)?,
            lr: opt(5)?,
        });
    }
    Ok(rows)
}

pub fn read(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_csv(&text, &path.display().to_string())
}

/// Rewrites the whole file atomically (it is small), so a reader never sees half a row.
pub fn write(path: &Path, rows: &[Row]) -> Result<()> {
    crate::util::fsutil::write_atomic(path, to_csv(rows).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_keeps_empty_val() {
        let rows = vec![
            Row { epoch: 0, loss: 0.693, train_accuracy: 50.0, val_accuracy: Some(48.3333), val_top5: Some(90.5), lr: Some(0.002) },
            Row { epoch: 1, loss: 0.5, train_accuracy: 61.6667, val_accuracy: None, val_top5: None, lr: Some(1.25e-5) },
        ];
        let text = to_csv(&rows);
        assert!(text.starts_with("epoch,loss,train_accuracy,val_accuracy,val_top5,lr\n0,0.69300000,50.0000,48.3333,90.5000,2e-3\n1,"), "{text}");
        assert!(text.ends_with(",,,1.25e-5\n"), "{text}");
        assert_eq!(parse_csv(&text, "m").unwrap(), rows);
    }

    #[test]
    fn an_old_four_column_file_is_read() {
        let rows = parse_csv("epoch,loss,train_accuracy,val_accuracy\n0,0.5,60.0,55.0\n1,0.4,70.0,\n", "old.csv").unwrap();
        assert_eq!(rows[0], Row { epoch: 0, loss: 0.5, train_accuracy: 60.0, val_accuracy: Some(55.0), val_top5: None, lr: None });
        let v2 = parse_csv("epoch,loss,train_accuracy,val_accuracy,val_top5\n0,0.5,60.0,55.0,90\n", "v2.csv").unwrap();
        assert_eq!((v2[0].val_top5, v2[0].lr), (Some(90.0), None));
        assert_eq!(rows[1].val_accuracy, None);
        assert!(parse_csv("epoch,loss,train_accuracy,val_accuracy\n0,0.5,60.0,55.0,90\n", "old.csv").is_err());
    }

    #[test]
    fn bad_csv_names_the_line() {
        let err = parse_csv("epoch,loss,train_accuracy,val_accuracy\n0,x,1,\n", "m.csv").unwrap_err();
        assert!(format!("{err:#}").contains("m.csv: line 2"), "{err:#}");
        assert!(parse_csv("nope\n", "m.csv").is_err());
    }
}
