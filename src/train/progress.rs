//! The per-step progress bar, on a terminal only (hidden otherwise and with `--quiet`): for each
//! epoch, its images done of its total, images per second and the epoch's time left, both from
//! indicatif's own smoothed estimate. An epoch's first step waits for the pipeline to fill (and,
//! in the first epoch, for the first decodes), so the estimate starts after it.

use std::fmt::Write;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// The bar. Derefs to indicatif's, for lines printed above it.
pub struct Progress {
    bar: ProgressBar,
}

impl std::ops::Deref for Progress {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Progress {
    /// A bar drawn on stderr when it is a terminal and the run is not `quiet`.
    pub fn new(quiet: bool) -> Progress {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let style = ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} images  {rate} images/s  eta {time_left}")
                .expect("a valid template")
                .with_key("rate", |s: &ProgressState, w: &mut dyn Write| write!(w, "{}", rate(s.per_sec())).unwrap())
                .with_key("time_left", |s: &ProgressState, w: &mut dyn Write| write!(w, "{}", time_left(s)).unwrap());
            ProgressBar::new(0).with_style(style)
        };
        Progress { bar }
    }

    /// Before epoch `index` (of `epochs`) of `images` training images.
    pub fn start_epoch(&self, index: usize, epochs: usize, images: usize) {
        self.bar.reset();
        self.bar.set_length(images as u64);
        self.bar.set_prefix(format!("epoch {}/{epochs}", index + 1));
    }

    /// When the epoch turns out to train on fewer images (a dropped remainder).
    pub fn set_images(&self, images: usize) {
        self.bar.set_length(images as u64);
    }

    /// After a step that trained on `images` examples.
    pub fn step(&self, images: usize) {
        let first = self.bar.position() == 0;
        self.bar.inc(images as u64);
        if first {
            self.bar.reset_eta();
        }
    }
}

/// Whether indicatif has a rate yet (it has none before the first step after a reset).
fn estimated(per_sec: f64) -> bool {
    per_sec > 0.0 && per_sec.is_finite()
}

/// "153", "4.2", or "-" before the first estimate.
fn rate(per_sec: f64) -> String {
    match per_sec {
        r if !estimated(r) => "-".into(),
        r if r < 10.0 => format!("{r:.1}"),
        r => format!("{r:.0}"),
    }
}

/// The epoch's time left as m:ss (h:mm:ss from an hour), or "-" before the first estimate.
fn time_left(s: &ProgressState) -> String {
    if !estimated(s.per_sec()) {
        return "-".into();
    }
    let secs = s.eta().as_secs_f64().round() as u64;
    let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 { format!("{h}:{m:02}:{sec:02}") } else { format!("{m}:{sec:02}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_shown_to_a_sensible_precision() {
        assert_eq!(rate(0.0), "-");
        assert_eq!(rate(4.24), "4.2");
        assert_eq!(rate(153.4), "153");
    }
}
