//! Training curves as a PNG or SVG image: one panel per group of metrics (loss, rewards,
//! accuracy), steps on the x axis, a legend in each panel.
//!
//! Text is laid out with DejaVu Sans, embedded in the binary (the `dejavu` crate) and handed to
//! plotters' pure-Rust `ab_glyph` rasterizer, so drawing needs no system fonts, fontconfig or
//! freetype. PNG files are encoded with the `png` crate from plotters' RGB buffer; SVG text is
//! left to the viewer's sans-serif font, with DejaVu's metrics for the layout.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// One line in a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// (step, value); non-finite values leave a gap in the line.
    pub points: Vec<(i64, f64)>,
    /// Index into the palette, so that a train metric and its eval twin share a color.
    pub color: usize,
    /// Dashed (evaluation) or solid (training).
    pub dashed: bool,
}

/// One chart of the figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    /// A fixed y range (accuracy: 0 to 1); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot tell which image format to write from {0:?}: name the file .png or .svg")]
    UnknownFormat(PathBuf),
    #[error("nothing to plot: the run has no loss, reward or accuracy metrics yet")]
    NoData,
    #[error("could not draw the plot: {0}")]
    Draw(String),
    #[error("could not write the plot to {path:?}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The panels of a DPO (or SFT) run from its metrics, named as TRL names them (`loss`,
/// `rewards/margins`, ..., and `eval_` + the same for evaluations): loss, rewards and accuracy,
/// each with the metrics the run has. Other metrics (learning rate, grad norm, log-probs) are
/// left out; panels with no metric are dropped.
pub fn training_panels(metrics: Vec<(String, Vec<(i64, f64)>)>) -> Vec<Panel> {
    const GROUPS: &[(&str, &str, Option<(f64, f64)>, &[(&str, &str, usize)])] = &[
        ("Loss", "loss", None, &[("loss", "train", 0), ("eval_loss", "eval", 1)]),
        (
            "Rewards",
            "implicit reward",
            None,
            &[
                ("rewards/margins", "margins", 0),
                ("rewards/chosen", "chosen", 2),
                ("rewards/rejected", "rejected", 3),
                ("eval_rewards/margins", "eval margins", 0),
                ("eval_rewards/chosen", "eval chosen", 2),
                ("eval_rewards/rejected", "eval rejected", 3),
            ],
        ),
        (
            "Accuracy",
            "chosen reward > rejected",
            Some((0.0, 1.0)),
            &[("rewards/accuracies", "train", 0), ("eval_rewards/accuracies", "eval", 1)],
        ),
    ];
    let mut metrics = metrics;
    GROUPS
        .iter()
        .filter_map(|&(title, y_label, y_range, members)| {
            let series: Vec<Series> = members
                .iter()
                .filter_map(|&(metric, label, color)| {
                    let position = metrics.iter().position(|(name, _)| name == metric)?;
                    let (_, points) = metrics.swap_remove(position);
                    Some(Series { name: label.to_string(), points, color, dashed: metric.starts_with("eval_") })
                })
                .collect();
            (!series.is_empty()).then(|| Panel { title: title.into(), y_label: y_label.into(), y_range, series })
        })
        .collect()
}

/// Draws `panels` one under the other below `title` and writes the image to `path`: PNG or SVG
/// by its extension.
pub fn write_plot(path: &Path, title: &str, panels: &[Panel]) -> Result<(), PlotError> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let format = match extension.as_deref() {
        Some("png") => Format::Png,
        Some("svg") => Format::Svg,
        _ => return Err(PlotError::UnknownFormat(path.to_path_buf())),
    };
    if panels.is_empty() {
        return Err(PlotError::NoData);
    }
    register_font()?;
    let size = (WIDTH, TITLE_HEIGHT + PANEL_HEIGHT * panels.len() as u32);
    let bytes = match format {
        Format::Svg => {
            let mut svg = String::new();
            draw(SVGBackend::with_string(&mut svg, size).into_drawing_area(), title, panels)?;
            svg.into_bytes()
        }
        Format::Png => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            draw(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(), title, panels)?;
            encode_png(&rgb, size)?
        }
    };
    std::fs::write(path, bytes).map_err(|source| PlotError::Write { path: path.to_path_buf(), source })
}

enum Format {
    Png,
    Svg,
}

const WIDTH: u32 = 1000;
const TITLE_HEIGHT: u32 = 50;
const PANEL_HEIGHT: u32 = 340;
const FONT: &str = "sans-serif";
/// Series with this many points or fewer get a marker on each point (evaluations are sparse).
const MARKED_POINTS: usize = 40;
/// Colorblind-safe (Okabe-Ito) colors.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Draw("the embedded DejaVu Sans font could not be loaded".into())) }
}

fn encode_png(rgb: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>, PlotError> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let failed = |e: png::EncodingError| PlotError::Draw(format!("PNG encoding failed: {e}"));
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(rgb).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(bytes)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, panels: &[Panel]) -> Result<(), PlotError> {
    let failed = |e: DrawingAreaErrorKind<DB::ErrorType>| PlotError::Draw(e.to_string());
    root.fill(&WHITE).map_err(failed)?;
    let body = root.titled(title, (FONT, 26)).map_err(failed)?;
    for (area, panel) in body.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel).map_err(failed)?;
    }
    root.present().map_err(failed)
}

/// Runs of consecutive finite points, in step order: a NaN or infinity breaks the line.
fn segments(points: &[(i64, f64)]) -> Vec<Vec<(i64, f64)>> {
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|&(step, _)| step);
    sorted.split(|(_, value)| !value.is_finite()).filter(|run| !run.is_empty()).map(<[_]>::to_vec).collect()
}

/// The x and y ranges that show every finite point with a little room around it.
fn ranges(panel: &Panel) -> (std::ops::Range<i64>, std::ops::Range<f64>) {
    let finite = || panel.series.iter().flat_map(|s| &s.points).filter(|(_, v)| v.is_finite());
    let (x_min, x_max) = finite().fold((i64::MAX, i64::MIN), |(lo, hi), &(x, _)| (lo.min(x), hi.max(x)));
    let (y_min, y_max) = match panel.y_range {
        Some(range) => range,
        None => finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| (lo.min(y), hi.max(y))),
    };
    let x = match (x_min, x_max) {
        (i64::MAX, _) => 0..1,
        (lo, hi) if lo == hi => lo.saturating_sub(1)..hi.saturating_add(1),
        (lo, hi) => lo..hi,
    };
    let y = if !(y_min.is_finite() && y_max.is_finite()) {
        0.0..1.0
    } else if y_min == y_max {
        let pad = (y_min.abs() * 0.1).max(0.1);
        y_min - pad..y_max + pad
    } else {
        let pad = (y_max - y_min) * 0.05;
        y_min - pad..y_max + pad
    };
    (x, y)
}

/// The corner of the plot where the legend hides the fewest data: the one that the lines
/// cross least, sampled along each segment (upper right first when several are free).
fn legend_corner(panel: &Panel, x: &std::ops::Range<i64>, y: &std::ops::Range<f64>) -> SeriesLabelPosition {
    // The legend's share of the plot area, from its size in pixels: about 8 px a character
    // plus the sample line, 19 px a row; the plot area is the panel less axes and caption.
    let longest = panel.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0);
    let width = (40.0 + 8.0 * longest as f64) / f64::from(WIDTH - 100);
    let height = (16.0 + 19.0 * panel.series.len() as f64) / f64::from(PANEL_HEIGHT - 100);
    let (x_span, y_span) = ((x.end - x.start).max(1) as f64, y.end - y.start);
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let mut crossings = [0usize; 4];
    for series in &panel.series {
        for run in segments(&series.points) {
            let pairs = run.windows(2).map(|w| (w[0], w[1])).chain((run.len() == 1).then(|| (run[0], run[0])));
            for ((x0, y0), (x1, y1)) in pairs {
                for t in 0..=16 {
                    let t = f64::from(t) / 16.0;
                    let u = ((x0 as f64 + t * (x1 - x0) as f64) - x.start as f64) / x_span;
                    let v = ((y0 + t * (y1 - y0)) - y.start) / y_span;
                    for (count, &(_, right, upper)) in crossings.iter_mut().zip(&corners) {
                        let in_x = if right { u > 1.0 - width } else { u < width };
                        let in_y = if upper { v > 1.0 - height } else { v < height };
                        *count += usize::from(in_x && in_y);
                    }
                }
            }
        }
    }
    let best = (0..4).min_by_key(|&i| crossings[i]).unwrap_or(0);
    corners.into_iter().nth(best).map_or(SeriesLabelPosition::UpperRight, |c| c.0)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (x_range, y_range) = ranges(panel);
    let has_data = panel.series.iter().any(|s| s.points.iter().any(|(_, v)| v.is_finite()));
    let caption = if has_data { panel.title.clone() } else { format!("{} (no finite values)", panel.title) };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(panel.y_label.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .x_labels(10)
        .y_labels(8)
        .draw()?;
    for series in &panel.series {
        let color = PALETTE[series.color % PALETTE.len()];
        let style = color.stroke_width(2);
        let dashed = series.dashed;
        let runs = segments(&series.points);
        let finite_points: usize = runs.iter().map(Vec::len).sum();
        let label =
            if finite_points == 0 { format!("{} (no finite values)", series.name) } else { series.name.clone() };
        // The legend entry is attached to an element drawn once, whatever the number of segments.
        chart.draw_series(std::iter::empty::<PathElement<(i64, f64)>>())?.label(label).legend(move |(x, y)| {
            // Two strokes: touching for a solid line, apart for a dashed one.
            let gap = if dashed { 6 } else { 0 };
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (12 - gap / 2, 0)], style)
                + PathElement::new(vec![(12 + gap / 2, 0), (24, 0)], style)
        });
        for run in &runs {
            if dashed {
                chart.draw_series(DashedLineSeries::new(run.iter().copied(), 8, 5, style))?;
            } else {
                chart.draw_series(LineSeries::new(run.iter().copied(), style))?;
            }
            if run.len() == 1 || finite_points <= MARKED_POINTS {
                chart.draw_series(run.iter().map(|&point| Circle::new(point, 3, color.filled())))?;
            }
        }
    }
    let corner = legend_corner(panel, &chart.x_range(), &chart.y_range());
    chart
        .configure_series_labels()
        .position(corner)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
}

#[cfg(test)]
#[path = "plot_tests.rs"]
mod tests;
