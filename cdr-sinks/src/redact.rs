//! Secrets never printed: URLs shown with their password and token-like query values masked.
//!
//! One place decides what a URL looks like when it is shown: `--check-config`, the logs (every
//! line written goes through [`redact_urls_in`]), Sentry events and the sinks' error messages.
//!
//! * The password of the userinfo (`https://user:secret@host`) becomes `***`; the user name
//!   stays (it says which account, and is not a secret), except in a NATS URL (`nats://`,
//!   `tls://`), where a user name without a password is a token (`nats://TOKEN@host`) and is
//!   masked too.
//! * The value of every query parameter whose name looks like a credential ([`is_secret_name`]:
//!   `token`, `key`, `secret`, `password`, `sig`, `auth`, `apikey`, `access_token`, ...) becomes
//!   `***`.
//!
//! Parsing is the `url` crate's (WHATWG rules, what browsers and `reqwest` use), so odd
//! spellings (`HTTP://`, percent-escapes, `@` in the password) are read the way a client would
//! read them; text that is not a URL is left as it is, except that an `@` in it hides what is
//! before it when it looks like a URL's userinfo.

/// Name parts that mark a query parameter as a credential (matched case-insensitively, as a
/// part of the name: `X-Amz-Signature`, `api_key`, `sessionToken`).
const SECRET_NAMES: [&str; 12] = [
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "auth",
    "credential",
    "session",
    "code",
    "jwt",
];

/// Schemes of NATS server URLs, where a user name alone is a token.
const NATS_SCHEMES: [&str; 2] = ["nats", "tls"];

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// Whether a query parameter (or setting) named `name` holds a credential.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| lower.contains(s))
}

/// `url` as it may be shown: its password and its token-like query values masked (see the
/// module documentation). Text that does not parse as a URL is returned with anything before
/// an `@` in its authority masked.
///
/// ```
/// use cdr_sinks::redact::redact_url;
///
/// assert_eq!(
///     redact_url("https://relay:s3cret@cdr.example/in?site=a&token=abc"),
///     "https://relay:***@cdr.example/in?site=a&token=***"
/// );
/// assert_eq!(redact_url("http://host:8080/x"), "http://host:8080/x");
/// ```
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_unparsed(url);
    };
    if !parsed.has_host() {
        return url.to_owned();
    }
    let mut changed = false;
    if parsed.password().is_some() {
        changed |= parsed.set_password(Some(MASK)).is_ok();
    } else if !parsed.username().is_empty() && NATS_SCHEMES.contains(&parsed.scheme()) {
        changed |= parsed.set_username(MASK).is_ok();
    }
    if let Some(query) = parsed.query() {
        let (masked, any) = mask_query(query);
        if any {
            parsed.set_query(Some(&masked));
            changed = true;
        }
    }
    if changed {
        parsed.to_string()
    } else {
        // Unchanged: as it was written (the parser would add a `/` to a bare host).
        url.to_owned()
    }
}

/// The query with the values of credential-like parameters masked (the rest kept as written),
/// and whether any was.
fn mask_query(query: &str) -> (String, bool) {
    let mut any = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() => {
                let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .collect();
                if is_secret_name(&decoded) {
                    any = true;
                    format!("{name}={MASK}")
                } else {
                    pair.to_owned()
                }
            }
            _ => pair.to_owned(),
        })
        .collect();
    (parts.join("&"), any)
}

/// A URL the parser refused: its userinfo (what is before an `@` in the authority) masked, and
/// its query's credential-like values too.
fn redact_unparsed(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{MASK}@{host}"),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let mut t = format!("{path}?{}", mask_query(query).0);
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// `text` with every URL in it (`scheme://...` up to a blank, a quote or `<>`) shown by
/// [`redact_url`]: for log lines and error messages that may quote a URL.
///
/// ```
/// use cdr_sinks::redact::redact_urls_in;
///
/// assert_eq!(
///     redact_urls_in(r#"POST to "http://u:pw@h/x?sig=1" failed"#),
///     r#"POST to "http://u:***@h/x?sig=***" failed"#
/// );
/// ```
pub fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut done = 0usize;
    let mut search = 0usize;
    while let Some(found) = text.get(search..).and_then(|t| t.find("://")) {
        let sep = search.saturating_add(found);
        // The scheme: letters, digits, `+ - .` before `://`, starting with a letter.
        let mut start = sep;
        while start > done
            && bytes
                .get(start.saturating_sub(1))
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            start -= 1;
        }
        let mut end = text
            .get(sep..)
            .and_then(|t| {
                t.find(|c: char| {
                    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '\\')
                })
            })
            .map_or(text.len(), |off| sep.saturating_add(off));
        // Another URL right after this one (`a://x,b://y`): this one ends where its scheme
        // starts.
        let after = sep.saturating_add(3);
        if let Some(next) = text.get(after..end).and_then(|t| t.find("://")) {
            let mut next_start = after.saturating_add(next);
            while next_start > after
                && bytes
                    .get(next_start.saturating_sub(1))
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            {
                next_start -= 1;
            }
            end = next_start;
        }
        if start == sep {
            search = sep.saturating_add(3);
            continue;
        }
        out.push_str(text.get(done..start).unwrap_or_default());
        out.push_str(&redact_url(text.get(start..end).unwrap_or_default()));
        done = end;
        search = end.max(sep.saturating_add(3));
    }
    out.push_str(text.get(done..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_token_values_are_masked() {
        assert_eq!(
            redact_url("https://user:pass@host:8443/cdr?x=1"),
            "https://user:***@host:8443/cdr?x=1"
        );
        assert_eq!(
            redact_url("https://h/p?a=1&access_token=t&X-Amz-Signature=s&apikey=k&b=2"),
            "https://h/p?a=1&access_token=***&X-Amz-Signature=***&apikey=***&b=2"
        );
        assert_eq!(
            redact_url("rediss://:pw@redis:6380/0"),
            "rediss://:***@redis:6380/0"
        );
        assert_eq!(
            redact_url("https://u:p%40ss@h/?Password=x#frag"),
            "https://u:***@h/?Password=***#frag"
        );
        assert_eq!(redact_url("http://host"), "http://host");
        assert_eq!(redact_url("https://user@host/"), "https://user@host/");
        assert_eq!(
            redact_url("nats://s3cret@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222",
            "a NATS token"
        );
        assert_eq!(
            redact_url("tls://relay:pw@nats:4222"),
            "tls://relay:***@nats:4222"
        );
        assert_eq!(
            redact_urls_in("servers nats://t0k@a:1,nats://b:2 down"),
            "servers nats://***@a:1,nats://b:2 down"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("/just/a/path"), "/just/a/path");
    }

    #[test]
    fn what_does_not_parse_loses_its_userinfo() {
        assert_eq!(redact_url("http://u:p@[bad/x"), "http://***@[bad/x");
        assert_eq!(
            redact_url("http://u:p@h:99999/x?token=1"),
            "http://***@h:99999/x?token=***"
        );
    }

    #[test]
    fn urls_inside_text() {
        assert_eq!(redact_urls_in("no url here"), "no url here");
        assert_eq!(
            redact_urls_in("a https://u:p@h/x b redis://:q@r:1 c"),
            "a https://u:***@h/x b redis://:***@r:1 c"
        );
        assert_eq!(
            redact_urls_in(r#"{"url":"http://h/?key=v","n":1}"#),
            r#"{"url":"http://h/?key=***","n":1}"#
        );
        assert_eq!(redact_urls_in(":// alone"), ":// alone");
        assert_eq!(
            redact_urls_in(r#"{"msg":"to \"http://u:p@h/x\" failed"}"#),
            r#"{"msg":"to \"http://u:***@h/x\" failed"}"#,
            "JSON escapes kept"
        );
        let two = redact_urls_in("urls=http://u:p1@a/x,https://v:p2@b/y?key=k done");
        assert!(
            !two.contains("p1") && !two.contains("p2") && !two.contains("=k"),
            "{two}"
        );
        assert!(two.ends_with("https://v:***@b/y?key=*** done"), "{two}");
        assert_eq!(redact_urls_in("é http://u:p@h é"), "é http://u:***@h/ é");
    }

    #[test]
    fn secret_names() {
        for n in [
            "token",
            "API_KEY",
            "sig",
            "Authorization",
            "client_secret",
            "pwd",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["site", "id", "page", "format"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }
}
