//! The charts of the list page as server-rendered SVG, readable without JavaScript: calls per
//! hour and deliveries per sink. Every chart has a `<title>` and a `<desc>`, every bar a
//! `<title>` (the browser's tooltip; what a screen reader announces), and the numbers are
//! also printed as text (labels, tables). The call's timeline is in `timeline`.

use std::fmt::Write as _;

use cdr_sinks::outbox::SinkCounts;

use super::format::{esc, hms, utc};

/// Calls per hour for the chart of the list page.
pub(super) type Hours = cdr_sinks::store::HourlyCalls;

/// Fill of answered calls in the hour chart.
const ANSWERED_FILL: &str = "#0969da";
/// Fill of calls not answered in the hour chart.
const UNANSWERED_FILL: &str = "#e16f24";
/// Fills of the delivery states (as the `.delivered`, `.pending` and `.dead` text colours).
const DELIVERED_FILL: &str = "#1a7f37";
const PENDING_FILL: &str = "#d4a72c";
const DEAD_FILL: &str = "#cf222e";

/// An SVG coordinate or length: one decimal at most.
pub(super) fn px(x: f64) -> String {
    let s = format!("{x:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_owned(),
        None => s,
    }
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `n` (and at least 1).
fn nice_ceiling(n: u64) -> u64 {
    let mut scale = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = scale.saturating_mul(m);
            if v >= n {
                return v;
            }
        }
        if scale > u64::MAX / 10 {
            return u64::MAX;
        }
        scale *= 10;
    }
}

/// `n` and the noun, in the plural unless `n` is 1.
pub(super) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A length of time: `2 s`, `2.5 s`, or `H:MM:SS` from a minute on.
pub(super) fn seconds_text(secs: f64) -> String {
    if secs >= 60.0 {
        hms(secs.round() as i64)
    } else if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// At most `max` characters of `s`, with `…` when cut.
pub(super) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The tick step of a time axis `span` seconds long: about eight ticks or fewer.
pub(super) fn tick_step(span: f64) -> i64 {
    const STEPS: [i64; 18] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    ];
    STEPS
        .into_iter()
        .find(|s| span / (*s as f64) <= 8.0)
        .unwrap_or(86400)
}

/// The chart of calls per hour (stacked: answered below, not answered above), with its numbers
/// as a table in a `<details>` below it.
pub(super) fn hours_figure(b: &mut String, hours: Option<&Hours>, filtered: bool) {
    const W: f64 = 620.0;
    const H: f64 = 206.0;
    const LEFT: f64 = 40.0;
    const RIGHT: f64 = 10.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 36.0;
    let scope = if filtered {
        "matching the filter"
    } else {
        "in the store"
    };
    b.push_str("<figure class=\"chart\" id=\"calls-per-hour\">");
    let Some(h) = hours else {
        let _ = writeln!(
            b,
            "<figcaption>Calls per hour</figcaption><p class=\"muted\">No calls {scope}.</p>\
             </figure>"
        );
        return;
    };
    let end = h.first + chrono::TimeDelta::hours(24);
    let answered: u64 = h.counts.iter().map(|c| c.0).sum();
    let unanswered: u64 = h.counts.iter().map(|c| c.1).sum();
    let _ = writeln!(
        b,
        "<figcaption>Calls per hour, {} to {} UTC <span class=\"muted\">(the 24 hours up to \
         the latest call {scope}, by each call's start in UTC)</span></figcaption>",
        h.first.format("%Y-%m-%d %H:00"),
        end.format("%Y-%m-%d %H:00"),
    );
    let summary = format!(
        "{} from {} to {} UTC: {} answered, {} not answered.",
        count(answered + unanswered, "call", "calls"),
        h.first.format("%Y-%m-%d %H:00"),
        end.format("%Y-%m-%d %H:00"),
        answered,
        unanswered
    );
    let _ = writeln!(
        b,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"hours\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"hours-title hours-desc\" \
         font-size=\"12\"><title id=\"hours-title\">Calls per hour, answered and not answered\
         </title><desc id=\"hours-desc\">{summary}</desc>",
        w = px(W),
        h = px(H),
        summary = esc(&summary),
    );
    // Legend.
    let _ = writeln!(
        b,
        "<g class=\"legend\"><rect x=\"{l}\" y=\"8\" width=\"11\" height=\"11\" fill=\"{ANSWERED_FILL}\"/>\
         <text x=\"{t1}\" y=\"18\">answered ({answered})</text>\
         <rect x=\"{l2}\" y=\"8\" width=\"11\" height=\"11\" fill=\"{UNANSWERED_FILL}\"/>\
         <text x=\"{t2}\" y=\"18\">not answered ({unanswered})</text></g>",
        l = px(LEFT),
        t1 = px(LEFT + 16.0),
        l2 = px(LEFT + 150.0),
        t2 = px(LEFT + 166.0),
    );
    // Y axis: 0, half and the top, with grid lines.
    let max = h.counts.iter().map(|c| c.0 + c.1).max().unwrap_or(0);
    let top = nice_ceiling(max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y = |v: u64| TOP + plot_h - (v as f64) / (top as f64) * plot_h;
    let mut marks = vec![0, top];
    if top % 2 == 0 {
        marks.insert(1, top / 2);
    }
    b.push_str("<g class=\"axis\">");
    for v in marks {
        let _ = write!(
            b,
            "<line x1=\"{x1}\" x2=\"{x2}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{stroke}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" fill=\"#555\">{v}</text>",
            x1 = px(LEFT),
            x2 = px(W - RIGHT),
            y = px(y(v)),
            stroke = if v == 0 { "#888" } else { "#e5e5e5" },
            tx = px(LEFT - 6.0),
            ty = px(y(v) + 4.0),
        );
    }
    b.push_str("</g>\n");
    let slot = plot_w / 24.0;
    let bar = slot * 0.72;
    for (i, &(a, u)) in h.counts.iter().enumerate() {
        let hour = h.first + chrono::TimeDelta::hours(i64::try_from(i).unwrap_or_default());
        let next = hour + chrono::TimeDelta::hours(1);
        let x0 = LEFT + slot * i as f64;
        let bx = x0 + (slot - bar) / 2.0;
        let label = format!(
            "{}–{}: {}, {a} answered, {u} not answered",
            hour.format("%Y-%m-%d %H:00"),
            next.format("%H:00"),
            count(a + u, "call", "calls"),
        );
        let _ = write!(
            b,
            "<g class=\"hour\"><title>{}</title><rect class=\"slot\" x=\"{}\" y=\"{}\" \
             width=\"{}\" height=\"{}\" fill=\"transparent\"/>",
            esc(&label),
            px(x0),
            px(TOP),
            px(slot),
            px(plot_h),
        );
        if a > 0 {
            let _ = write!(
                b,
                "<rect class=\"answered\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{ANSWERED_FILL}\"/>",
                px(bx),
                px(y(a)),
                px(bar),
                px(y(0) - y(a)),
            );
        }
        if u > 0 {
            let _ = write!(
                b,
                "<rect class=\"unanswered\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{UNANSWERED_FILL}\"/>",
                px(bx),
                px(y(a + u)),
                px(bar),
                px(y(a) - y(a + u)),
            );
        }
        if a + u > 0 {
            let _ = write!(
                b,
                "<text class=\"total\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#444\">{}</text>",
                px(x0 + slot / 2.0),
                px(y(a + u) - 3.0),
                a + u
            );
        }
        b.push_str("</g>\n");
    }
    // X axis: every third hour, with the date under the first hour and under midnight.
    b.push_str("<g class=\"axis\">");
    for i in (0..24).step_by(3) {
        let hour = h.first + chrono::TimeDelta::hours(i);
        let x = LEFT + slot * (i as f64) + slot / 2.0;
        let _ = write!(
            b,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            px(x),
            px(H - BOTTOM + 15.0),
            hour.format("%H:00"),
        );
    }
    for i in 0..24 {
        let hour = h.first + chrono::TimeDelta::hours(i);
        if i == 0 || hour.format("%H").to_string() == "00" {
            let x = LEFT + slot * (i as f64);
            let _ = write!(
                b,
                "<text x=\"{}\" y=\"{}\" fill=\"#555\">{}</text>",
                px(x),
                px(H - BOTTOM + 30.0),
                hour.format("%Y-%m-%d"),
            );
        }
    }
    b.push_str("</g></svg>\n");
    b.push_str(
        "<details><summary>The numbers</summary><table class=\"hours\"><thead><tr>\
         <th scope=\"col\">Hour</th><th scope=\"col\">Answered</th>\
         <th scope=\"col\">Not answered</th><th scope=\"col\">Calls</th></tr></thead><tbody>\n",
    );
    for (i, &(a, u)) in h.counts.iter().enumerate() {
        let hour = h.first + chrono::TimeDelta::hours(i64::try_from(i).unwrap_or_default());
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\">{}</th><td class=\"n\">{a}</td><td class=\"n\">{u}</td>\
             <td class=\"n\">{}</td></tr>",
            hour.format("%Y-%m-%d %H:00"),
            a + u
        );
    }
    b.push_str("</tbody></table></details></figure>\n");
}

/// The delivery state of every sink: a table with a stacked bar per sink.
pub(super) fn deliveries_figure(b: &mut String, counts: &[SinkCounts]) {
    const W: f64 = 180.0;
    b.push_str(
        "<figure class=\"chart\" id=\"deliveries\"><figcaption>Deliveries per sink \
         <span class=\"muted\">(every call in the store)</span></figcaption>\n",
    );
    if counts.is_empty() {
        b.push_str("<p class=\"muted\">No sinks: calls are kept in the store only.</p></figure>\n");
        return;
    }
    b.push_str(
        "<table class=\"sinks\"><thead><tr><th scope=\"col\">Sink</th>\
         <th scope=\"col\">Delivered</th><th scope=\"col\">Pending</th><th scope=\"col\">Dead</th>\
         <th scope=\"col\">Oldest pending</th><th scope=\"col\">Share</th></tr></thead><tbody>\n",
    );
    for c in counts {
        let total = c.delivered + c.pending + c.dead;
        let summary = format!(
            "{}: {} delivered, {} pending, {} dead",
            c.sink, c.delivered, c.pending, c.dead
        );
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{sink}</th><td class=\"n delivered\">{}</td>\
             <td class=\"n pending\">{}</td><td class=\"n dead\">{}</td><td>{}</td><td>\
             <svg xmlns=\"http://www.w3.org/2000/svg\" class=\"share\" width=\"{w}\" height=\"14\" \
             viewBox=\"0 0 {w} 14\" role=\"img\" aria-label=\"{summary}\"><title>{summary}</title>\
             <rect width=\"{w}\" height=\"14\" fill=\"#eee\"/>",
            c.delivered,
            c.pending,
            c.dead,
            utc(c.oldest_pending_ms),
            sink = esc(&c.sink),
            w = px(W),
            summary = esc(&summary),
        );
        let mut x = 0.0;
        for (n, state, fill) in [
            (c.delivered, "delivered", DELIVERED_FILL),
            (c.pending, "pending", PENDING_FILL),
            (c.dead, "dead", DEAD_FILL),
        ] {
            if n == 0 || total == 0 {
                continue;
            }
            let w = (n as f64) / (total as f64) * W;
            let _ = write!(
                b,
                "<rect class=\"{state}\" x=\"{}\" width=\"{}\" height=\"14\" fill=\"{fill}\">\
                 <title>{n} {state}</title></rect>",
                px(x),
                px(w.max(1.0)),
            );
            x += w;
        }
        b.push_str("</svg></td></tr>\n");
    }
    b.push_str("</tbody></table></figure>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdr_sinks::store::hour_of;

    #[test]
    fn chart_helpers() {
        assert_eq!(
            [0, 1, 2, 3, 7, 10, 11, 36, 101].map(nice_ceiling),
            [1, 1, 2, 5, 10, 10, 20, 50, 200]
        );
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
        assert_eq!(
            [0.4, 8.0, 9.0, 14.0, 1446.0, 1e9].map(tick_step),
            [1, 1, 2, 2, 300, 86400]
        );
        assert_eq!([1.0, 12.25, 3.0 / 7.0].map(px), ["1", "12.2", "0.4"]);
        assert_eq!(
            [2.0, 2.54, 281.0].map(seconds_text),
            ["2 s", "2.5 s", "0:04:41"]
        );
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdefg", 6), "abcde…");
        let hour = |s: &str| hour_of(s).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        assert_eq!(
            hour("2018-01-05T21:30:09").as_deref(),
            Some("2018-01-05 21:00:00")
        );
        assert_eq!(
            hour("2018-01-05T21").as_deref(),
            Some("2018-01-05 21:00:00")
        );
        assert_eq!(hour("2018-01-05"), None);
        assert_eq!(hour("2018-01-05T2x:00:00"), None);
    }

    #[test]
    fn hour_chart_and_delivery_bars() {
        let mut hours = Hours {
            first: hour_of("2018-01-05T00").unwrap_or_default(),
            counts: [(0, 0); 24],
        };
        hours.counts[14] = (22, 3);
        hours.counts[23] = (0, 2);
        let mut b = String::new();
        hours_figure(&mut b, Some(&hours), true);
        assert_eq!(b.matches("<g class=\"hour\">").count(), 24);
        assert_eq!(b.matches("<rect class=\"answered\"").count(), 1);
        assert_eq!(b.matches("<rect class=\"unanswered\"").count(), 2);
        assert!(b.contains(
            "<title>2018-01-05 14:00–15:00: 25 calls, 22 answered, 3 not answered</title>"
        ));
        assert!(b.contains(
            "<title>2018-01-05 03:00–04:00: 0 calls, 0 answered, 0 not answered</title>"
        ));
        assert!(b.contains(">answered (22)</text>") && b.contains(">not answered (5)</text>"));
        assert!(b.contains(">50</text>"), "the axis tops at 50: {b}");
        assert!(b.contains("matching the filter"));
        let mut b = String::new();
        hours_figure(&mut b, None, false);
        assert!(b.contains("No calls in the store."));

        let counts = [SinkCounts {
            sink: "web<hook>".to_owned(),
            pending: 1,
            delivered: 3,
            dead: 0,
            oldest_pending_ms: Some(0),
        }];
        let mut b = String::new();
        deliveries_figure(&mut b, &counts);
        assert!(b.contains("<th scope=\"row\">web&lt;hook&gt;</th>"), "{b}");
        assert!(b.contains("<td>1970-01-01 00:00:00 UTC</td>"));
        assert!(
            b.contains("<rect class=\"delivered\" x=\"0\" width=\"135\""),
            "{b}"
        );
        assert!(
            b.contains("<rect class=\"pending\" x=\"135\" width=\"45\""),
            "{b}"
        );
        assert!(!b.contains("<rect class=\"dead\""));
    }
}
