//! Training curves (both tasks) and ROC curves (classification evaluation, stacking reports)
//! as PNG (plotters). Text needs a TrueType font: DejaVu Sans is looked up in
//! the usual system folders; without one, the curves are drawn without labels.
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// One epoch of a training curve: the losses and two validation scores on [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_scores: [Option<f64>; 2],
}

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;

/// Registers a system font once (as plotters' "sans-serif"); returns whether text can be
/// drawn. Any plotters backend (PNG here, SVG in `lesion-report`) measures text with it.
pub fn fonts_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        FONT_CANDIDATES.iter().any(|p| {
            std::fs::read(p)
                .ok()
                .map(|bytes| {
                    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok()
                })
                .unwrap_or(false)
        })
    })
}

/// Draws loss (left) and the two validation scores named `score_labels` (right) against the
/// epoch, atomically.
pub fn plot_curves(path: &Path, records: &[CurvePoint], score_labels: [&str; 2]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let text = fonts_ready();
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut buf, records, score_labels, text)
        .map_err(|e| TrainError::file(path, format!("plotting failed: {e}")))?;
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, buf)
        .ok_or_else(|| TrainError::file(path, "plot buffer size"))?;
    lesion_data::io::save_png_atomic(path, &image::DynamicImage::ImageRgb8(img))?;
    Ok(())
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(buf: &mut [u8], records: &[CurvePoint], labels: [&str; 2], text: bool) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    let max_epoch = records.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;

    let losses: Vec<(f64, f64)> = records.iter().map(|r| (r.epoch as f64, r.train_loss)).collect();
    let val_losses: Vec<(f64, f64)> =
        records.iter().filter_map(|r| r.val_loss.map(|v| (r.epoch as f64, v))).collect();
    let max_loss =
        losses.iter().chain(&val_losses).map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.05;
    chart(
        &left,
        "loss",
        "epoch",
        (0.0, max_epoch),
        (0.0, max_loss),
        &[("train loss", &losses, &BLUE), ("val loss", &val_losses, &RED)],
        text,
    )?;

    let score = |k: usize| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| r.val_scores[k].map(|v| (r.epoch as f64, v))).collect()
    };
    let (first, second) = (score(0), score(1));
    chart(
        &right,
        "validation",
        "epoch",
        (0.0, max_epoch),
        (0.0, 1.0),
        &[(labels[0], &first, &GREEN), (labels[1], &second, &MAGENTA)],
        text,
    )?;
    root.present()?;
    Ok(())
}

/// One ROC curve to draw: its legend label and the (FPR, TPR) points in curve order.
pub struct RocSeries<'a> {
    pub label: String,
    pub fpr: &'a [f64],
    pub tpr: &'a [f64],
}

/// Colours of successive ROC curves.
const ROC_COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
/// Side of one ROC panel in pixels.
const ROC_SIDE: u32 = 480;

/// Draws one panel per `(title, curves)` side by side (TPR against FPR, with the chance
/// diagonal), atomically as PNG.
pub fn plot_roc(path: &Path, panels: &[RocPanel<'_>]) -> Result<()> {
    if panels.is_empty() {
        return Ok(());
    }
    let text = fonts_ready();
    let (w, h) = (ROC_SIDE * panels.len() as u32, ROC_SIDE);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw_roc(&mut buf, (w, h), panels, text)
        .map_err(|e| TrainError::file(path, format!("plotting failed: {e}")))?;
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| TrainError::file(path, "plot buffer size"))?;
    lesion_data::io::save_png_atomic(path, &image::DynamicImage::ImageRgb8(img))?;
    Ok(())
}

fn draw_roc(
    buf: &mut [u8],
    size: (u32, u32),
    panels: &[(&str, Vec<RocSeries<'_>>)],
    text: bool,
) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    let diagonal = [(0.0, 0.0), (1.0, 1.0)];
    for (area, (title, curves)) in areas.iter().zip(panels) {
        let points: Vec<Vec<(f64, f64)>> = curves
            .iter()
            .map(|c| c.fpr.iter().copied().zip(c.tpr.iter().copied()).collect())
            .collect();
        let mut series: Vec<Series<'_>> = curves
            .iter()
            .zip(&points)
            .zip(ROC_COLORS.iter().cycle())
            .map(|((c, p), col)| (c.label.as_str(), p.as_slice(), col))
            .collect();
        series.push(("chance", &diagonal, &BLACK));
        chart(area, title, "false positive rate", (0.0, 1.0), (0.0, 1.0), &series, text)?;
    }
    root.present()?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
/// One line of a chart: legend label, points, colour.
type Series<'a> = (&'a str, &'a [(f64, f64)], &'a RGBColor);
/// One ROC panel: its title and curves.
pub type RocPanel<'a> = (&'a str, Vec<RocSeries<'a>>);

fn chart(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    x: (f64, f64),
    y: (f64, f64),
    series: &[Series<'_>],
    text: bool,
) -> DrawResult {
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder.caption(title, ("sans-serif", 20)).x_label_area_size(30).y_label_area_size(45);
    }
    let mut ch = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    if text {
        ch.configure_mesh().x_desc(x_desc).draw()?;
    } else {
        ch.configure_mesh().disable_x_mesh().disable_y_mesh().draw()?;
    }
    for (name, points, color) in series {
        if points.is_empty() {
            continue;
        }
        let color = **color;
        let s = ch.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?;
        if text {
            s.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
    }
    if text {
        ch.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    Ok(())
}
