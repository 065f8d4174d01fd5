//! The subject a call is published on, from a template such as `cdr.{source}.{site}`.

use std::borrow::Cow;

use crate::SinkError;

/// A subject template: literal text with `{source}` (`smdr`, `ami`, `cms`, `dialler`) and
/// `{site}` (the call's site, `_` when it has none) filled in per call. A value is made a
/// valid subject token: `.`, `*`, `>`, white space and control characters become `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    text: String,
    needs_call: bool,
}

/// The template used when none is configured.
pub const DEFAULT_SUBJECT: &str = "cdr.{source}.{site}";

impl SubjectTemplate {
    /// Checks `text`: tokens separated by `.`, none empty, placeholders only `{source}` and
    /// `{site}`, no wildcard.
    pub fn parse(text: &str) -> Result<Self, SinkError> {
        let bad = |why: &str| SinkError::Config(format!("NATS subject {text:?}: {why}"));
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        for token in text.split('.') {
            if token.is_empty() {
                return Err(bad("has an empty token"));
            }
            if token.contains(['*', '>']) || token.chars().any(|c| c.is_whitespace()) {
                return Err(bad("has a wildcard or white space"));
            }
            let rest = token.replace("{source}", "").replace("{site}", "");
            if rest.contains(['{', '}']) {
                return Err(bad("the placeholders are {source} and {site}"));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            needs_call: text.contains('{'),
        })
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a call's source or site is needed to render it.
    pub fn needs_call(&self) -> bool {
        self.needs_call
    }

    /// The subject for a call of `source` at `site`.
    pub fn render(&self, source: &str, site: &str) -> String {
        if !self.needs_call {
            return self.text.clone();
        }
        self.text
            .replace("{source}", &token(source))
            .replace("{site}", &token(site))
    }

    /// The subjects a stream must hold for every call this template renders: each token with a
    /// placeholder becomes `*` (`cdr.{source}.{site}` -> `cdr.*.*`).
    pub fn wildcard(&self) -> String {
        self.text
            .split('.')
            .map(|t| if t.contains('{') { "*" } else { t })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// `value` as one subject token.
fn token(value: &str) -> Cow<'_, str> {
    let bad = |c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control();
    if value.is_empty() {
        Cow::Borrowed("_")
    } else if value.chars().any(bad) {
        Cow::Owned(
            value
                .chars()
                .map(|c| if bad(c) { '_' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_widens() {
        let t = SubjectTemplate::parse(DEFAULT_SUBJECT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.render("smdr", "london"), "cdr.smdr.london");
        assert_eq!(t.render("ami", ""), "cdr.ami._");
        assert_eq!(t.render("ami", "a.b *>c"), "cdr.ami.a_b___c");
        assert_eq!(t.wildcard(), "cdr.*.*");
        let fixed = SubjectTemplate::parse("calls").unwrap_or_else(|e| panic!("{e}"));
        assert!(!fixed.needs_call());
        assert_eq!(fixed.render("smdr", "x"), "calls");
        assert_eq!(fixed.wildcard(), "calls");
        let mixed = SubjectTemplate::parse("cdr.site-{site}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mixed.render("smdr", "a"), "cdr.site-a");
        assert_eq!(mixed.wildcard(), "cdr.*");
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in [
            "",
            "cdr..x",
            "cdr.*",
            "cdr.>",
            "cdr.{tenant}",
            "a b",
            "cdr.{site",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }
}
