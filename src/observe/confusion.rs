//! `confusion.png`: a confusion matrix as a picture, for `alexnet eval`.
//!
//! Rows are the true classes and columns the predicted ones, named on both axes; each cell holds
//! its count, shaded from white (none) to blue (the largest count), so the diagonal of a good
//! model stands out. Drawn with plotters and the embedded font of [`crate::observe::plot`], and
//! written atomically.

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::observe::plot::{FONT, drawable, register_font};
use crate::util::fsutil;

/// Room for the row names on the left and the title and column names on top.
const LEFT: i32 = 170;
const TOP: i32 = 110;
const MARGIN: i32 = 30;

/// The picture's size in pixels for `classes` classes: 800 x 800, larger past 15 classes so a
/// cell stays at least 40 pixels wide.
pub fn size(classes: usize) -> (u32, u32) {
    let side = 800.max(LEFT + MARGIN + 40 * classes as i32) as u32;
    (side, side)
}

/// Draws `confusion` (rows: true class, columns: predicted) of `classes` under `title` into a
/// PNG at `out`, written to a temporary name and renamed.
pub fn write_png(classes: &[String], confusion: &[Vec<usize>], title: &str, out: &Path) -> Result<()> {
    let image = render(classes, confusion, title)?;
    let mut png = vec![];
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).context("cannot encode the confusion matrix as PNG")?;
    fsutil::write_atomic(out, &png)
}

/// Draws the matrix into an RGB image of [`size`].
pub fn render(classes: &[String], confusion: &[Vec<usize>], title: &str) -> Result<image::RgbImage> {
    let k = classes.len();
    ensure!(k > 0 && confusion.len() == k && confusion.iter().all(|r| r.len() == k), "a confusion matrix of {k} classes needs {k} rows of {k} counts");
    register_font()?;
    let (w, h) = size(k);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    draw(classes, confusion, title, &mut buf, (w, h)).map_err(|e| anyhow!("cannot draw the confusion matrix: {e}"))?;
    image::RgbImage::from_raw(w, h, buf).context("confusion buffer of the wrong size")
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(classes: &[String], confusion: &[Vec<usize>], title: &str, buf: &mut [u8], (w, h): (u32, u32)) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let k = classes.len() as i32;
    let cell = ((w as i32 - LEFT - MARGIN).min(h as i32 - TOP - MARGIN)) / k;
    let grid = cell * k;
    let text = |size: i32, h: HPos, v: VPos| (FONT, size).into_font().color(&BLACK).pos(Pos::new(h, v));
    root.draw(&Text::new(title.to_string(), (MARGIN, 20), text(22, HPos::Left, VPos::Top)))?;
    root.draw(&Text::new("predicted class", (LEFT + grid / 2, 55), text(17, HPos::Center, VPos::Top)))?;
    root.draw(&Text::new("true class", (MARGIN, TOP - 30), text(17, HPos::Left, VPos::Bottom)))?;
    let max = confusion.iter().flatten().copied().max().unwrap_or(0).max(1);
    let label_size = (cell / 3).clamp(10, 16);
    let chars = (cell / (label_size / 2 + 1)).max(3) as usize;
    for (i, row) in confusion.iter().enumerate() {
        let y0 = TOP + i as i32 * cell;
        root.draw(&Text::new(short(&drawable(&classes[i]), 16), (LEFT - 8, y0 + cell / 2), text(label_size, HPos::Right, VPos::Center)))?;
        let x0 = LEFT + i as i32 * cell;
        root.draw(&Text::new(short(&drawable(&classes[i]), chars), (x0 + cell / 2, TOP - 8), text(label_size, HPos::Center, VPos::Bottom)))?;
        for (j, &n) in row.iter().enumerate() {
            let x0 = LEFT + j as i32 * cell;
            let t = n as f64 / max as f64;
            // White to the plot's blue (31, 119, 180).
            let shade = |c: f64| (255.0 - t * (255.0 - c)).round() as u8;
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], RGBColor(shade(31.0), shade(119.0), shade(180.0)).filled()))?;
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], RGBColor(190, 190, 190)))?;
            let colour = if t > 0.5 { &WHITE } else { &BLACK };
            let count = (FONT, (cell / 3).clamp(9, 20)).into_font().color(colour).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new(n.to_string(), (x0 + cell / 2, y0 + cell / 2), count))?;
        }
    }
    root.present()?;
    Ok(())
}

/// `name`, cut to `chars` characters (with `..`) so that column labels do not run into each other.
fn short(name: &str, chars: usize) -> String {
    if name.chars().count() <= chars { name.to_string() } else { format!("{}..", name.chars().take(chars.saturating_sub(2)).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_counts_in_shades_of_the_largest() {
        let classes: Vec<String> = ["disc", "square", "a-very-long-class-name"].iter().map(|s| s.to_string()).collect();
        let m = vec![vec![9, 1, 0], vec![0, 10, 0], vec![2, 0, 8]];
        let img = render(&classes, &m, "val").unwrap();
        assert_eq!(img.dimensions(), size(3));
        // The largest count's cell is the full blue; an empty cell stays white.
        let cell = (800 - LEFT - MARGIN).min(800 - TOP - MARGIN) / 3;
        let at = |i: i32, j: i32| *img.get_pixel((LEFT + j * cell + 3) as u32, (TOP + i * cell + 3) as u32);
        assert_eq!(at(1, 1).0, [31, 119, 180]);
        assert_eq!(at(0, 2).0, [255, 255, 255]);
        assert!(render(&classes, &m[..2], "val").is_err());
        assert_eq!(size(30), (1400, 1400));
    }

    #[test]
    fn class_names_outside_ascii_are_drawn_or_marked() {
        // Latin with accents, Greek and Cyrillic have glyphs; what the font lacks becomes '?'.
        for name in ["chat noir é", "Hündin", "γάτα", "кошка"] {
            assert_eq!(drawable(name), name);
        }
        assert_eq!(drawable("猫 cat"), "? cat");
        let classes: Vec<String> = ["кошка", "猫"].iter().map(|s| s.to_string()).collect();
        let img = render(&classes, &[vec![1, 0], vec![0, 1]], "val").unwrap();
        // The row names are drawn left of the matrix: ink there.
        let ink = (0..LEFT as u32 - 8)
            .flat_map(|x| (TOP as u32..TOP as u32 + 300).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 != [255, 255, 255])
            .count();
        assert!(ink > 50, "no class name drawn ({ink} pixels)");
    }
}
