//! A call's timeline as server-rendered SVG: one lane per Asterisk or CMS leg, per SMDR record
//! (segment), or for the call itself, with transfers as vertical lines.

use std::fmt::Write as _;

use chrono::NaiveDateTime;
use serde_json::Value;

use super::charts::{px, seconds_text, shorten, tick_step};
use super::format::esc;

/// How many lanes a timeline draws at most (the tables below list every leg).
const MAX_LANES: usize = 60;

/// A call's timeline: one lane per Asterisk or CMS leg, or per SMDR record (segment).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Timeline {
    /// Time 0 of the axis: the call's start (or its earliest leg's).
    origin: NaiveDateTime,
    /// Seconds from `origin` to the last time drawn (at least 1).
    span: f64,
    /// What a lane is: `leg`, `record` or `call`.
    what: &'static str,
    /// The lanes drawn, top to bottom.
    lanes: Vec<Lane>,
    /// How many lanes there were before the [`MAX_LANES`] cap.
    total: usize,
    /// Events drawn as vertical lines (Asterisk transfers).
    marks: Vec<Mark>,
    /// `" UTC"` for CMS calls, whose times are UTC; empty for PBX local time.
    zone: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
struct Lane {
    label: String,
    title: String,
    /// Seconds from the origin where the lane begins (drawn as a tick when it has no spans).
    at: f64,
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    from: f64,
    to: f64,
    kind: SpanKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpanKind {
    Ringing,
    Connected,
    Held,
    /// Went on past the last time known (no end seen).
    Open,
}

impl SpanKind {
    const ALL: [Self; 4] = [Self::Ringing, Self::Connected, Self::Held, Self::Open];

    fn name(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Connected => "connected",
            Self::Held => "on hold or parked",
            Self::Open => "no end seen",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Connected => "connected",
            Self::Held => "held",
            Self::Open => "open",
        }
    }

    fn fill(self) -> &'static str {
        match self {
            Self::Ringing => "#f2cc60",
            Self::Connected => "#2da44e",
            Self::Held => "#8c959f",
            Self::Open => "#d8f3dc",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Mark {
    at: f64,
    label: String,
    title: String,
}

/// A time of the call model (`2018-01-05T21:30:09`, fractions allowed).
fn json_time(v: &Value) -> Option<NaiveDateTime> {
    v.as_str()?.parse().ok()
}

/// Seconds from `origin` to `t`.
fn seconds(origin: NaiveDateTime, t: NaiveDateTime) -> f64 {
    (t - origin).num_milliseconds() as f64 / 1000.0
}

/// `origin` plus `secs` seconds.
fn plus(origin: NaiveDateTime, secs: f64) -> NaiveDateTime {
    origin + chrono::TimeDelta::milliseconds((secs * 1000.0).round() as i64)
}

/// A wall-clock time, with milliseconds when it has any.
fn clock(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_millis() == 0 {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%H:%M:%S%.3f").to_string()
    }
}

/// A string field of a JSON object, or `""`.
fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Timeline {
    /// The timeline of a stored call: its `legs` (Asterisk, CMS: created, answered, ended),
    /// else its SMDR `records` (each segment's ring, connected, hold and park seconds, one
    /// segment after the other from the call's start, as the call's end is computed), else the
    /// call itself. `None` when the call has no start time.
    pub(super) fn of(call: &Value) -> Option<Self> {
        let start = json_time(call.get("start_time")?)?;
        let end = call.get("end_time").and_then(json_time).unwrap_or(start);
        let list = |key: &str| {
            call.get(key)
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
        };
        let mut timeline = if let Some(legs) = list("legs") {
            Self::of_legs(call, start, end, legs)
        } else if let Some(records) = list("records") {
            Self::of_records(start, end, records)
        } else {
            Self::of_call(call, start, end)
        };
        if field(call, "source") == "cms" {
            timeline.zone = " UTC";
        }
        Some(timeline)
    }

    fn of_legs(call: &Value, start: NaiveDateTime, end: NaiveDateTime, legs: &[Value]) -> Self {
        let times = |l: &Value| {
            ["start", "answer", "end"]
                .into_iter()
                .filter_map(|k| l.get(k).and_then(json_time))
                .collect::<Vec<_>>()
        };
        let origin = legs
            .iter()
            .flat_map(times)
            .chain([start])
            .min()
            .unwrap_or(start);
        let last = legs
            .iter()
            .flat_map(times)
            .chain([end])
            .max()
            .unwrap_or(end);
        let span = seconds(origin, last).max(1.0);
        let at = |l: &Value, k: &str| l.get(k).and_then(json_time);
        let lanes = legs
            .iter()
            .take(MAX_LANES)
            .map(|leg| {
                let created = at(leg, "start");
                let answered = at(leg, "answer");
                let ended = at(leg, "end");
                let s = created.map_or(0.0, |t| seconds(origin, t));
                let a = answered.map(|t| seconds(origin, t));
                let e = ended.map(|t| seconds(origin, t));
                let spans = match (a, e) {
                    (Some(a), Some(e)) => {
                        vec![(s, a, SpanKind::Ringing), (a, e, SpanKind::Connected)]
                    }
                    (Some(a), None) => vec![(s, a, SpanKind::Ringing), (a, span, SpanKind::Open)],
                    (None, Some(e)) => vec![(s, e, SpanKind::Ringing)],
                    (None, None) => vec![(s, span, SpanKind::Open)],
                };
                let channel = field(leg, "channel");
                let renamed = field(leg, "renamed_to");
                // CMS legs often repeat the address as the number: say it once.
                let who = [field(leg, "caller_num"), field(leg, "caller_name")]
                    .into_iter()
                    .filter(|s| !s.is_empty() && *s != channel)
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut title = channel.to_owned();
                if !renamed.is_empty() {
                    let _ = write!(title, " (later {renamed})");
                }
                if !who.is_empty() {
                    let _ = write!(title, ", {who}");
                }
                for (what, t) in [
                    ("created", created),
                    ("answered", answered),
                    ("ended", ended),
                ] {
                    if let Some(t) = t {
                        let _ = write!(title, "; {what} {}", clock(t));
                    }
                }
                let cause = field(leg, "hangup_cause_text");
                if !cause.is_empty() {
                    let _ = write!(title, "; hangup cause {cause}");
                }
                let dial = field(leg, "dial_status");
                if !dial.is_empty() {
                    let _ = write!(title, "; dial status {dial}");
                }
                let label = if who.is_empty() {
                    channel.to_owned()
                } else {
                    format!("{channel} ({who})")
                };
                Lane {
                    label,
                    title,
                    at: s,
                    spans: spans
                        .into_iter()
                        .filter(|(from, to, _)| to > from)
                        .map(|(from, to, kind)| Span { from, to, kind })
                        .collect(),
                }
            })
            .collect();
        let marks = call
            .get("transfers")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|t| {
                        let when = t.get("time").and_then(json_time)?;
                        let kind = field(t, "kind");
                        let mut title = format!("{kind} transfer at {}", clock(when));
                        for (what, key) in [
                            ("of", "transferee"),
                            ("by", "transferer"),
                            ("to", "target"),
                            ("result", "result"),
                        ] {
                            let v = field(t, key);
                            if !v.is_empty() {
                                let _ = write!(title, ", {what} {v}");
                            }
                        }
                        Some(Mark {
                            at: seconds(origin, when),
                            label: format!("{kind} transfer"),
                            title,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            origin,
            span,
            what: "leg",
            lanes,
            total: legs.len(),
            marks,
            zone: "",
        }
    }

    fn of_records(start: NaiveDateTime, end: NaiveDateTime, records: &[Value]) -> Self {
        let secs = |r: &Value, k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
        let mut offset = 0.0;
        let mut lanes = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let ring = secs(r, "ring");
            let connected = secs(r, "duration");
            let held = secs(r, "hold_time") + secs(r, "park_time");
            let at = offset;
            offset += ring + connected + held;
            if i >= MAX_LANES {
                continue;
            }
            let party = |n: u8| {
                let device = field(r, &format!("party_{n}_device"));
                let name = field(r, &format!("party_{n}_name"));
                if name.is_empty() || name == device {
                    device.to_owned()
                } else {
                    format!("{device} {name}")
                }
            };
            let (p1, p2) = (party(1), party(2));
            let label = format!(
                "{}. {} – {}",
                i + 1,
                field(r, "party_1_device"),
                field(r, "party_2_device")
            );
            let title = format!(
                "Record {}: {p1} with {p2}, from {} to {}: ring {}, connected {}, hold {}, park {}{}",
                i + 1,
                clock(plus(start, at)),
                clock(plus(start, offset)),
                seconds_text(ring),
                seconds_text(connected),
                seconds_text(secs(r, "hold_time")),
                seconds_text(secs(r, "park_time")),
                if r.get("continued").and_then(Value::as_bool) == Some(true) {
                    "; continued in a later record"
                } else {
                    ""
                }
            );
            let mut spans = Vec::new();
            let mut from = at;
            for (len, kind) in [
                (ring, SpanKind::Ringing),
                (connected, SpanKind::Connected),
                (held, SpanKind::Held),
            ] {
                if len > 0.0 {
                    spans.push(Span {
                        from,
                        to: from + len,
                        kind,
                    });
                }
                from += len;
            }
            lanes.push(Lane {
                label,
                title,
                at,
                spans,
            });
        }
        Self {
            origin: start,
            span: offset.max(seconds(start, end)).max(1.0),
            what: "record",
            lanes,
            total: records.len(),
            marks: Vec::new(),
            zone: "",
        }
    }

    fn of_call(call: &Value, start: NaiveDateTime, end: NaiveDateTime) -> Self {
        let e = seconds(start, end).max(0.0);
        let answered = call.get("answered").and_then(Value::as_bool) == Some(true);
        let answer = call
            .get("answer_time")
            .and_then(json_time)
            .map(|t| seconds(start, t).clamp(0.0, e));
        let spans: Vec<Span> = match answer {
            Some(a) => vec![
                Span {
                    from: 0.0,
                    to: a,
                    kind: SpanKind::Ringing,
                },
                Span {
                    from: a,
                    to: e,
                    kind: SpanKind::Connected,
                },
            ],
            None => vec![Span {
                from: 0.0,
                to: e,
                kind: if answered {
                    SpanKind::Connected
                } else {
                    SpanKind::Ringing
                },
            }],
        };
        let title = format!(
            "The call, {} to {}{}",
            clock(start),
            clock(end),
            if answered {
                ", answered"
            } else {
                ", not answered"
            }
        );
        Self {
            origin: start,
            span: e.max(1.0),
            what: "call",
            lanes: vec![Lane {
                label: "call".to_owned(),
                title,
                at: 0.0,
                spans: spans.into_iter().filter(|s| s.to > s.from).collect(),
            }],
            total: 1,
            marks: Vec::new(),
            zone: "",
        }
    }
}

/// The timeline as an SVG figure: lanes top to bottom, time left to right, clock-time ticks.
pub(super) fn timeline_figure(b: &mut String, t: &Timeline) {
    const LABEL_W: f64 = 300.0;
    const PLOT_W: f64 = 640.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 36.0;
    const ROW: f64 = 26.0;
    const BOTTOM: f64 = 34.0;
    let w = LABEL_W + PLOT_W + RIGHT;
    let h = TOP + ROW * t.lanes.len() as f64 + BOTTOM;
    let x = |s: f64| LABEL_W + s.clamp(0.0, t.span) / t.span * PLOT_W;
    let end = plus(t.origin, t.span);
    let many = |n: usize| if n == 1 { "" } else { "s" };
    let caption = format!(
        "{} {}{} from {} to {}{} ({}){}",
        t.total,
        t.what,
        many(t.total),
        clock(t.origin),
        clock(end),
        t.zone,
        seconds_text(t.span),
        if t.total > t.lanes.len() {
            format!(", the first {} drawn", t.lanes.len())
        } else {
            String::new()
        }
    );
    let _ = write!(
        b,
        "<h3>Timeline</h3>\n<figure class=\"chart\" id=\"timeline\"><figcaption class=\"muted\">\
         {caption}</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" \
         width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-labelledby=\"timeline-title timeline-desc\" font-size=\"12\">\
         <title id=\"timeline-title\">Timeline of the call: one row per {what}</title>\
         <desc id=\"timeline-desc\">{caption}. Bars: ringing, connected, on hold or parked; \
         each bar's title gives its times.</desc>\n",
        caption = esc(&caption),
        w = px(w),
        h = px(h),
        what = t.what,
    );
    // Row backgrounds.
    for i in (0..t.lanes.len()).filter(|i| i % 2 == 1) {
        let _ = write!(
            b,
            "<rect x=\"0\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f6f8fa\"/>",
            px(TOP + ROW * i as f64),
            px(w),
            px(ROW),
        );
    }
    // Time axis: ticks at round clock times.
    let step = tick_step(t.span);
    let step_ms = step * 1000;
    let origin_ms = t.origin.and_utc().timestamp_millis();
    let end_ms = origin_ms + (t.span * 1000.0).round() as i64;
    let mut tick = (origin_ms.div_euclid(step_ms) + i64::from(origin_ms % step_ms != 0)) * step_ms;
    let format = if step >= 60 { "%H:%M" } else { "%H:%M:%S" };
    b.push_str("<g class=\"axis\">");
    while tick <= end_ms {
        let at = (tick - origin_ms) as f64 / 1000.0;
        let label = chrono::DateTime::from_timestamp_millis(tick)
            .map(|d| d.naive_utc().format(format).to_string())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<line x1=\"{x}\" x2=\"{x}\" y1=\"{y1}\" y2=\"{y2}\" stroke=\"#d0d7de\"/>\
             <text x=\"{x}\" y=\"14\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            x = px(x(at)),
            y1 = px(TOP - 16.0),
            y2 = px(h - BOTTOM),
        );
        tick += step_ms;
    }
    b.push_str("</g>\n");
    for (i, lane) in t.lanes.iter().enumerate() {
        let top = TOP + ROW * i as f64;
        let _ = write!(
            b,
            "<g class=\"lane\"><title>{}</title><text x=\"{}\" y=\"{}\" text-anchor=\"end\" \
             font-size=\"11\">{}</text>",
            esc(&lane.title),
            px(LABEL_W - 8.0),
            px(top + ROW / 2.0 + 4.0),
            esc(&shorten(&lane.label, 42)),
        );
        if lane.spans.is_empty() {
            let _ = write!(
                b,
                "<rect class=\"instant\" x=\"{}\" y=\"{}\" width=\"2\" height=\"16\" fill=\"#57606a\"/>",
                px(x(lane.at)),
                px(top + 5.0),
            );
        }
        for s in &lane.spans {
            let dashed = if s.kind == SpanKind::Open {
                " stroke=\"#2da44e\" stroke-dasharray=\"4 2\""
            } else {
                ""
            };
            let _ = write!(
                b,
                "<rect class=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"16\" fill=\"{}\"{dashed}>\
                 <title>{} {}–{} ({})</title></rect>",
                s.kind.class(),
                px(x(s.from)),
                px(top + 5.0),
                px((x(s.to) - x(s.from)).max(1.0)),
                s.kind.fill(),
                s.kind.name(),
                clock(plus(t.origin, s.from)),
                clock(plus(t.origin, s.to)),
                seconds_text(s.to - s.from),
            );
        }
        b.push_str("</g>\n");
    }
    for m in &t.marks {
        let _ = writeln!(
            b,
            "<g class=\"mark\"><title>{}</title><line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" \
             stroke=\"#8250df\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/><text x=\"{x}\" \
             y=\"{}\" text-anchor=\"middle\" fill=\"#8250df\">{}</text></g>",
            esc(&m.title),
            px(TOP - 2.0),
            px(h - BOTTOM),
            px(TOP - 6.0),
            esc(&m.label),
            x = px(x(m.at)),
        );
    }
    // Legend: the kinds drawn.
    b.push_str("<g class=\"legend\">");
    let mut lx = LABEL_W;
    for kind in SpanKind::ALL {
        if !t
            .lanes
            .iter()
            .any(|l| l.spans.iter().any(|s| s.kind == kind))
        {
            continue;
        }
        let _ = write!(
            b,
            "<rect x=\"{}\" y=\"{}\" width=\"11\" height=\"11\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            px(lx),
            px(h - 20.0),
            kind.fill(),
            px(lx + 15.0),
            px(h - 10.5),
            kind.name(),
        );
        lx += 40.0 + 7.0 * kind.name().len() as f64;
    }
    b.push_str("</g></svg></figure>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeline_of_legs_marks_ringing_connected_open_and_transfers() {
        let call = json!({
            "start_time": "2026-11-22T13:54:52.5",
            "end_time": "2026-11-22T13:55:06",
            "legs": [
                {"channel": "SIP/a-1", "caller_num": "1001", "caller_name": "Alice",
                 "start": "2026-11-22T13:54:52.5", "answer": "2026-11-22T13:54:54.5",
                 "end": "2026-11-22T13:55:06", "hangup_cause_text": "Normal Clearing"},
                {"channel": "SIP/b-2", "start": "2026-11-22T13:54:53",
                 "end": "2026-11-22T13:54:58", "dial_status": "NOANSWER"},
                {"channel": "SIP/c-3", "start": "2026-11-22T13:55:00",
                 "answer": "2026-11-22T13:55:01"},
                {"channel": "SIP/d-4"}
            ],
            "transfers": [{"kind": "blind", "time": "2026-11-22T13:54:58",
                           "transferer": "1.1", "target": "2003@phones", "result": "Success"}]
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!(t.what, "leg");
        assert_eq!((t.total, t.lanes.len()), (4, 4));
        assert!((t.span - 13.5).abs() < 1e-9, "{}", t.span);
        let kinds = |i: usize| -> Vec<(f64, f64, SpanKind)> {
            t.lanes[i]
                .spans
                .iter()
                .map(|s| (s.from, s.to, s.kind))
                .collect()
        };
        assert_eq!(
            kinds(0),
            [
                (0.0, 2.0, SpanKind::Ringing),
                (2.0, 13.5, SpanKind::Connected)
            ]
        );
        assert_eq!(kinds(1), [(0.5, 5.5, SpanKind::Ringing)]);
        assert_eq!(
            kinds(2),
            [(7.5, 8.5, SpanKind::Ringing), (8.5, 13.5, SpanKind::Open)]
        );
        assert_eq!(kinds(3), [(0.0, 13.5, SpanKind::Open)]);
        assert_eq!(t.lanes[0].label, "SIP/a-1 (1001 Alice)");
        assert_eq!(
            t.lanes[0].title,
            "SIP/a-1, 1001 Alice; created 13:54:52.500; answered 13:54:54.500; ended 13:55:06; \
             hangup cause Normal Clearing"
        );
        assert!(t.lanes[1].title.ends_with("; dial status NOANSWER"));
        assert_eq!(t.marks.len(), 1);
        assert_eq!(t.marks[0].label, "blind transfer");
        assert_eq!(
            t.marks[0].title,
            "blind transfer at 13:54:58, by 1.1, to 2003@phones, result Success"
        );
        assert!((t.marks[0].at - 5.5).abs() < 1e-9);

        let mut b = String::new();
        timeline_figure(&mut b, &t);
        assert_eq!(b.matches("<g class=\"lane\">").count(), 4);
        assert!(b.contains(">blind transfer</text>"));
        assert!(
            b.contains("<title>ringing 13:54:52.500–13:54:54.500 (2 s)</title>"),
            "{b}"
        );
        assert!(
            b.contains(">13:55:00</text>"),
            "a tick on a round time: {b}"
        );
        assert!(
            b.contains(">no end seen</text>"),
            "the legend names the kinds drawn"
        );
        assert!(!b.contains(">on hold or parked</text>"));
    }

    #[test]
    fn timeline_of_smdr_records_puts_segments_one_after_the_other() {
        let call = json!({
            "start_time": "2018-01-05T21:30:09",
            "end_time": "2018-01-05T21:54:15",
            "records": [
                {"ring": 11, "duration": 281, "hold_time": 200, "park_time": 55,
                 "party_1_device": "E244", "party_1_name": "Volunteer2",
                 "party_2_device": "T9002", "party_2_name": "Line 2.0", "continued": true},
                {"ring": 0, "duration": 899, "hold_time": 0, "park_time": 0,
                 "party_1_device": "T9002", "party_1_name": "Line 2.0",
                 "party_2_device": "V8", "party_2_name": ""},
                {"ring": 0, "duration": 0, "party_1_device": "E1", "party_2_device": "E2"}
            ]
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!(t.what, "record");
        assert!((t.span - 1446.0).abs() < 1e-9);
        let spans: Vec<Vec<(f64, f64, SpanKind)>> = t
            .lanes
            .iter()
            .map(|l| l.spans.iter().map(|s| (s.from, s.to, s.kind)).collect())
            .collect();
        assert_eq!(
            spans,
            [
                vec![
                    (0.0, 11.0, SpanKind::Ringing),
                    (11.0, 292.0, SpanKind::Connected),
                    (292.0, 547.0, SpanKind::Held)
                ],
                vec![(547.0, 1446.0, SpanKind::Connected)],
                vec![]
            ]
        );
        assert_eq!(t.lanes[2].at, 1446.0);
        assert_eq!(t.lanes[0].label, "1. E244 – T9002");
        assert_eq!(
            t.lanes[0].title,
            "Record 1: E244 Volunteer2 with T9002 Line 2.0, from 21:30:09 to 21:39:16: ring 11 s, \
             connected 0:04:41, hold 0:03:20, park 55 s; continued in a later record"
        );
        assert!(
            t.lanes[1]
                .title
                .starts_with("Record 2: T9002 Line 2.0 with V8, ")
        );
        let mut b = String::new();
        timeline_figure(&mut b, &t);
        assert!(
            b.contains("<rect class=\"instant\""),
            "a record of no length: {b}"
        );
        assert!(b.contains(">21:35</text>"), "{b}");
    }

    #[test]
    fn timeline_of_a_cms_call_is_in_utc_and_names_each_address_once() {
        let call = json!({
            "source": "cms",
            "start_time": "2017-04-24T12:00:11", "end_time": "2017-04-24T13:06:05",
            "legs": [{"channel": "carol@example.org", "caller_num": "carol@example.org",
                      "caller_name": "Carol", "start": "2017-04-24T12:00:11",
                      "answer": "2017-04-24T12:00:11", "end": "2017-04-24T13:06:05"}]
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!(t.lanes[0].label, "carol@example.org (Carol)");
        let mut b = String::new();
        timeline_figure(&mut b, &t);
        assert!(
            b.contains(">1 leg from 12:00:11 to 13:06:05 UTC (1:05:54)</figcaption>"),
            "{b}"
        );
        assert!(b.contains(">12:10</text>"), "ten-minute ticks: {b}");
    }

    #[test]
    fn timeline_of_a_call_without_legs_or_records() {
        let call = json!({
            "start_time": "2024-03-01T10:00:00", "end_time": "2024-03-01T10:01:00",
            "answered": true, "answer_time": "2024-03-01T10:00:15"
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!((t.what, t.lanes.len()), ("call", 1));
        let kinds: Vec<SpanKind> = t.lanes[0].spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SpanKind::Ringing, SpanKind::Connected]);
        assert_eq!(Timeline::of(&json!({"legs": []})), None);
    }
}
