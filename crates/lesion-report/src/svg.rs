//! The report's plots as inline SVG (plotters' SVG backend into a string): scatter with a
//! least-squares line, ROC curves with bootstrap bands, reliability diagram, histogram,
//! learning curves. Text needs the font `lesion_core::plots::fonts_ready` registers (plotters
//! measures text with it); without one, plots are drawn without text and the page's captions
//! carry the titles.
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use lesion_core::{Result, TrainError};
use lesion_metrics::stats::{Regression, Reliability, RocBand};

/// Size of a square panel (scatter, ROC, reliability, histogram).
const PANEL: (u32, u32) = (440, 400);
/// Size of a learning-curve figure (two panels side by side).
const WIDE: (u32, u32) = (900, 320);
const CAPTION_FONT: u32 = 16;
const LABEL_FONT: u32 = 12;
const LEGEND_FONT: u32 = 11;
/// Space for the axis labels.
const X_LABEL_AREA: u32 = 36;
const Y_LABEL_AREA: u32 = 48;
const MARGIN: u32 = 10;
/// Opacity of a bootstrap band.
const BAND_ALPHA: f64 = 0.18;
/// Scatter markers: models, and the marked ones (stack members).
const POINT_RADIUS: u32 = 4;
const MARKED_RADIUS: u32 = 7;
/// Padding around the data range of a scatter, in AUC units.
const SCATTER_PAD: f64 = 0.05;
/// Smallest axis span of a scatter (a few models with close AUCs still read).
const MIN_SPAN: f64 = 0.2;
/// Room left and right of the first and last epoch of a learning curve.
const EPOCH_PAD: f64 = 0.5;
/// Where a point's name starts, in pixels right of and below the point.
const LABEL_OFFSET: (i32, i32) = (MARKED_RADIUS as i32 + 3, -(LEGEND_FONT as i32) / 2);
/// Points labelled with their name in a scatter, at most (more would be unreadable).
const MAX_POINT_LABELS: usize = 12;

/// Series colours, in order (colour-blind-safe Okabe–Ito).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
];
const MARK_COLOUR: RGBColor = RGBColor(213, 0, 0);
const GUIDE_COLOUR: RGBColor = RGBColor(170, 170, 170);

pub fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Draws into an SVG string of `size`; errors name the plot.
fn render(
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>, bool) -> DrawResult<()>,
) -> Result<String> {
    let text = lesion_core::plots::fonts_ready();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| TrainError::Config(format!("plot '{title}': {e}")))?;
        draw(&root, text).map_err(|e| TrainError::Config(format!("plot '{title}': {e}")))?;
        root.present().map_err(|e| TrainError::Config(format!("plot '{title}': {e}")))?;
    }
    Ok(svg)
}

/// The axis ranges of a panel.
type Ranges = (std::ops::Range<f64>, std::ops::Range<f64>);
/// A panel's chart: f64 coordinates on both axes.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel on `area` with its mesh drawn: the caption (`caption_font`) and axis descriptions
/// when text can be drawn, the bare mesh otherwise (the page's caption carries the words).
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    text: bool,
    (title, caption_font): (&str, u32),
    (x, y): Ranges,
    (x_desc, y_desc): (&str, &str),
) -> DrawResult<Chart<'a, 'b>> {
    let mut b = ChartBuilder::on(area);
    b.margin(MARGIN);
    if text {
        b.caption(title, ("sans-serif", caption_font))
            .x_label_area_size(X_LABEL_AREA)
            .y_label_area_size(Y_LABEL_AREA);
    }
    let mut chart = b.build_cartesian_2d(x, y)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_desc).y_desc(y_desc).label_style(("sans-serif", LABEL_FONT));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    Ok(chart)
}

/// The legend of the labelled series drawn so far, at `position`.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> DrawResult<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", LEGEND_FONT))
        .background_style(WHITE.mix(0.8))
        .border_style(GUIDE_COLOUR)
        .draw()?;
    Ok(())
}

/// One model in a scatter.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPoint {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Drawn larger in the mark colour (a chosen stack member).
    pub marked: bool,
}

/// A common axis range for both coordinates of `points`, within [0, 1].
fn unit_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let (mut lo, mut hi) = ((lo - SCATTER_PAD).max(0.0), (hi + SCATTER_PAD).min(1.0));
    if hi - lo < MIN_SPAN {
        let mid = (hi + lo) / 2.0;
        lo = (mid - MIN_SPAN / 2.0).max(0.0);
        hi = (lo + MIN_SPAN).min(1.0);
        lo = hi - MIN_SPAN;
    }
    (lo, hi)
}

/// The part of the line `y = slope·x + intercept` inside the square `[lo, hi]²`, if any
/// (plotters clamps points outside the plot to its edge, which would bend the line).
fn clip_line(slope: f64, intercept: f64, lo: f64, hi: f64) -> Option<((f64, f64), (f64, f64))> {
    let (mut x0, mut x1) = (lo, hi);
    if slope != 0.0 {
        let (a, b) = ((lo - intercept) / slope, (hi - intercept) / slope);
        x0 = x0.max(a.min(b));
        x1 = x1.min(a.max(b));
    } else if !(lo..=hi).contains(&intercept) {
        return None;
    }
    (x0 < x1).then_some(((x0, slope * x0 + intercept), (x1, slope * x1 + intercept)))
}

/// Internal (x) against external (y) metric per model, the identity as a guide, the
/// least-squares line when given.
pub fn scatter(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[ScatterPoint],
    fit: Option<&Regression>,
) -> Result<String> {
    let (lo, hi) = unit_range(points.iter().flat_map(|p| [p.x, p.y]));
    render(title, PANEL, |root, text| {
        let mut chart =
            panel(root, text, (title, CAPTION_FONT), (lo..hi, lo..hi), (x_label, y_label))?;
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], GUIDE_COLOUR.stroke_width(1)))?;
        if let Some((a, b)) = fit.and_then(|f| clip_line(f.slope, f.intercept, lo, hi)) {
            chart.draw_series(LineSeries::new([a, b], colour(0).stroke_width(2)))?;
        }
        // Every model a filled dot; the marked ones ringed (the legend is the page's caption:
        // inside the plot it would hide points).
        chart.draw_series(
            points.iter().map(|p| Circle::new((p.x, p.y), POINT_RADIUS, colour(0).filled())),
        )?;
        chart.draw_series(
            points
                .iter()
                .filter(|p| p.marked)
                .map(|p| Circle::new((p.x, p.y), MARKED_RADIUS, MARK_COLOUR.stroke_width(2))),
        )?;
        if text && points.len() <= MAX_POINT_LABELS {
            // Beside the marker (a pixel offset from the point), not on it.
            chart.draw_series(points.iter().map(|p| {
                EmptyElement::at((p.x, p.y))
                    + Text::new(
                        p.label.clone(),
                        (LABEL_OFFSET.0, LABEL_OFFSET.1),
                        ("sans-serif", LEGEND_FONT).into_font(),
                    )
            }))?;
        }
        Ok(())
    })
}

/// One model's ROC curve and, optionally, its bootstrap band.
pub struct RocSeries<'a> {
    pub label: String,
    pub fpr: &'a [f64],
    pub tpr: &'a [f64],
    pub band: Option<&'a RocBand>,
}

/// ROC curves (step curves at every threshold) with their pointwise bands.
pub fn roc(title: &str, series: &[RocSeries<'_>]) -> Result<String> {
    render(title, PANEL, |root, text| {
        let mut chart = panel(
            root,
            text,
            (title, CAPTION_FONT),
            (0.0..1.0, 0.0..1.0),
            ("false positive rate", "true positive rate"),
        )?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], GUIDE_COLOUR.stroke_width(1)))?;
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            if let Some(band) = s.band {
                let upper = band.fpr.iter().zip(&band.tpr_high).map(|(&x, &y)| (x, y));
                let lower = band.fpr.iter().zip(&band.tpr_low).rev().map(|(&x, &y)| (x, y));
                chart.draw_series(std::iter::once(Polygon::new(
                    upper.chain(lower).collect::<Vec<_>>(),
                    c.mix(BAND_ALPHA).filled(),
                )))?;
            }
            let line = chart.draw_series(LineSeries::new(
                s.fpr.iter().zip(s.tpr).map(|(&x, &y)| (x, y)),
                c.stroke_width(2),
            ))?;
            if text {
                line.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2))
                });
            }
        }
        if text && !series.is_empty() {
            legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        Ok(())
    })
}

/// Observed rate against mean predicted probability per non-empty bin, the identity as the
/// perfectly calibrated guide.
pub fn reliability(title: &str, series: &[(String, &Reliability)]) -> Result<String> {
    render(title, PANEL, |root, text| {
        let mut chart = panel(
            root,
            text,
            (title, CAPTION_FONT),
            (0.0..1.0, 0.0..1.0),
            ("mean predicted probability", "observed frequency"),
        )?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], GUIDE_COLOUR.stroke_width(1)))?;
        for (i, (label, rel)) in series.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = rel
                .bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.mean_predicted, b.observed_rate))
                .collect();
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, POINT_RADIUS, c.filled())))?;
            let line = chart.draw_series(LineSeries::new(pts, c.stroke_width(2)))?;
            if text {
                line.label(format!("{label} (ECE {:.3})", rel.ece)).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2))
                });
            }
        }
        if text && !series.is_empty() {
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        Ok(())
    })
}

/// Histogram of `values` on [0, 1] in `bins` equal bins, with a vertical line at `marker`.
pub fn histogram(
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    marker: Option<(f64, &str)>,
) -> Result<String> {
    let bins = bins.max(1);
    let mut counts = vec![0usize; bins];
    for &v in values {
        let b = ((v.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    render(title, PANEL, |root, text| {
        let mut chart = panel(
            root,
            text,
            (title, CAPTION_FONT),
            (0.0..1.0, 0.0..top * 1.1),
            (x_label, "images"),
        )?;
        let w = 1.0 / bins as f64;
        chart.draw_series(counts.iter().enumerate().map(|(i, &n)| {
            Rectangle::new(
                [(i as f64 * w, 0.0), ((i + 1) as f64 * w, n as f64)],
                colour(0).mix(0.7).filled(),
            )
        }))?;
        if let Some((x, label)) = marker {
            let line = chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, top * 1.1)],
                MARK_COLOUR.stroke_width(2),
            ))?;
            if text {
                line.label(label.to_string()).legend(|(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], MARK_COLOUR.stroke_width(2))
                });
                legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
            }
        }
        Ok(())
    })
}

/// One curve of a learning-curve panel: (epoch, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn curve_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    curves: &[Curve],
    y_range: (f64, f64),
    text: bool,
) -> DrawResult<()> {
    let max_epoch = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    // Epochs count from 1; half an epoch of room on each side keeps the end markers whole.
    let (x0, x1) = (1.0 - EPOCH_PAD, max_epoch + EPOCH_PAD);
    let mut chart = panel(
        area,
        text,
        (title, CAPTION_FONT - 2),
        (x0..x1, y_range.0..y_range.1),
        ("epoch", y_desc),
    )?;
    for (i, c) in curves.iter().enumerate() {
        let col = colour(i);
        chart.draw_series(c.points.iter().map(|&p| Circle::new(p, 2, col.filled())))?;
        let line = chart.draw_series(LineSeries::new(c.points.clone(), col.stroke_width(2)))?;
        if text {
            line.label(c.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], col.stroke_width(2)));
        }
    }
    if text && !curves.is_empty() {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

/// Losses (left) and validation scores on [0, 1] (right) against the epoch; the losses alone
/// when there are no scores (a run without a validation split).
pub fn learning_curves(
    title: &str,
    losses: &[Curve],
    scores: &[Curve],
    score_desc: &str,
) -> Result<String> {
    let max_loss = losses
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    if scores.is_empty() {
        return render(title, PANEL, |root, text| {
            curve_panel(root, &format!("{title}: loss"), "loss", losses, (0.0, max_loss), text)
        });
    }
    render(title, WIDE, |root, text| {
        let (left, right) = root.split_horizontally(WIDE.0 / 2);
        curve_panel(&left, &format!("{title}: loss"), "loss", losses, (0.0, max_loss), text)?;
        curve_panel(&right, &format!("{title}: validation"), score_desc, scores, (0.0, 1.0), text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plot_is_one_svg_element() {
        let pts = vec![
            ScatterPoint { label: "a<b".into(), x: 0.7, y: 0.6, marked: true },
            ScatterPoint { label: "c".into(), x: 0.8, y: 0.75, marked: false },
        ];
        let s = scatter("t", "x", "y", &pts, None).unwrap();
        assert_eq!(s.matches("<svg").count(), 1);
        assert!(!s.contains("a<b"), "text is escaped");
        let h = histogram("h", "Jaccard", &[0.1, 0.7, 0.9], 10, Some((0.65, "0.65"))).unwrap();
        assert_eq!(h.matches("<svg").count(), 1);
        let c = Curve { label: "train".into(), points: vec![(1.0, 0.5), (2.0, 0.3)] };
        let one = std::slice::from_ref(&c);
        let l = learning_curves("run", one, one, "AUC").unwrap();
        assert_eq!(l.matches("<svg").count(), 1);
        // A steep line is cut at the top and bottom edges, not bent along them.
        let ((x0, y0), (x1, y1)) = clip_line(4.0, -1.6, 0.2, 0.7).unwrap();
        assert!((y0 - 0.2).abs() < 1e-12 && (y1 - 0.7).abs() < 1e-12);
        assert!((x0 - 0.45).abs() < 1e-12 && (x1 - 0.575).abs() < 1e-12);
        assert!(clip_line(0.0, 0.9, 0.2, 0.7).is_none());
        let (lo, hi) = unit_range([0.7, 0.72].into_iter());
        assert!((lo - 0.61).abs() < 1e-9 && (hi - 0.81).abs() < 1e-9, "{lo} {hi}");
    }
}
