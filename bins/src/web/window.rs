//! A page of a stored call: its JSON with each top-level list (records, legs, parties, ...)
//! cut to one window of items, the others skipped while parsing (never held), and how many each
//! list has. A call of 130,000 records is shown and served a page at a time.

use serde::Deserializer as _;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Items of each list in one page of a call (pages and API).
pub(super) const CALL_PAGE_ITEMS: usize = 200;

/// One page of a stored call.
#[derive(Debug)]
pub(super) struct Window {
    /// The call's JSON (an object, fields in their stored order) with its lists cut.
    pub(super) body: Vec<u8>,
    /// The lists and how many items each has in all.
    pub(super) lists: Vec<(String, usize)>,
}

impl Window {
    /// Items of the longest list.
    pub(super) fn longest(&self) -> usize {
        self.lists.iter().map(|(_, n)| *n).max().unwrap_or(0)
    }

    /// Whether any list has more items than the window shows.
    pub(super) fn is_cut(&self, take: usize) -> bool {
        self.longest() > take
    }
}

/// The call `body` with every top-level list cut to its items `skip..skip + take`; `None`
/// when `body` is not a JSON object.
pub(super) fn window(body: &[u8], skip: usize, take: usize) -> Option<Window> {
    let fields: indexmap::IndexMap<String, &RawValue> = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len().min(1 << 20));
    let mut lists = Vec::new();
    out.push(b'{');
    for (n, (key, raw)) in fields.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        let text = raw.get();
        if text.starts_with('[') {
            let (items, total) = serde_json::Deserializer::from_str(text)
                .deserialize_seq(Slice { skip, take })
                .ok()?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(item.get().as_bytes());
            }
            out.push(b']');
            lists.push((key.clone(), total));
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b'}');
    Some(Window { body: out, lists })
}

/// Keeps the items `skip..skip + take` of a JSON array, unparsed, and counts them all.
struct Slice {
    skip: usize,
    take: usize,
}

impl<'de> Visitor<'de> for Slice {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        let mut n = 0;
        loop {
            let wanted = n >= self.skip && n - self.skip < self.take;
            let more = if wanted {
                seq.next_element::<&'de RawValue>()?
                    .map(|v| kept.push(v))
                    .is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok((kept, n));
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_every_list_and_keeps_the_order() {
        let body = br#"{"z":1,"records":[{"a":1},{"a":2},{"a":3}],"b":{"c":[1,2]},"legs":[]}"#;
        let w = window(body, 1, 1).unwrap_or_else(|| panic!("an object"));
        assert_eq!(
            String::from_utf8_lossy(&w.body),
            r#"{"z":1,"records":[{"a":2}],"b":{"c":[1,2]},"legs":[]}"#
        );
        assert_eq!(
            w.lists,
            vec![("records".to_owned(), 3), ("legs".to_owned(), 0)]
        );
        assert!(w.is_cut(1));
        assert!(window(b"[1]", 0, 1).is_none());
    }
}
