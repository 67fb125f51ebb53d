//! The per-step progress bar, on a terminal only (hidden otherwise and with `--quiet`): for each
//! epoch, its steps done of its total, the images per second from the steps' own batch sizes and
//! the epoch's time left, both smoothed over the last few steps. An epoch's first step waits for
//! the pipeline to fill (and, in the first epoch, for the first decodes), so its time is left out.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Weight of the newest step in the smoothed rates.
const SMOOTHING: f64 = 0.3;

/// The bar, and the rates it shows. Derefs to the bar, for lines printed above it.
pub struct Progress {
    bar: ProgressBar,
    rate: Mutex<Rate>,
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
            let bar = ProgressBar::new(0);
            bar.set_style(ProgressStyle::with_template("{prefix} {bar:30} {msg}").expect("a valid template"));
            bar
        };
        Progress { bar, rate: Mutex::new(Rate::default()) }
    }

    /// Before epoch `index` (of `epochs`) with `steps` steps.
    pub fn start_epoch(&self, index: usize, epochs: usize, steps: usize) {
        let mut rate = self.rate.lock().unwrap();
        *rate = Rate { total: steps, last: Some(Instant::now()), ..Rate::default() };
        self.bar.reset();
        self.bar.set_length(steps as u64);
        self.bar.set_prefix(format!("epoch {}/{epochs}", index + 1));
        self.bar.set_message(rate.line());
    }

    /// When the epoch turns out to have `steps` steps (a dropped remainder).
    pub fn set_steps(&self, steps: usize) {
        let mut rate = self.rate.lock().unwrap();
        rate.total = steps;
        self.bar.set_length(steps as u64);
        self.bar.set_message(rate.line());
    }

    /// After a step that trained on `images` examples.
    pub fn step(&self, images: usize) {
        let mut rate = self.rate.lock().unwrap();
        let now = Instant::now();
        let secs = rate.last.map(|t| now.duration_since(t).as_secs_f64());
        rate.last = Some(now);
        rate.record(images, secs);
        self.bar.inc(1);
        self.bar.set_message(rate.line());
    }
}

/// One epoch's steps so far and their smoothed cost.
#[derive(Default)]
struct Rate {
    done: usize,
    total: usize,
    last: Option<Instant>,
    /// Seconds per step and images per step, smoothed; None until a step after the first.
    secs_per_step: Option<f64>,
    images_per_step: Option<f64>,
}

impl Rate {
    /// A step of `images` that took `secs` (None: not known).
    fn record(&mut self, images: usize, secs: Option<f64>) {
        self.done += 1;
        if self.done == 1 {
            return;
        }
        let Some(secs) = secs else { return };
        let smooth = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| o + SMOOTHING * (new - o)));
        self.secs_per_step = smooth(self.secs_per_step, secs);
        self.images_per_step = smooth(self.images_per_step, images as f64);
    }

    fn line(&self) -> String {
        let rate = match (self.images_per_step, self.secs_per_step) {
            (Some(i), Some(s)) if s > 0.0 => Some(i / s),
            _ => None,
        };
        let eta = self.secs_per_step.map(|s| s * self.total.saturating_sub(self.done) as f64);
        progress_line(self.done, self.total, rate, eta)
    }
}

/// "12/47 steps  153 images/s  eta 0:12"; the rate and time left are "-" until known.
pub fn progress_line(done: usize, total: usize, images_per_sec: Option<f64>, eta_secs: Option<f64>) -> String {
    let rate = match images_per_sec {
        Some(r) if r < 10.0 => format!("{r:.1}"),
        Some(r) => format!("{r:.0}"),
        None => "-".into(),
    };
    let eta = eta_secs.map_or("-".into(), |s| clock(s.round() as u64));
    format!("{done}/{total} steps  {rate} images/s  eta {eta}")
}

/// m:ss, or h:mm:ss from an hour.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m}:{s:02}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_formats_rate_and_time_left() {
        assert_eq!(progress_line(0, 47, None, None), "0/47 steps  - images/s  eta -");
        assert_eq!(progress_line(12, 47, Some(153.4), Some(12.4)), "12/47 steps  153 images/s  eta 0:12");
        assert_eq!(progress_line(3, 10, Some(4.24), Some(3725.0)), "3/10 steps  4.2 images/s  eta 1:02:05");
    }

    #[test]
    fn rates_come_from_the_steps_own_sizes_smoothed_and_skip_the_first_step() {
        let mut r = Rate { total: 10, ..Rate::default() };
        // The first step waits for the pipeline: not counted.
        r.record(64, Some(30.0));
        assert_eq!(r.line(), "1/10 steps  - images/s  eta -");
        r.record(64, Some(0.5));
        assert_eq!(r.line(), "2/10 steps  128 images/s  eta 0:04");
        // A slower step moves the rate part of the way; a partial batch counts its own images.
        r.record(64, Some(1.5));
        let (spi, ips) = (0.5 + SMOOTHING * 1.0, 64.0);
        assert_eq!(r.line(), progress_line(3, 10, Some(ips / spi), Some(7.0 * spi)));
        r.record(16, Some(0.5));
        let spi2 = spi + SMOOTHING * (0.5 - spi);
        let ips2 = 64.0 + SMOOTHING * (16.0 - 64.0);
        assert_eq!(r.line(), progress_line(4, 10, Some(ips2 / spi2), Some(6.0 * spi2)));
    }
}
