//! A VQA report as pictures: accuracy per category as a bar chart, and for multiple choice the
//! confusion of option letters (right letter by row, chosen letter by column, `?` for none). SVG,
//! like the loss plot: self-contained, readable in any browser, no plotting crate.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::train::plot::escape;

const BAR_HEIGHT: f64 = 22.0;
const LABEL_WIDTH: f64 = 160.0;
const BAR_WIDTH: f64 = 360.0;

/// Horizontal bars, one per category, of its mean score in [0, 1], with the count asked.
pub fn category_bars(title: &str, per_category: &BTreeMap<String, (f64, usize)>) -> String {
    let width = LABEL_WIDTH + BAR_WIDTH + 90.0;
    let height = 40.0 + BAR_HEIGHT * per_category.len().max(1) as f64 + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, (category, (score, n))) in per_category.iter().enumerate() {
        let y = 34.0 + BAR_HEIGHT * i as f64;
        let bar = BAR_WIDTH * score.clamp(0.0, 1.0);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LABEL_WIDTH}" y="{y:.1}" width="{bar:.1}" height="{:.1}" fill="#1f77b4"/><rect x="{LABEL_WIDTH}" y="{y:.1}" width="{BAR_WIDTH}" height="{:.1}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}">{:.3} ({n})</text>"##,
            LABEL_WIDTH - 6.0,
            y + 15.0,
            escape(category),
            BAR_HEIGHT - 6.0,
            BAR_HEIGHT - 6.0,
            LABEL_WIDTH + BAR_WIDTH + 6.0,
            y + 15.0,
            score
        );
    }
    svg.push_str("</svg>\n");
    svg
}

const CELL: f64 = 34.0;

/// Rows: the right letter; columns: the letter chosen (`?` last). Darker is more.
pub fn confusion(title: &str, counts: &BTreeMap<char, BTreeMap<char, usize>>) -> String {
    let mut columns: Vec<char> = counts
        .keys()
        .chain(counts.values().flat_map(|row| row.keys()))
        .copied()
        .filter(|&c| c != '?')
        .collect();
    columns.sort_unstable();
    columns.dedup();
    if counts.values().any(|row| row.contains_key(&'?')) {
        columns.push('?');
    }
    let rows: Vec<char> = counts.keys().copied().collect();
    let most = counts
        .values()
        .flat_map(|row| row.values())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let (left, top) = (60.0, 60.0);
    let width = left + CELL * columns.len() as f64 + 20.0;
    let height = top + CELL * rows.len() as f64 + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.1}" y="18" text-anchor="middle" font-size="14">{}</text>
<text x="{:.1}" y="40" text-anchor="middle">chosen</text>
<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">right</text>"#,
        width / 2.0,
        escape(title),
        left + CELL * columns.len() as f64 / 2.0,
        top + CELL * rows.len() as f64 / 2.0,
        top + CELL * rows.len() as f64 / 2.0,
    );
    for (c, column) in columns.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{column}</text>"#,
            left + CELL * (c as f64 + 0.5),
            top - 4.0
        );
    }
    for (r, row) in rows.iter().enumerate() {
        let y = top + CELL * r as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{row}</text>"#,
            left - 6.0,
            y + CELL / 2.0 + 4.0
        );
        for (c, column) in columns.iter().enumerate() {
            let n = counts[row].get(column).copied().unwrap_or(0);
            let shade = 255 - (200 * n / most) as u8;
            let ink = if shade < 128 { "white" } else { "black" };
            let x = left + CELL * c as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{CELL}" height="{CELL}" fill="rgb({shade},{shade},255)" stroke="white"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{ink}">{n}</text>"#,
                x + CELL / 2.0,
                y + CELL / 2.0 + 4.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_cells_say_their_numbers() {
        let per_category = BTreeMap::from([
            ("colour".to_string(), (1.0, 12)),
            ("position <x>".to_string(), (0.25, 8)),
        ]);
        let svg = category_bars("accuracy", &per_category);
        assert!(svg.contains("1.000 (12)") && svg.contains("0.250 (8)"));
        assert!(svg.contains("position &lt;x&gt;"));
        assert!(svg.contains(&format!("width=\"{:.1}\"", BAR_WIDTH * 0.25)));

        let counts = BTreeMap::from([
            ('A', BTreeMap::from([('A', 5), ('B', 1)])),
            ('B', BTreeMap::from([('?', 2), ('B', 3)])),
        ]);
        let svg = confusion("choices", &counts);
        // Columns A, B, then ? last; the largest count is the darkest cell.
        let a = svg.find(">A</text>").unwrap();
        let q = svg.find(">?</text>").unwrap();
        assert!(a < q);
        assert!(svg.contains(r#"fill="rgb(55,55,255)""#), "{svg}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
