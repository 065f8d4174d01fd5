//! The query strings of the call list and the API (filters, pages) and percent-encoding.

use call_assembler::CallDirection;
use cdr_sinks::store;

use super::{MAX_PER_PAGE, PAGE_SIZE};

/// The filters of the call list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CallFilter {
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) number: Option<String>,
    pub(super) direction: Option<&'static str>,
    pub(super) complete: Option<bool>,
    pub(super) site: Option<String>,
    pub(super) source: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallQuery {
    pub(super) filter: CallFilter,
    pub(super) page: u64,
    pub(super) per_page: u64,
}

/// `page` (from 1) and `per_page` (1 to [`super::window::CALL_PAGE_ITEMS`], the default) of a
/// call's lists (`/calls/<id>`, `/api/v1/calls/<id>`); other keys are ignored.
pub(super) fn items_page(query: &str) -> Result<(usize, usize), String> {
    let max = super::window::CALL_PAGE_ITEMS;
    let (mut page, mut per_page) = (1, max);
    for (key, value) in query_pairs(query) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "page" => {
                page = usize::try_from(page_number(value)?).unwrap_or(usize::MAX);
            }
            "per_page" => {
                per_page = usize::try_from(per_page_number(value, max as u64)?).unwrap_or(max);
            }
            _ => {}
        }
    }
    Ok((page, per_page))
}

/// A `page` value: a whole number from 1.
fn page_number(value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| "page must be a whole number from 1".to_owned())
}

/// A `per_page` value: a whole number, brought within 1..=`max`.
fn per_page_number(value: &str, max: u64) -> Result<u64, String> {
    Ok(value
        .parse::<u64>()
        .map_err(|_| "per_page must be a whole number")?
        .clamp(1, max))
}

impl CallQuery {
    /// Parses the list's query string; `per_page` is read only when `api` is set.
    pub(super) fn parse(query: &str, api: bool) -> Result<Self, String> {
        let mut q = Self {
            filter: CallFilter::default(),
            page: 1,
            per_page: PAGE_SIZE,
        };
        for (key, value) in query_pairs(query) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "page" => {
                    q.page = page_number(value)?;
                }
                "per_page" if api => {
                    q.per_page = per_page_number(value, MAX_PER_PAGE)?;
                }
                "from" => q.filter.from = Some(time_prefix("from", value)?),
                "to" => q.filter.to = Some(time_prefix("to", value)?),
                "number" => {
                    if value.chars().count() > 64 {
                        return Err("number is too long".to_owned());
                    }
                    q.filter.number = Some(value.to_owned());
                }
                "direction" => {
                    q.filter.direction = Some(match value {
                        "inbound" => "inbound",
                        "outbound" => "outbound",
                        "internal" => "internal",
                        _ => return Err("direction must be inbound, outbound or internal".into()),
                    });
                }
                "site" => {
                    if value.chars().count() > 64 {
                        return Err("site is too long".to_owned());
                    }
                    q.filter.site = Some(value.to_owned());
                }
                "source" => {
                    q.filter.source = Some(match value {
                        "smdr" => "smdr",
                        "ami" => "ami",
                        "cms" => "cms",
                        "dialler" => "dialler",
                        _ => return Err("source must be smdr, ami, cms or dialler".into()),
                    });
                }
                "complete" => {
                    q.filter.complete = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err("complete must be true or false".into()),
                    });
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Checks a `from`/`to` value: a prefix of `YYYY-MM-DDTHH:MM:SS` (a space may stand for `T`).
fn time_prefix(name: &str, value: &str) -> Result<String, String> {
    const PATTERN: &[u8] = b"0000-00-00T00:00:00";
    let value = value.replace(' ', "T");
    let ok = value.len() <= PATTERN.len()
        && value.bytes().zip(PATTERN).all(|(b, p)| match p {
            b'0' => b.is_ascii_digit(),
            p => b == *p,
        });
    if ok {
        Ok(value)
    } else {
        Err(format!(
            "{name} must be a start time prefix like 2018-01-05 or 2018-01-05T10:30:00"
        ))
    }
}

impl CallFilter {
    /// The filter as the store takes it.
    pub(super) fn to_store(&self) -> store::CallFilter {
        store::CallFilter {
            from: self.from.clone(),
            to: self.to.clone(),
            number: self.number.clone(),
            direction: self.direction.and_then(|d| match d {
                "inbound" => Some(CallDirection::Inbound),
                "outbound" => Some(CallDirection::Outbound),
                "internal" => Some(CallDirection::Internal),
                _ => None,
            }),
            complete: self.complete,
            site: self.site.clone(),
            source: self.source.map(str::to_owned),
        }
    }

    /// The filter as a query string (`&`-joined, without a leading `?`).
    pub(super) fn to_query(&self) -> String {
        let mut parts = Vec::new();
        let complete = self.complete.map(|c| if c { "true" } else { "false" });
        for (key, value) in [
            ("from", self.from.as_deref()),
            ("to", self.to.as_deref()),
            ("number", self.number.as_deref()),
            ("direction", self.direction),
            ("complete", complete),
            ("site", self.site.as_deref()),
            ("source", self.source),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", encode(v)));
            }
        }
        parts.join("&")
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space).
pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Percent-decodes a path segment; invalid UTF-8 is replaced.
pub(super) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub(super) fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_encodes_query_values() {
        assert_eq!(decode("a+b%20c%2Bd"), "a+b c+d", "a path keeps its +");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(decode(&encode("x y+z%")), "x y+z%");
        assert_eq!(
            query_pairs("a=1&&b&c=x%3Dy"),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), String::new()),
                ("c".to_owned(), "x=y".to_owned())
            ]
        );
    }

    #[test]
    fn parses_call_queries() {
        let q = CallQuery::parse(
            "page=3&per_page=900&from=2018-01-05+10:00&to=2018-01-05&number=604&direction=inbound&complete=false&x=1",
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.page, 3);
        assert_eq!(q.per_page, MAX_PER_PAGE);
        assert_eq!(q.filter.from.as_deref(), Some("2018-01-05T10:00"));
        assert_eq!(q.filter.to.as_deref(), Some("2018-01-05"));
        assert_eq!(q.filter.number.as_deref(), Some("604"));
        assert_eq!(q.filter.direction, Some("inbound"));
        assert_eq!(q.filter.complete, Some(false));
        // The HTML list ignores per_page; blank values are no filter.
        let q = CallQuery::parse("per_page=5&from=&direction=", false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.per_page, PAGE_SIZE);
        assert_eq!(q.filter, CallFilter::default());
        for bad in [
            "page=0",
            "page=x",
            "direction=up",
            "complete=yes",
            "from=2018/01/05",
            "to=2018-01-05T10:00:00Z",
            "per_page=-1",
            "source=fax",
        ] {
            assert!(CallQuery::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_round_trips_through_its_query_string() {
        let q = CallQuery::parse(
            "from=2018-01-05&number=a+%26b&complete=true&site=S%C3%A3o+Paulo&source=ami",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.filter.site.as_deref(), Some("São Paulo"));
        assert_eq!(q.filter.source, Some("ami"));
        let again = CallQuery::parse(&q.filter.to_query(), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.filter, q.filter);
    }
}
