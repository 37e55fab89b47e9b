//! A hand-written SVG of the side-by-side runs: one row of panels per workload that
//! both systems ran, throughput on the left and p99 latency on the right, client
//! counts on a log₂ x axis, one line per system (medians over rounds). No plotting
//! library: the figure is simple enough to write as text.

use std::fmt::Write;

use crate::summary::{shared_workloads, Summary};

const PANEL_WIDTH: f64 = 440.0;
const PANEL_HEIGHT: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;
const HEADER: f64 = 60.0;
const SYSTEMS: [(&str, &str); 2] = [("conclave", "#1f77b4"), ("etcd", "#ff7f0e")];

/// One system's line in a panel: (clients, value) in client order.
struct Series {
    system: &'static str,
    colour: &'static str,
    values: Vec<(u64, f64)>,
}

/// Which median a panel plots.
#[derive(Clone, Copy)]
enum Metric {
    Throughput,
    P99,
}

impl Metric {
    fn value(self, point: &crate::summary::Point) -> f64 {
        match self {
            Metric::Throughput => point.ops_per_sec,
            Metric::P99 => point.p99_us / 1000.0,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput (ops/s, higher is better)",
            Metric::P99 => "p99 latency (ms, lower is better)",
        }
    }
}

/// A 1-2-5 step that splits `max` into about four intervals.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let rough = max / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude)
}

fn format_tick(value: f64) -> String {
    if value >= 1000.0 {
        format!("{}k", value / 1000.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart; `title` goes on top (e.g. the machine and date).
pub fn render(summary: &Summary, title: &str) -> String {
    let workloads = shared_workloads(summary);
    let width = 2.0 * PANEL_WIDTH;
    let height = HEADER + PANEL_HEIGHT * workloads.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (index, (system, colour)) in SYSTEMS.iter().enumerate() {
        let x = width / 2.0 - 90.0 + index as f64 * 110.0;
        let _ = writeln!(
            svg,
            r#"<g class="legend"><line x1="{x}" y1="42" x2="{}" y2="42" stroke="{colour}" stroke-width="3"/><text x="{}" y="46">{system}</text></g>"#,
            x + 24.0,
            x + 30.0
        );
    }
    if workloads.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no workload was run on both systems</text>"#,
            width / 2.0,
            HEADER + 40.0
        );
    }
    for (row, workload) in workloads.iter().enumerate() {
        for (column, metric) in [Metric::Throughput, Metric::P99].into_iter().enumerate() {
            let origin = (
                column as f64 * PANEL_WIDTH,
                HEADER + row as f64 * PANEL_HEIGHT,
            );
            panel(&mut svg, summary, workload, metric, origin);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn panel(svg: &mut String, summary: &Summary, workload: &str, metric: Metric, origin: (f64, f64)) {
    let series: Vec<Series> = SYSTEMS
        .iter()
        .filter_map(|(system, colour)| {
            let points = summary.get(&(system.to_string(), workload.to_owned()))?;
            let values = points
                .iter()
                .map(|(clients, point)| (*clients, metric.value(point)))
                .collect();
            Some(Series {
                system,
                colour,
                values,
            })
        })
        .collect();
    let clients: Vec<u64> = {
        let mut all: Vec<u64> = series
            .iter()
            .flat_map(|line| line.values.iter().map(|(c, _)| *c))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    let log = |c: u64| (c.max(1) as f64).log2();
    let (x_min, x_max) = (
        clients.first().map_or(0.0, |c| log(*c)),
        clients.last().map_or(1.0, |c| log(*c)),
    );
    let y_max_value = series
        .iter()
        .flat_map(|line| line.values.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let step = nice_step(y_max_value);
    let y_max = (y_max_value / step).ceil().max(1.0) * step;
    let (left, top) = (origin.0 + LEFT, origin.1 + TOP);
    let (plot_width, plot_height) = (PANEL_WIDTH - LEFT - RIGHT, PANEL_HEIGHT - TOP - BOTTOM);
    let x_of = |c: u64| {
        let span = (x_max - x_min).max(1e-9);
        let fraction = if clients.len() > 1 {
            (log(c) - x_min) / span
        } else {
            0.5
        };
        left + fraction * plot_width
    };
    let y_of = |v: f64| top + plot_height - v / y_max * plot_height;
    let _ = writeln!(
        svg,
        r#"<g class="panel" data-workload="{}"><text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}: {}</text>"#,
        escape(workload),
        left + plot_width / 2.0,
        top - 10.0,
        escape(workload),
        metric.title()
    );
    let mut tick = 0.0;
    while tick <= y_max + step / 2.0 {
        let y = y_of(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_width,
            left - 6.0,
            y + 4.0,
            format_tick(tick)
        );
        tick += step;
    }
    for c in &clients {
        let x = x_of(*c);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{c}</text>"##,
            top + plot_height,
            top + plot_height + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{:.1}" text-anchor="middle" fill="#555">clients</text>"##,
        left + plot_width / 2.0,
        top + plot_height + 32.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#888"/>"##
    );
    for Series {
        system,
        colour,
        values,
    } in series
    {
        let points: Vec<String> = values
            .iter()
            .map(|(c, v)| format!("{:.1},{:.1}", x_of(*c), y_of(*v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<g class="series {system}"><polyline points="{}" fill="none" stroke="{colour}" stroke-width="2.5"/>"#,
            points.join(" ")
        );
        for (c, v) in &values {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{system}, {c} clients: {v:.2}</title></circle>"#,
                x_of(*c),
                y_of(*v)
            );
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(10_000.0), 5_000.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(format_tick(2500.0), "2.5k");
        assert_eq!(format_tick(4.0), "4");
    }
}
