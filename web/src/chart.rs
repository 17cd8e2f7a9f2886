//! Bar charts drawn on the server as inline SVG: no script, no CDN, CJK labels in the
//! system fonts the pages use. Every text is escaped here, so a template inserts the result
//! as it is.

use std::fmt::Write;

/// One bar: its label, its length and the text written after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub text: String,
}

impl Bar {
    pub fn count(label: impl Into<String>, n: u64) -> Self {
        Self {
            label: label.into(),
            value: n as f64,
            text: n.to_string(),
        }
    }
}

/// Bars drawn at most; a chart of more says how many it shows.
pub const MAX_BARS: usize = 20;
/// Label characters shown before `…` (the full label is the bar's tooltip).
const LABEL_CHARS: usize = 14;
const WIDTH: u32 = 720;
const LABEL_WIDTH: u32 = 230;
const BAR_AREA: u32 = 400;
const ROW: u32 = 26;
const TOP: u32 = 8;
const FONT: &str =
    "'Microsoft YaHei','PingFang SC','Noto Sans CJK SC','WenQuanYi Micro Hei',sans-serif";

/// A horizontal bar chart (`role="img"`, titled `title` for screen readers), bars in the
/// order given, the longest bar full width. At most [`MAX_BARS`] bars are drawn.
pub fn bar_chart(id: &str, title: &str, bars: &[Bar]) -> String {
    let shown = &bars[..bars.len().min(MAX_BARS)];
    let max = shown
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let height = TOP * 2 + ROW * u32::try_from(shown.len().max(1)).unwrap_or(u32::MAX / ROW);
    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{id}" role="img" aria-label="{t}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" font-family="{FONT}" font-size="14"><title>{t}</title>"#,
        id = escape(id),
        t = escape(title),
    );
    if shown.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{LABEL_WIDTH}" y="{y}" fill="#666">暂无数据</text>"##,
            y = TOP + ROW / 2 + 5
        );
    }
    for (i, bar) in shown.iter().enumerate() {
        let y = TOP + ROW * u32::try_from(i).unwrap_or(0);
        let len = if max > 0.0 && bar.value.is_finite() && bar.value > 0.0 {
            ((bar.value / max) * f64::from(BAR_AREA)).round().max(1.0)
        } else {
            0.0
        };
        let label = shorten(&bar.label);
        let _ = write!(
            svg,
            r##"<g><title>{full}：{text}</title><text x="{lx}" y="{ty}" text-anchor="end" fill="#1c2430">{label}</text><rect x="{LABEL_WIDTH}" y="{ry}" width="{len}" height="{h}" fill="#0b5cad"></rect><text x="{vx}" y="{ty}" fill="#1c2430">{text}</text></g>"##,
            full = escape(&bar.label),
            text = escape(&bar.text),
            label = escape(&label),
            lx = LABEL_WIDTH - 8,
            ty = y + ROW / 2 + 5,
            ry = y + 4,
            h = ROW - 8,
            vx = f64::from(LABEL_WIDTH) + len + 6.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        return label.to_string();
    }
    let mut s: String = label.chars().take(LABEL_CHARS - 1).collect();
    s.push('…');
    s
}

/// Text and attribute values for XML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_longest_and_text_is_escaped() {
        let svg = bar_chart(
            "c",
            "按事项 <统计>",
            &[
                Bar::count("高龄津贴申领", 4),
                Bar::count("A&B \"x\" <script>", 2),
                Bar::count("零", 0),
            ],
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(svg.contains("高龄津贴申领"));
        assert!(
            svg.contains(r#"width="400""#),
            "the longest bar is full width"
        );
        assert!(svg.contains(r#"width="200""#), "half of it is half as long");
        assert!(svg.contains(r#"width="0""#));
        assert!(svg.contains("按事项 &lt;统计&gt;"));
        assert!(svg.contains("A&amp;B &quot;x&quot; &lt;script&gt;"));
        assert!(!svg.contains("<script>"));
    }

    #[test]
    fn long_labels_are_shortened_many_bars_capped_and_none_says_so() {
        let long = "一二三四五六七八九十一二三四五六七八";
        let svg = bar_chart("c", "t", &[Bar::count(long, 1)]);
        assert!(svg.contains("一二三四五六七八九十一二三…"));
        assert!(svg.contains(&format!("<title>{long}：1</title>")));
        let many: Vec<Bar> = (0..30).map(|i| Bar::count(format!("b{i}"), i)).collect();
        assert_eq!(
            bar_chart("c", "t", &many).matches("<rect").count(),
            MAX_BARS
        );
        assert!(bar_chart("c", "t", &[]).contains("暂无数据"));
    }
}
