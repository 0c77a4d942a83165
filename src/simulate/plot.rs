//! `simulate --plot FILE.svg`: the scenario over time under both policies, one panel per
//! measure — schedulable nodes, pods waiting, free block slots, the fullest node.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Report, Sample};

#[derive(Debug, thiserror::Error)]
#[error("plotting to {path}: {reason}")]
pub struct PlotError {
    path: String,
    reason: String,
}

/// One panel: its title and the value it shows of a sample.
struct Panel {
    title: &'static str,
    value: fn(&Sample) -> i64,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "schedulable nodes",
        value: |s| s.schedulable_nodes,
    },
    Panel {
        title: "pods waiting (Pending or stuck ContainerCreating)",
        value: |s| s.waiting_pods,
    },
    Panel {
        title: "free block slots under the soft cap",
        value: |s| s.free_block_slots,
    },
    Panel {
        title: "block volumes on the fullest node",
        value: |s| s.fullest_node,
    },
];

const HEADROOM: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const KPROXIMATE: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Draws `headroom` (the proactive policy) against `kproximate` (the reactive one) into an
/// SVG file at `path`, titled `title`.
pub fn plot(path: &Path, title: &str, headroom: &Report, kproximate: &Report) -> Result<(), PlotError> {
    draw(path, title, headroom, kproximate).map_err(|reason| PlotError {
        path: path.display().to_string(),
        reason,
    })
}

fn draw(path: &Path, title: &str, headroom: &Report, kproximate: &Report) -> Result<(), String> {
    let end = [headroom, kproximate]
        .iter()
        .filter_map(|r| r.series.last().map(|s| s.t))
        .max()
        .unwrap_or(0)
        .max(60);
    // Hours past three hours, minutes before.
    let (unit, per) = if end > 3 * 3600 {
        ("hours", 3600.0)
    } else {
        ("minutes", 60.0)
    };
    let root = SVGBackend::new(path, (1000, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    for (panel, area) in PANELS.iter().zip(root.split_evenly((PANELS.len(), 1))) {
        let values = [headroom, kproximate]
            .iter()
            .flat_map(|r| r.series.iter().map(panel.value))
            .collect::<Vec<i64>>();
        let lo = values.iter().copied().min().unwrap_or(0).min(0);
        let hi = values.iter().copied().max().unwrap_or(1).max(lo + 1);
        let mut chart = ChartBuilder::on(&area)
            .caption(panel.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..end as f64 / per, lo as f64..(hi + 1) as f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(unit)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (report, color, name) in [
            (headroom, HEADROOM, "headroom"),
            (kproximate, KPROXIMATE, "kproximate"),
        ] {
            chart
                .draw_series(LineSeries::new(
                    steps(&report.series, panel.value, end, per),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// The samples as a step line: a value holds until the next sample, and the last until `end`.
fn steps(series: &[Sample], value: fn(&Sample) -> i64, end: u64, per: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(series.len() * 2 + 1);
    for (i, s) in series.iter().enumerate() {
        let v = value(s) as f64;
        points.push((s.t as f64 / per, v));
        let until = series.get(i + 1).map_or(end, |next| next.t);
        points.push((until as f64 / per, v));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_holds_until_the_next_sample() {
        let sample = |t, v| Sample {
            t,
            schedulable_nodes: v,
            waiting_pods: 0,
            free_block_slots: 0,
            fullest_node: 0,
        };
        let points = steps(
            &[sample(0, 3), sample(120, 4)],
            |s| s.schedulable_nodes,
            300,
            60.0,
        );
        assert_eq!(points, [(0.0, 3.0), (2.0, 3.0), (2.0, 4.0), (5.0, 4.0)]);
    }
}
