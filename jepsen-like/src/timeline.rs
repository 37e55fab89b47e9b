//! The report's timeline picture: one SVG with every operation's latency against
//! the time it was invoked (log scale, coloured by outcome), the fault windows
//! shaded and labelled, and the healing instant marked. Hand-written SVG: no
//! plotting dependency.

use std::fmt::Write;

use crate::nemesis::FaultEvent;
use crate::workloads::{Op, Status};

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// Latency axis: 0.1 ms … 10 s, log scale; unknown operations sit on the top line.
const MIN_MS: f64 = 0.1;
const MAX_MS: f64 = 10_000.0;
/// Beyond this many operations, every n-th ok operation is drawn (all others are).
const MAX_POINTS: usize = 20_000;

/// Renders the timeline. `healed_ms` is when the nemesis stopped and healing began.
pub fn svg(title: &str, ops: &[Op], faults: &[FaultEvent], healed_ms: u64) -> String {
    let end_ms = ops
        .iter()
        .map(|op| op.complete_ns.unwrap_or(op.invoke_ns) / 1_000_000)
        .chain(faults.iter().map(|f| f.end_ms))
        .chain([healed_ms, 1])
        .max()
        .unwrap_or(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ms: f64| LEFT + plot_w * (ms / end_ms).clamp(0.0, 1.0);
    let y = |latency_ms: f64| {
        let l = latency_ms.clamp(MIN_MS, MAX_MS);
        TOP + plot_h * (1.0 - (l / MIN_MS).log10() / (MAX_MS / MIN_MS).log10())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="13">{}</text>"#,
        escape(title)
    );
    for fault in faults {
        let (x0, x1) = (x(fault.start_ms as f64), x(fault.end_ms as f64));
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#f4a6a6" fill-opacity="0.35"><title>{} node {} ({}–{} ms)</title></rect>"##,
            (x1 - x0).max(1.0),
            escape(&fault.kind),
            fault.node,
            fault.start_ms,
            fault.end_ms
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#a33" font-size="10">{} {}</text>"##,
            x0 + 2.0,
            TOP + 10.0,
            escape(&fault.kind),
            fault.node
        );
    }
    let hx = x(healed_ms as f64);
    let _ = writeln!(
        out,
        r##"<line x1="{hx:.1}" y1="{TOP}" x2="{hx:.1}" y2="{:.1}" stroke="#2a7" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#2a7">healed</text>"##,
        TOP + plot_h,
        hx + 3.0,
        TOP + plot_h - 4.0
    );
    // Axes and grid.
    let mut decade = MIN_MS;
    while decade <= MAX_MS {
        let gy = y(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            gy + 4.0,
            label_ms(decade)
        );
        decade *= 10.0;
    }
    let step_s = nice_step(end_ms / 1000.0);
    let mut t = 0.0;
    while t * 1000.0 <= end_ms {
        let gx = x(t * 1000.0);
        let _ = writeln!(
            out,
            r##"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{:.1}" stroke="#999"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{t}s</text>"##,
            TOP + plot_h,
            TOP + plot_h + 4.0,
            TOP + plot_h + 16.0
        );
        t += step_s;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">latency (log)</text><text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (invocation)</text>"##,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    // Points: ok thinned when there are very many; everything else always drawn.
    let ok_count = ops.iter().filter(|op| op.status == Status::Ok).count();
    let stride = (ok_count / MAX_POINTS).max(1);
    let mut ok_seen = 0usize;
    for op in ops {
        if op.status == Status::Ok {
            ok_seen += 1;
            if !ok_seen.is_multiple_of(stride) {
                continue;
            }
        }
        let px = x(op.invoke_ns as f64 / 1e6);
        let (py, colour) = match (op.status, op.complete_ns) {
            (Status::Unknown, _) | (_, None) => (TOP + 2.0, "#b0b"),
            (status, Some(done)) => (
                y(done.saturating_sub(op.invoke_ns) as f64 / 1e6),
                match status {
                    Status::Ok => "#1f77b4",
                    Status::Fail => "#ff7f0e",
                    Status::Unavailable => "#999",
                    Status::Unknown => "#b0b",
                },
            ),
        };
        let _ = writeln!(
            out,
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="1.6" fill="{colour}" fill-opacity="0.6"/>"#
        );
    }
    // Legend.
    for (i, (name, colour)) in [
        ("ok", "#1f77b4"),
        ("fail", "#ff7f0e"),
        ("unavailable", "#999"),
        ("unknown (top line)", "#b0b"),
        ("fault window", "#f4a6a6"),
    ]
    .iter()
    .enumerate()
    {
        let lx = WIDTH - RIGHT - 560.0 + i as f64 * 112.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="8" width="10" height="10" fill="{colour}"/><text x="{}" y="17">{name}</text>"#,
            lx + 14.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn label_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{}s", ms / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// A tick step (seconds) giving about 10–20 ticks.
fn nice_step(seconds: f64) -> f64 {
    [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|step| seconds / step <= 20.0)
        .unwrap_or(1200.0)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn op(status: Status, invoke_ms: u64, latency_ms: Option<u64>) -> Op {
        Op {
            process: 0,
            f: "write".into(),
            key: "k".into(),
            value: Value::Null,
            status,
            invoke_ns: invoke_ms * 1_000_000,
            complete_ns: latency_ms.map(|l| (invoke_ms + l) * 1_000_000),
            node: 1,
        }
    }

    #[test]
    fn draws_every_operation_and_shades_every_fault() {
        let ops = vec![
            op(Status::Ok, 100, Some(2)),
            op(Status::Fail, 200, Some(5)),
            op(Status::Unknown, 300, None),
            op(Status::Unavailable, 400, Some(1)),
        ];
        let faults = vec![FaultEvent {
            kind: "kill".into(),
            node: 2,
            pid: 1234,
            was_leader: true,
            start_ms: 150,
            end_ms: 350,
            nodes: vec![2],
            detail: Value::Null,
        }];
        let picture = svg("register × kill <seed 1>", &ops, &faults, 500);
        assert_eq!(picture.matches("<circle").count(), 4);
        assert!(picture.contains("kill node 2 (150–350 ms)"));
        assert!(picture.contains("&lt;seed 1&gt;"));
        assert!(picture.contains("#b0b") && picture.contains("#ff7f0e"));
        assert!(picture.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn thins_only_ok_points_when_there_are_very_many() {
        let mut ops: Vec<Op> = (0..(MAX_POINTS as u64 * 3))
            .map(|i| op(Status::Ok, i, Some(1)))
            .collect();
        ops.push(op(Status::Unknown, 5, None));
        let picture = svg("t", &ops, &[], 10);
        let circles = picture.matches("<circle").count();
        assert_eq!(circles, MAX_POINTS + 1);
    }
}
