//! `curves.png`: training loss and accuracies against epoch, for one run or several overlaid.
//!
//! Two panels: the mean training loss (log scale: it falls by orders of magnitude), and train and
//! val accuracy in percent. Drawn with plotters into a pixel buffer, with a font embedded in the
//! binary (assets/fonts, DejaVu Sans), so no system fonts are needed, and written atomically.

use std::ops::Neg;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail, ensure};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::run::metrics::{self, Row};
use crate::util::fsutil;

/// The plot's file name in a run directory.
pub const CURVES: &str = "curves.png";

const SIZE: (u32, u32) = (1000, 800);
pub(crate) const FONT: &str = "sans-serif";
static FONT_DATA: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Tableau's ten colours: distinct, and readable on white.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One run's rows and its name in the legend.
pub struct Curve {
    pub name: String,
    pub rows: Vec<Row>,
}

/// Redraws `run_dir/curves.png` from `rows`.
pub fn write_run_curves(run_dir: &Path, rows: &[Row]) -> Result<()> {
    let curve = Curve { name: run_name(run_dir), rows: rows.to_vec() };
    write_png(&[curve], &run_dir.join(CURVES))
}

/// `alexnet plot`: reads each run's metrics.csv and draws them into `out` (default: the run's
/// curves.png for one run, ./curves.png for several). Returns the file written.
pub fn plot_runs(run_dirs: &[PathBuf], out: Option<&Path>) -> Result<PathBuf> {
    ensure!(!run_dirs.is_empty(), "name at least one run directory");
    let mut names: Vec<String> = run_dirs.iter().map(|d| run_name(d)).collect();
    // Runs of the same name in different folders: the legend needs the whole paths.
    if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
        names = run_dirs.iter().map(|d| d.display().to_string()).collect();
    }
    let mut curves = vec![];
    for (dir, name) in run_dirs.iter().zip(names) {
        let path = dir.join("metrics.csv");
        if !path.exists() {
            bail!("{} has no metrics.csv (is it a run directory? train it first with alexnet train --run-dir {})", dir.display(), dir.display());
        }
        let rows = metrics::read(&path)?;
        ensure!(!rows.is_empty(), "{} has no epochs yet", path.display());
        curves.push(Curve { name, rows });
    }
    let out = match out {
        Some(o) => o.to_path_buf(),
        None if run_dirs.len() == 1 => run_dirs[0].join(CURVES),
        None => PathBuf::from(CURVES),
    };
    write_png(&curves, &out)?;
    Ok(out)
}

/// Draws `curves` and writes them as a PNG, atomically.
pub fn write_png(curves: &[Curve], out: &Path) -> Result<()> {
    let image = render(curves)?;
    let mut png = vec![];
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).context("cannot encode the plot as PNG")?;
    fsutil::write_atomic(out, &png)
}

/// Draws `curves` into an RGB image.
pub fn render(curves: &[Curve]) -> Result<image::RgbImage> {
    register_font()?;
    let (w, h) = SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    draw(curves, &mut buf).map_err(|e| anyhow!("cannot draw the curves: {e}"))?;
    image::RgbImage::from_raw(w, h, buf).context("plot buffer of the wrong size")
}

/// `text` with every character the embedded font has no glyph for (CJK, Arabic, emoji, ...)
/// replaced by '?': an honest mark instead of an empty box. The font covers Latin (with its
/// extensions), Greek and Cyrillic.
pub(crate) fn drawable(text: &str) -> String {
    use ab_glyph::Font;
    static FONT_REF: OnceLock<Option<ab_glyph::FontRef<'static>>> = OnceLock::new();
    match FONT_REF.get_or_init(|| ab_glyph::FontRef::try_from_slice(FONT_DATA).ok()) {
        Some(font) => text.chars().map(|c| if c == ' ' || font.glyph_id(c).0 != 0 { c } else { '?' }).collect(),
        None => text.to_string(),
    }
}

pub(crate) fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_DATA).is_ok());
    ensure!(ok, "the font embedded from assets/fonts/DejaVuSans-subset.ttf is not a valid TrueType font");
    Ok(())
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// The epoch axis both panels share.
struct EpochAxis {
    range: std::ops::Range<f64>,
    /// Whole epochs only: no repeated labels on short runs.
    labels: usize,
}

/// The loss panel's y axis: on a log axis once the loss spans a decade (late epochs stay
/// readable), else on a linear one fitted to the data (a loss that moves from 0.694 to 0.678
/// should not look flat). The log axis is a linear one of log10(loss) with 10^y labels, so its
/// ticks fall on decades.
struct LossAxis {
    log: bool,
    range: std::ops::Range<f64>,
    labels: usize,
    /// Enough decimals that neighbouring linear ticks differ.
    decimals: usize,
}

fn draw(curves: &[Curve], buf: &mut [u8]) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match curves {
        [one] => format!("AlexNet training: {}", one.name),
        _ => format!("AlexNet training: {} runs", curves.len()),
    };
    let root = root.titled(&title, (FONT, 26))?;
    let (top, bottom) = root.split_vertically(SIZE.1 as i32 / 2 - 20);
    let epochs = epoch_axis(curves);
    draw_loss_panel(&top, curves, &epochs)?;
    draw_accuracy_panel(&bottom, curves, &epochs)?;
    root.present()?;
    Ok(())
}

/// The colour of a run's series (0: train, 1: val): one per series for a single run, one per run
/// when runs are overlaid.
fn colour(curves: &[Curve], run: usize, series: usize) -> RGBColor {
    if curves.len() == 1 { COLOURS[series] } else { COLOURS[run % COLOURS.len()] }
}

fn epoch_axis(curves: &[Curve]) -> EpochAxis {
    let last_epoch = curves.iter().flat_map(|c| c.rows.iter().map(|r| r.epoch)).max().unwrap_or(0).max(1) as f64;
    EpochAxis { range: 0.0..last_epoch, labels: (last_epoch as usize + 1).min(11) }
}

fn epoch_label(x: &f64) -> String {
    format!("{x:.0}")
}

fn loss_axis(curves: &[Curve]) -> LossAxis {
    let losses = || curves.iter().flat_map(|c| c.rows.iter().map(|r| r.loss)).filter(|l| l.is_finite() && *l > 0.0);
    let lo = losses().fold(f64::INFINITY, f64::min);
    let hi = losses().fold(0.0, f64::max);
    let log = lo.is_finite() && hi / lo >= 10.0;
    let (range, labels) = if log {
        let (a, b) = (lo.log10().floor(), hi.log10().ceil());
        (a..b, (b - a) as usize + 1)
    } else if lo.is_finite() {
        let pad = ((hi - lo) * 0.1).max(hi * 0.01);
        ((lo - pad).max(0.0)..hi + pad, 8)
    } else {
        (0.0..1.0, 8)
    };
    let decimals = ((range.end - range.start) / 8.0).log10().neg().ceil().clamp(0.0, 6.0) as usize;
    LossAxis { log, range, labels, decimals }
}

/// The top panel: each run's training loss.
fn draw_loss_panel(area: &Area, curves: &[Curve], epochs: &EpochAxis) -> DrawResult {
    let LossAxis { log, range, labels, decimals } = loss_axis(curves);
    let to_y = move |loss: f64| if log { loss.log10() } else { loss };
    let caption = if log { "training loss (mean cross-entropy, log scale)" } else { "training loss (mean cross-entropy)" };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(epochs.range.clone(), range)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .x_labels(epochs.labels)
        .y_labels(labels)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&|y| if log { format_loss(10f64.powf(*y)) } else { format!("{y:.decimals$}") })
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let style = colour(curves, i, 0).stroke_width(2);
        let points = c.rows.iter().filter(|r| r.loss.is_finite() && r.loss > 0.0).map(|r| (r.epoch as f64, to_y(r.loss)));
        chart.draw_series(LineSeries::new(points, style))?;
    }
    // No legend here: it would cover the curve's start; the accuracy panel's legend names the
    // runs' colours.
    Ok(())
}

type AccuracyChart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// The bottom panel: accuracies in percent, train solid and val dotted, with the legend.
fn draw_accuracy_panel(area: &Area, curves: &[Curve], epochs: &EpochAxis) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption("accuracy (train: solid; val: dots, measured every --val-every epochs)", (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(epochs.range.clone(), 0.0..101.0)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .x_labels(epochs.labels)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        draw_accuracies(&mut chart, curves, i, c)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// Run `i`'s train accuracy (a line) and val accuracy (dots, joined), with their legend entries.
fn draw_accuracies<'a, 'b: 'a>(chart: &mut AccuracyChart<'a, 'b>, curves: &[Curve], i: usize, c: &Curve) -> DrawResult {
    let single = curves.len() == 1;
    let train = colour(curves, i, 0).stroke_width(2);
    let points = c.rows.iter().map(|r| (r.epoch as f64, r.train_accuracy));
    let label = if single { "train accuracy".to_string() } else { format!("{} train", c.name) };
    chart.draw_series(LineSeries::new(points, train))?.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], train));

    let val_colour = colour(curves, i, 1);
    let val = val_colour.stroke_width(2);
    let points: Vec<(f64, f64)> = c.rows.iter().filter_map(|r| r.val_accuracy.map(|v| (r.epoch as f64, v))).collect();
    let label = if single { "val accuracy".to_string() } else { format!("{} val", c.name) };
    if single {
        chart.draw_series(LineSeries::new(points.clone(), val))?;
    } else {
        chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, val))?;
    }
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, val_colour.filled())))?.label(label).legend(move |(x, y)| {
        // Dashed like the series when runs are overlaid.
        let gap = if single { 0 } else { 6 };
        EmptyElement::at((x, y))
            + PathElement::new(vec![(0, 0), (9 - gap / 2, 0)], val)
            + PathElement::new(vec![(15 + gap / 2, 0), (24, 0)], val)
            + Circle::new((12, 0), 4, val_colour.filled())
    });
    Ok(())
}

/// Log-axis tick labels: 2, 0.5, 0.01, 1e-4 (2 significant digits at most).
fn format_loss(y: f64) -> String {
    if y >= 1.0 {
        format!("{y:.0}")
    } else if y >= 1e-3 {
        let digits = (-y.log10()).ceil() as usize;
        let s = format!("{y:.digits$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{y:.0e}")
    }
}

/// The name a run goes by in legends: its folder's name.
fn run_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_ticks_are_short() {
        assert_eq!(format_loss(2.0), "2");
        assert_eq!(format_loss(0.5), "0.5");
        assert_eq!(format_loss(0.01), "0.01");
        assert_eq!(format_loss(0.0001), "1e-4");
    }

    #[test]
    fn renders_one_run_and_several() {
        let rows: Vec<Row> = (0..20)
            .map(|e| Row {
                epoch: e,
                loss: 0.7 / (1.0 + e as f64),
                train_accuracy: 50.0 + 2.0 * e as f64,
                val_accuracy: (e % 5 == 0).then_some(45.0 + e as f64),
                val_top5: None,
                lr: None,
            })
            .collect();
        let one = render(&[Curve { name: "a".into(), rows: rows.clone() }]).unwrap();
        assert_eq!(one.dimensions(), SIZE);
        let two = render(&[Curve { name: "a".into(), rows: rows.clone() }, Curve { name: "b".into(), rows: rows[..3].to_vec() }]).unwrap();
        assert_ne!(one, two);
    }
}
