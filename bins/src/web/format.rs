//! What the pages and the figures share: HTML escaping (the templates' escaper too) and the
//! formats of durations and times.

/// The HTML escaper of the templates (set in `bins/askama.toml`) and of the charts: `&`, `<`,
/// `>` and `"` as named entities, `'` as `&#39;`; fit for element content and quoted
/// attribute values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Html;

impl askama::filters::Escaper for Html {
    fn write_escaped_str<W: std::fmt::Write>(&self, mut dest: W, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            let (plain, special) = rest.split_at(i);
            dest.write_str(plain)?;
            let mut chars = special.chars();
            dest.write_str(match chars.next() {
                Some('&') => "&amp;",
                Some('<') => "&lt;",
                Some('>') => "&gt;",
                Some('"') => "&quot;",
                _ => "&#39;",
            })?;
            rest = chars.as_str();
        }
        dest.write_str(rest)
    }
}

/// Escapes text for HTML element content and quoted attribute values (as the templates do).
pub(super) fn esc(s: &str) -> String {
    use askama::filters::Escaper as _;
    let mut out = String::with_capacity(s.len());
    let _ = Html.write_escaped_str(&mut out, s);
    out
}

/// Seconds as `H:MM:SS`.
pub(super) fn hms(secs: i64) -> String {
    let s = secs.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Milliseconds since the epoch as a UTC time, or nothing.
pub(super) fn utc(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// What retention keeps and how big the database is, in one line (the call list shows it):
/// `Keeping 30 days, 500 MB; oldest call stored ...; database 12.3 MB (10.1 MB in use)`.
pub(super) fn retention(status: &crate::ops::metrics::RetentionStatus) -> String {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / f64::from(1 << 20));
    let mut out = format!(
        "Keeping {} (calls waiting for a sink are always kept)",
        status.policy
    );
    if let Some(ms) = status.oldest_call_ms {
        out.push_str(&format!("; oldest call stored {}", utc(Some(ms))));
    }
    if let Some(size) = status.size {
        out.push_str(&format!(
            "; database {} ({} in use)",
            mb(size.file_bytes()),
            mb(size.used_bytes())
        ));
    }
    out.push('.');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
