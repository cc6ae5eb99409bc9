//! entropy.svg: H(Y | X_t) (tracked, exact, per class, per decision problem) and the rates
//! −dH/dλ against log-SNR λ, in bits, drawn with plotters' SVG backend.

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

/// A finite, non-empty axis range from data bounds (which may be empty: ±∞, or equal, or
/// beyond what the axis code can step through): plotters loops forever on a non-finite range.
fn axis_range(lo: f64, hi: f64) -> (f64, f64) {
    const BIG: f64 = 1e300;
    if !(lo.is_finite() && hi.is_finite()) || lo.abs() > BIG || hi.abs() > BIG {
        return if lo.is_finite() && lo.abs() <= BIG {
            (lo - 1.0, lo + 1.0)
        } else {
            (-1.0, 1.0)
        };
    }
    if lo < hi {
        // a span too small to step through in f64 is widened
        let span = (hi - lo).max(1e-9 * lo.abs().max(hi.abs()));
        if span > hi - lo {
            let mid = 0.5 * (lo + hi);
            return (mid - span, mid + span);
        }
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    }
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Draws named curves (series from index `thin_from` on in thin lines) and their legend.
fn draw_curves<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    series: Vec<(String, Vec<(f64, f64)>)>,
    thin_from: usize,
    legend: SeriesLabelPosition,
) -> Result<()> {
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let width = if i >= thin_from { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(pts, col.stroke_width(width)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
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

/// Renders the plot as SVG text.
pub fn entropy_svg(c: &Curves) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(450);
        let lam = &c.log_snr;
        let finite: Vec<f64> = lam.iter().cloned().filter(|v| v.is_finite()).collect();
        let (lo, hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (lo, hi) = axis_range(lo, hi);

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
        for (k, h) in c.class_h.iter().enumerate() {
            h_series.push((
                format!("H(Y|X_t) class {k}"),
                series(lam, h.iter().map(|v| Some(*v))),
            ));
        }
        let (_, hmax) = axis_range(0.0, bits(c.prior_entropy).max(1e-3) * 1.05);
        let mut chart = ChartBuilder::on(&top)
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
        // Per-class curves (after the tracked, exact and partition ones) in thin lines.
        let thin_from = 2 + c.partitions.len();
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
            r_series.push((
                format!("−dH/dλ {}", p.name),
                per_lambda(&p.rate.iter().map(|v| Some(*v)).collect::<Vec<_>>()),
            ));
        }
        let rmax = r_series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1e-6)
            * 1.05;
        let rmin = r_series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(0.0f64, f64::min);
        let (rmin, rmax) = axis_range(rmin, rmax);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("Entropy rates", ("sans-serif", 20))
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
            r_series,
            usize::MAX,
            SeriesLabelPosition::UpperRight,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
