//! `metrics.csv`: one row per epoch, the Swift original's table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub const HEADER: &str = "epoch,loss,train_accuracy,val_accuracy";

/// One epoch: the mean training loss and accuracies in percent (val only where measured).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub val_accuracy: Option<f64>,
}

impl Row {
    /// The row as printed after each epoch.
    pub fn display(&self) -> String {
        let val = self.val_accuracy.map(|v| format!("{v:6.2}%")).unwrap_or_else(|| "       ".into());
        format!("{:>5}  {:>9.6}  {:>6.2}%  {}", self.epoch, self.loss, self.train_accuracy, val)
    }
}

/// The header that goes with [`Row::display`].
pub fn display_header() -> String {
    format!("{:>5}  {:>9}  {:>7}  {:>7}", "epoch", "loss", "train", "val")
}

pub fn to_csv(rows: &[Row]) -> String {
    let mut s = format!("{HEADER}\n");
    for r in rows {
        let val = r.val_accuracy.map(|v| format!("{v:.4}")).unwrap_or_default();
        writeln!(s, "{},{:.8},{:.4},{}", r.epoch, r.loss, r.train_accuracy, val).unwrap();
    }
    s
}

/// Parses a metrics.csv; `name` goes into error messages.
pub fn parse_csv(text: &str, name: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim() == HEADER => {}
        other => bail!("{name}: first line should be '{HEADER}', found {:?}", other.unwrap_or("")),
    }
    let mut rows = vec![];
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 4 {
            bail!("{name}: line {} has {} fields, expected 4", i + 2, fields.len());
        }
        let num =
            |j: usize| -> Result<f64> { fields[j].trim().parse::<f64>().with_context(|| format!("{name}: line {}: '{}' is not a number", i + 2, fields[j])) };
        rows.push(Row {
            epoch: fields[0].trim().parse().with_context(|| format!("{name}: line {}: bad epoch '{}'", i + 2, fields[0]))?,
            loss: num(1)?,
            train_accuracy: num(2)?,
            val_accuracy: if fields[3].trim().is_empty() { None } else { Some(num(3)?) },
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
            Row { epoch: 0, loss: 0.693, train_accuracy: 50.0, val_accuracy: Some(48.3333) },
            Row { epoch: 1, loss: 0.5, train_accuracy: 61.6667, val_accuracy: None },
        ];
        let text = to_csv(&rows);
        assert!(text.starts_with("epoch,loss,train_accuracy,val_accuracy\n0,0.69300000,50.0000,48.3333\n1,"));
        assert!(text.ends_with(",\n"));
        assert_eq!(parse_csv(&text, "m").unwrap(), rows);
    }

    #[test]
    fn bad_csv_names_the_line() {
        let err = parse_csv("epoch,loss,train_accuracy,val_accuracy\n0,x,1,\n", "m.csv").unwrap_err();
        assert!(format!("{err:#}").contains("m.csv: line 2"), "{err:#}");
        assert!(parse_csv("nope\n", "m.csv").is_err());
    }
}
