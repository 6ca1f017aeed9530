//! PNG plots of a run's curves: `train.png` (training loss and rating accuracy per round) and
//! `eval.png` (validation loss and rating accuracy per evaluation, test as a final point).
//!
//! Rendering uses plotters' pure-Rust bitmap backend and `ab_glyph` text, with no system
//! libraries. Text needs a TrueType font: the first one found in [`FONT_PATHS`] (or the file
//! in `FEDRECON_FONT`) is used; without one the plots are drawn without text and a warning
//! is logged.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::output::Record;

/// Fonts tried, in order, when `FEDRECON_FONT` is not set.
pub(crate) const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

const FONT: &str = "sans-serif";

/// Registers a font once; returns whether text can be drawn.
fn fonts_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var("FEDRECON_FONT").ok();
        let candidates = env.iter().map(String::as_str).chain(FONT_PATHS);
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found (set FEDRECON_FONT); plots have no text");
        false
    })
}

/// One curve: name, colour, points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Draws one panel with its series into `area`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series<'_>],
    text: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|p| p.1.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Ok(());
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e:?}");
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(title, (FONT, 18))
            .x_label_area_size(30)
            .y_label_area_size(50);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("round").label_style((FONT, 12));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(err)?;
    for (name, color, points) in series {
        let c = *color;
        let drawn = chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(err)?;
        if text {
            drawn.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
            });
        }
        if points.len() <= 2 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Writes a two-panel (loss | accuracy) PNG.
fn two_panels(path: &Path, loss: &[Series<'_>], acc: &[Series<'_>], what: &str) -> Result<()> {
    let text = fonts_ready();
    let root = BitMapBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e:?}"))?;
    let (left, right) = root.split_horizontally(550);
    panel(&left, &format!("{what} loss (MSE)"), loss, text)?;
    panel(&right, &format!("{what} rating accuracy"), acc, text)?;
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e:?}", path.display()))
}

/// Writes `train.png` and (when there are evaluations) `eval.png` into `dir`.
pub(crate) fn write_plots(dir: &Path, records: &[Record]) -> Result<()> {
    let mut tl = Vec::new();
    let mut ta = Vec::new();
    let (mut vl, mut va, mut sl, mut sa) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in records {
        match r {
            Record::Train {
                round,
                loss,
                rating_accuracy,
                ..
            } => {
                tl.push((f64::from(*round), *loss));
                ta.push((f64::from(*round), *rating_accuracy));
            }
            Record::Eval(e) => {
                let (l, a) = if e.split == "test" {
                    (&mut sl, &mut sa)
                } else {
                    (&mut vl, &mut va)
                };
                l.push((f64::from(e.round), e.loss));
                a.push((f64::from(e.round), e.rating_accuracy));
            }
        }
    }
    if !tl.is_empty() {
        two_panels(
            &dir.join("train.png"),
            &[("train", BLUE, tl)],
            &[("train", BLUE, ta)],
            "training",
        )?;
    }
    if !(vl.is_empty() && sl.is_empty()) {
        two_panels(
            &dir.join("eval.png"),
            &[("val", RED, vl), ("test", GREEN, sl)],
            &[("val", RED, va), ("test", GREEN, sa)],
            "evaluation",
        )?;
    }
    Ok(())
}
