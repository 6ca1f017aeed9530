//! PNG plots of a run's curves: `train.png` (training loss and rating accuracy per round) and
//! `eval.png` (every evaluation as a labelled point over the training curve).
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

/// One curve: name, colour, points (a non-finite y is a gap, e.g. a skipped round), and
/// whether every point gets a marker (sparse series such as evaluations).
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    markers: bool,
}

/// Draws one panel with its series into `area`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    text: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = series.iter().flat_map(|s| s.points.iter());
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
    // Rounds are integers: at most one tick per round, labelled without a fraction.
    let round_label = |x: &f64| format!("{}", x.round() as i64);
    if text {
        mesh.x_desc("round")
            .x_labels(((x1 - x0) as usize + 1).min(10))
            .x_label_formatter(&round_label)
            .label_style((FONT, 12));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(err)?;
    for s in series {
        let c = s.color;
        // One line per run of finite points: a skipped round leaves a gap, not a zero.
        let mut first = true;
        for segment in s.points.split(|p| !p.1.is_finite()) {
            if segment.is_empty() {
                continue;
            }
            let drawn = chart
                .draw_series(LineSeries::new(segment.iter().copied(), c.stroke_width(2)))
                .map_err(err)?;
            if text && std::mem::take(&mut first) {
                drawn.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
            }
        }
        let finite = s.points.iter().filter(|p| p.1.is_finite());
        if s.markers || finite.clone().count() <= 2 {
            chart
                .draw_series(finite.map(|&p| Circle::new(p, 4, c.filled())))
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

/// Writes a two-panel (loss | accuracy) PNG atomically: drawn into a temporary file beside
/// `path`, then renamed, so an interrupted or failed write never leaves a truncated plot.
fn two_panels(path: &Path, loss: &[Series], acc: &[Series], what: &str) -> Result<()> {
    let text = fonts_ready();
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(".tmp.png"); // the encoder picks PNG by the extension
    let tmp = path.with_file_name(name);
    let drawn = (|| {
        let root = BitMapBackend::new(&tmp, (1100, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e:?}"))?;
        let (left, right) = root.split_horizontally(550);
        panel(&left, &format!("{what} loss (MSE)"), loss, text)?;
        panel(&right, &format!("{what} rating accuracy"), acc, text)?;
        root.present()
            .map_err(|e| anyhow!("cannot write {}: {e:?}", tmp.display()))
    })()
    .and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| anyhow!("cannot move {} into place: {e}", path.display()))
    });
    if drawn.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drawn
}

/// Writes `train.png` and (when there are evaluations) `eval.png` into `dir`. Skipped rounds
/// are gaps in the training curves. `eval.png` draws every evaluation as a labelled point over
/// the training curve, so a run evaluated only at the end (the tutorial's) still reads.
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
                tl.push((f64::from(*round), loss.unwrap_or(f64::NAN)));
                ta.push((f64::from(*round), rating_accuracy.unwrap_or(f64::NAN)));
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
    let line = |name: &str, color, points: &Vec<(f64, f64)>| Series {
        name: name.to_string(),
        color,
        points: points.clone(),
        markers: false,
    };
    // An evaluation series, named with its last value.
    let evals = |name: &str, color, points: &Vec<(f64, f64)>| Series {
        name: match points.last() {
            Some(&(round, y)) => format!("{name} ({y:.4} at round {round})"),
            None => name.to_string(),
        },
        color,
        points: points.clone(),
        markers: true,
    };
    if !tl.is_empty() {
        two_panels(
            &dir.join("train.png"),
            &[line("train", BLUE, &tl)],
            &[line("train", BLUE, &ta)],
            "training",
        )?;
    }
    if !(vl.is_empty() && sl.is_empty()) {
        let faint = RGBColor(150, 170, 230);
        two_panels(
            &dir.join("eval.png"),
            &[
                line("train", faint, &tl),
                evals("val", RED, &vl),
                evals("test", GREEN, &sl),
            ],
            &[
                line("train", faint, &ta),
                evals("val", RED, &va),
                evals("test", GREEN, &sa),
            ],
            "evaluation",
        )?;
    }
    Ok(())
}
