//! entropy.svg: three panels against log-SNR λ, in bits, drawn with plotters' SVG backend:
//! H(Y | X_t) (tracked, exact, per class, per decision problem); the rates −dH/dλ of the label
//! (Rao–Blackwell and finite difference) and of each decision problem (Rao–Blackwell); and the
//! per-class rates. Within a panel every curve has its own (colour, dash) pair ([`style`]).

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::info::{Curves, bits};

const COLORS: [RGBColor; 10] = [
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

fn err(e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: "entropy.svg".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Points (λ, bits(v)) where both are finite.
fn series(l: &[f64], v: impl Iterator<Item = Option<f64>>) -> Vec<(f64, f64)> {
    l.iter()
        .zip(v)
        .filter_map(|(&x, y)| {
            y.filter(|y| y.is_finite() && x.is_finite())
                .map(|y| (x, bits(y)))
        })
        .collect()
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// How a curve is stroked: solid, dashed or dotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// The style of the i-th curve of a panel: ten colours, then the same ten dashed, then dotted,
/// so up to 30 curves in a panel differ in colour or dash (then it repeats).
pub fn style(i: usize) -> (RGBColor, Dash) {
    let dash = [Dash::Solid, Dash::Dashed, Dash::Dotted][(i / COLORS.len()) % 3];
    (COLORS[i % COLORS.len()], dash)
}

/// Draws named curves (series from index `thin_from` on in thin lines) and their legend.
fn draw_curves<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    series: Vec<(String, Vec<(f64, f64)>)>,
    thin_from: usize,
    legend: SeriesLabelPosition,
) -> Result<()> {
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let (col, dash) = style(i);
        let width = if i >= thin_from { 1 } else { 2 };
        let st = col.stroke_width(width);
        let drawn = match dash {
            Dash::Solid => chart.draw_series(LineSeries::new(pts, st)),
            Dash::Dashed => chart.draw_series(DashedLineSeries::new(pts, 8, 5, st)),
            Dash::Dotted => chart.draw_series(DashedLineSeries::new(pts, 2, 4, st)),
        }
        .map_err(err)?;
        drawn.label(name).legend(move |(x, y)| {
            let st = col.stroke_width(2);
            match dash {
                Dash::Solid => PathElement::new(vec![(x, y), (x + 20, y)], st).into_dyn(),
                Dash::Dashed => {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 3, st).into_dyn()
                }
                Dash::Dotted => {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 2, 3, st).into_dyn()
                }
            }
        });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// A finite, non-empty axis range covering the finite values of `v`, padded by `pad` of its span
/// on each side: plotters loops forever on a non-finite range, and cannot step through a span
/// too small for f64 or bounds past ±1e300, so those are replaced (empty or all non-finite:
/// 0..1; one value, or a span below 1e-9 of the bounds: that value ± 1; past ±1e300: clamped).
fn axis_range(v: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    const BIG: f64 = 1e300;
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .map(|x| x.clamp(-BIG, BIG))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo > 1e-9 * lo.abs().max(hi.abs()) {
        let m = (hi - lo) * pad;
        ((lo - m).max(-BIG), (hi + m).min(BIG))
    } else {
        let mid = 0.5 * (lo + hi);
        let w = 1.0f64.max(1e-9 * mid.abs());
        (mid - w, mid + w)
    }
}

/// Renders the plot as SVG text.
pub fn entropy_svg(c: &Curves) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 1350)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((3, 1));
        let lam = &c.log_snr;
        let (lo, hi) = axis_range(lam.iter().cloned(), 0.0);

        // Entropies.
        let mut h_series: Vec<(String, Vec<(f64, f64)>)> = vec![(
            format!("H(Y|X_t) {}", c.tracking.name()),
            series(lam, c.h_online.iter().map(|v| Some(*v))),
        )];
        if c.h_exact.iter().any(|v| v.is_some()) {
            h_series.push((
                "H(Y|X_t) exact".into(),
                series(lam, c.h_exact.iter().cloned()),
            ));
        }
        for p in &c.partitions {
            h_series.push((
                format!("H(Z|X_t) {}", p.name),
                series(lam, p.h.iter().map(|v| Some(*v))),
            ));
        }
        // Per-class curves (after the tracked, exact and partition ones) in thin lines.
        let thin_from = h_series.len();
        for (k, h) in c.class_h.iter().enumerate() {
            h_series.push((
                format!("H(Y|X_t) class {k}"),
                series(lam, h.iter().map(|v| Some(*v))),
            ));
        }
        let hmax = bits(c.prior_entropy).max(1e-3) * 1.05;
        let hmax = if hmax.is_finite() { hmax } else { 1.0 };
        let mut chart = ChartBuilder::on(&panels[0])
            .caption(
                "Conditional entropy along the generative trajectory",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..hmax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("log-SNR λ = ln(s²/σ²)")
            .y_desc("bits")
            .draw()
            .map_err(err)?;
        draw_curves(
            &mut chart,
            h_series,
            thin_from,
            SeriesLabelPosition::UpperLeft,
        )?;

        // Rates per unit log-SNR: −dH/dλ = (dH/dt)/(−dλ/dt).
        let dl = crate::info::curves::finite_difference(&c.t, lam);
        let per_lambda = |r: &[Option<f64>]| -> Vec<(f64, f64)> {
            series(
                lam,
                r.iter().zip(&dl).map(|(v, d)| {
                    v.and_then(|v| {
                        if *d < 0.0 && d.is_finite() {
                            Some(-v / d)
                        } else {
                            None
                        }
                    })
                }),
            )
        };
        let mut r_series: Vec<(String, Vec<(f64, f64)>)> = vec![
            ("−dH/dλ Rao–Blackwell".into(), per_lambda(&c.rate_rb)),
            (
                "−dH/dλ finite difference".into(),
                per_lambda(&c.rate_fd.iter().map(|v| Some(*v)).collect::<Vec<_>>()),
            ),
        ];
        for p in &c.partitions {
            r_series.push((format!("−dH/dλ {}", p.name), per_lambda(&p.rate)));
        }
        let class_series: Vec<(String, Vec<(f64, f64)>)> = c
            .class_rate
            .iter()
            .enumerate()
            .map(|(k, r)| (format!("−dH/dλ class {k}"), per_lambda(r)))
            .collect();
        for (panel, (caption, series_)) in panels[1..].iter().zip([
            ("Entropy rates: label and decision problems", r_series),
            ("Per-class entropy rates (Rao–Blackwell)", class_series),
        ]) {
            let (rmin, rmax) = axis_range(
                series_
                    .iter()
                    .flat_map(|(_, s)| s.iter().map(|p| p.1))
                    .chain([0.0]),
                0.05,
            );
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(lo..hi, rmin..rmax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("log-SNR λ")
                .y_desc("bits per unit log-SNR")
                .draw()
                .map_err(err)?;
            draw_curves(
                &mut chart,
                series_,
                usize::MAX,
                SeriesLabelPosition::UpperRight,
            )?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// loss.svg: the training loss against the step on a log₁₀ axis, each step's loss in a thin
/// line and its exponential moving average (time constant 1/50 of the run, at least 10 steps)
/// in a thick one. Non-finite and non-positive losses are left out.
pub fn loss_svg(steps: &[f64], loss: &[f64]) -> Result<String> {
    let lerr = |e: &dyn std::fmt::Display| Error::Io {
        path: "loss.svg".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .zip(loss)
        .filter(|(s, l)| s.is_finite() && l.is_finite() && **l > 0.0)
        .map(|(s, l)| (*s, l.log10()))
        .collect();
    let tau = (pts.len() as f64 / 50.0).max(10.0);
    let a = 1.0 / tau;
    let mut smooth = Vec::with_capacity(pts.len());
    let mut m: Option<f64> = None;
    for &(s, l) in &pts {
        let v = m.map_or(l, |m| m + a * (l - m));
        m = Some(v);
        smooth.push((s, v));
    }
    let (x0, x1) = axis_range(pts.iter().map(|p| p.0), 0.0);
    let (y0, y1) = axis_range(pts.iter().map(|p| p.1), 0.05);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| lerr(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Training loss (DSM)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| lerr(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("log₁₀ loss")
            .draw()
            .map_err(|e| lerr(&e))?;
        let light = COLORS[0].mix(0.35).stroke_width(1);
        chart
            .draw_series(LineSeries::new(pts, light))
            .map_err(|e| lerr(&e))?
            .label("loss per step")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light));
        let dark = COLORS[1].stroke_width(2);
        chart
            .draw_series(LineSeries::new(smooth, dark))
            .map_err(|e| lerr(&e))?
            .label(format!("moving average ({tau:.0} steps)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], dark));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| lerr(&e))?;
        root.present().map_err(|e| lerr(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to 30 curves in a panel, no two share both colour and dash.
    #[test]
    fn curve_styles_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..30 {
            let (c, d) = style(i);
            assert!(seen.insert((c.0, c.1, c.2, d)), "curve {i} repeats a style");
        }
    }

    #[test]
    fn axis_ranges_are_finite_and_non_empty() {
        for v in [
            vec![],
            vec![f64::INFINITY, f64::NAN],
            vec![2.0, 2.0],
            vec![-1e300, 1e300],
            vec![f64::MAX, f64::MIN],
            vec![1e20, 1e20 + 1.0],
            vec![f64::NEG_INFINITY, 3.0],
        ] {
            let (a, b) = axis_range(v.iter().cloned(), 0.05);
            assert!(a.is_finite() && b.is_finite() && a < b, "{v:?} -> {a}..{b}");
        }
    }
}
