//! A loss curve as a small self-contained SVG: one or more series over steps, with axes, ticks
//! and a legend. Enough to see at a glance whether training went down, without a plotting crate.

use std::fmt::Write;

pub struct Series<'a> {
    pub name: &'a str,
    /// (step, value) points in step order.
    pub points: &'a [(f64, f64)],
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 48.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// An SVG document plotting `series` against the step, titled `title`.
pub fn line_chart(title: &str, series: &[Series<'_>]) -> String {
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| MARGIN + (x - x0) / (x1 - x0) * (WIDTH - 2.0 * MARGIN);
    let py = |y: f64| HEIGHT - MARGIN - (y - y0) / (y1 - y0) * (HEIGHT - 2.0 * MARGIN);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
<line x1="{MARGIN}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{b}" stroke="black"/>
"#,
        WIDTH / 2.0,
        escape(title),
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN,
    );
    for i in 0..=4 {
        let t = f64::from(i) / 4.0;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            px(x),
            HEIGHT - MARGIN + 16.0,
            tick(x),
            MARGIN - 6.0,
            py(y) + 4.0,
            tick(y)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>
<text x="{:.1}" y="{:.1}" fill="{colour}">{}</text>"#,
            points.join(" "),
            WIDTH - MARGIN - 120.0,
            MARGIN + 14.0 * (i as f64 + 1.0),
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_point_inside_the_frame() {
        let points: Vec<(f64, f64)> = (0..50)
            .map(|i| (f64::from(i), 4.0 / (1.0 + f64::from(i))))
            .collect();
        let svg = line_chart(
            "loss <clip>",
            &[Series {
                name: "train",
                points: &points,
            }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("loss &lt;clip&gt;"));
        let polyline = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for xy in polyline.split(' ') {
            let (x, y) = xy.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (MARGIN..=WIDTH - MARGIN).contains(&x) && (MARGIN..=HEIGHT - MARGIN).contains(&y)
            );
        }
    }

    #[test]
    fn empty_and_flat_series_do_not_divide_by_zero() {
        assert!(line_chart("empty", &[]).contains("</svg>"));
        let flat = [(0.0, 1.0), (1.0, 1.0)];
        assert!(
            !line_chart(
                "flat",
                &[Series {
                    name: "x",
                    points: &flat
                }]
            )
            .contains("NaN")
        );
    }
}
