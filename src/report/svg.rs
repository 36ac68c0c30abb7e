//! The charts, as inline SVG written in Rust: horizontal bars (the funnel, a question's
//! options) and columns (completions over time, a histogram). Every label goes through the
//! template engine, so answer text lands in the SVG escaped like anywhere else in the page.

use maud::{html, Markup};

/// Width of every chart, in SVG units (it scales to the page).
const WIDTH: f64 = 640.0;
/// Height of one horizontal bar's row.
const ROW: f64 = 26.0;
/// Space for the bar labels on the left.
const LABEL_W: f64 = 230.0;
/// Space for the count on the right.
const VALUE_W: f64 = 110.0;
/// Characters of a label drawn; the whole label is in the bar's tooltip.
const LABEL_CHARS: usize = 34;

/// One bar: its label and its count.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub count: u64,
}

/// Horizontal bars, each with its count and its share of `of` (the funnel's issued tokens, a
/// question's answers); `None`: no percentages.
pub fn bars(title: &str, bars: &[Bar], of: Option<u64>) -> Markup {
    let max = bars.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64;
    let height = ROW * bars.len().max(1) as f64 + 8.0;
    let span = WIDTH - LABEL_W - VALUE_W;
    html! {
        svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
            viewBox=(format!("0 0 {WIDTH} {height}")) width=(WIDTH) height=(height) {
            title { (title) }
            @for (i, b) in bars.iter().enumerate() {
                @let y = 4.0 + ROW * i as f64;
                @let w = (b.count as f64 / max * span).max(if b.count > 0 { 2.0 } else { 0.0 });
                g {
                    title { (b.label) ": " (b.count) }
                    text x=(LABEL_W - 8.0) y=(y + ROW * 0.65) text-anchor="end" class="label" {
                        (short(&b.label))
                    }
                    rect x=(LABEL_W) y=(y + 3.0) width=(fmt(w)) height=(ROW - 8.0) rx="3" class="bar" {}
                    text x=(fmt(LABEL_W + w + 6.0)) y=(y + ROW * 0.65) class="value" {
                        (b.count)
                        @if let Some(total) = of.filter(|t| *t > 0) {
                            " (" (percent(b.count, total)) ")"
                        }
                    }
                }
            }
        }
    }
}

/// Columns over labelled slots (hours, days, histogram bins); every `label_every`-th slot's
/// label is drawn under it.
pub fn columns(title: &str, cols: &[Bar], label_every: usize) -> Markup {
    let height = 180.0;
    let (top, bottom, left) = (16.0, 36.0, 36.0);
    let plot_h = height - top - bottom;
    let max = cols.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    // A few columns stay narrow instead of filling the whole width.
    let slot = ((WIDTH - left - 8.0) / cols.len().max(1) as f64).min(48.0);
    let every = label_every.max(1);
    html! {
        svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
            viewBox=(format!("0 0 {WIDTH} {height}")) width=(WIDTH) height=(height) {
            title { (title) }
            line x1=(left) y1=(top + plot_h) x2=(WIDTH - 8.0) y2=(top + plot_h) class="axis" {}
            text x=(left - 6.0) y=(top + 4.0) text-anchor="end" class="tick" { (max) }
            text x=(left - 6.0) y=(top + plot_h) text-anchor="end" class="tick" { "0" }
            @for (i, c) in cols.iter().enumerate() {
                @let h = c.count as f64 / max as f64 * plot_h;
                @let x = left + slot * i as f64;
                g {
                    title { (c.label) ": " (c.count) }
                    rect x=(fmt(x + slot * 0.1)) y=(fmt(top + plot_h - h)) width=(fmt(slot * 0.8))
                        height=(fmt(h)) class="bar" {}
                    @if i % every == 0 {
                        text x=(fmt(x + slot / 2.0)) y=(top + plot_h + 16.0) text-anchor="middle" class="tick" {
                            (short(&c.label))
                        }
                    }
                }
            }
        }
    }
}

/// `n / of` as a percentage with one decimal.
pub fn percent(n: u64, of: u64) -> String {
    if of == 0 {
        return "-".into();
    }
    format!("{:.1}%", n as f64 * 100.0 / of as f64)
}

fn short(label: &str) -> String {
    match label.char_indices().nth(LABEL_CHARS) {
        Some((i, _)) => format!("{}…", &label[..i]),
        None => label.to_string(),
    }
}

/// Two decimals at most: the SVG stays small.
fn fmt(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, count: u64) -> Bar {
        Bar {
            label: label.into(),
            count,
        }
    }

    #[test]
    fn bars_carry_labels_counts_and_shares_escaped() {
        let svg = bars("t", &[bar("<b>x</b>", 3), bar("y", 1)], Some(4)).into_string();
        assert!(svg.contains("&lt;b&gt;x&lt;/b&gt;"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("3 (75.0%)") && svg.contains("1 (25.0%)"));
        // The longest bar spans the whole plot; a bar of 1 a third of it.
        assert!(svg.contains(&format!("width=\"{}\"", fmt(WIDTH - LABEL_W - VALUE_W))));
    }

    #[test]
    fn columns_scale_to_the_highest() {
        let svg = columns("t", &[bar("a", 0), bar("b", 10), bar("c", 5)], 2).into_string();
        assert!(svg.contains(">10<"));
        assert!(svg.contains(">a<") && svg.contains(">c<") && !svg.contains(">b<"));
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(1, 0), "-");
        assert_eq!(fmt(2.50), "2.5");
        assert_eq!(fmt(3.0), "3");
    }
}
