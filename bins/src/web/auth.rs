//! Access control of the web server: who may read the calls and who may administer the relay.
//!
//! Access is granted by bearer tokens (`Authorization: Bearer TOKEN`, from
//! `CDR_RELAY_READ_TOKENS` and `CDR_RELAY_ADMIN_TOKENS`) and by users with passwords (HTTP
//! Basic, from `CDR_RELAY_USERS`: `name:role:PHC` entries, the password stored as an argon2
//! PHC string that `--hash-password` prints). What a request needs is decided by its path and
//! method alone ([`need`]): `/healthz` and `/readyz` are open (so is the CMS receiver's `POST`,
//! which has its own token); anything under `/api/v1/admin/` or with a method other than `GET`
//! and `HEAD` needs admin; the rest (pages, JSON API, dead letters, `/metrics`) needs read,
//! which admin includes.
//!
//! With no credentials configured everything is open, unless the operator opted into a
//! public read-only page (`CDR_RELAY_PUBLIC_READ`): then reading is open and administration
//! is disabled until admin credentials are set. The settings refuse a web server bound to
//! anything but loopback with neither (see [`crate::settings::web`]).
//!
//! Tokens are compared as SHA-256 digests with `subtle` (constant time, no early return on a
//! length mismatch, every configured token compared). Passwords are verified with `argon2`
//! on the blocking pool, at most two at once (a flood of guesses costs the attacker, not the
//! relay's memory; a guess that waits over two seconds for its turn is refused); a user name that does not exist costs the same as a wrong password. A
//! successful login is remembered by the digest of its header, so a browser sending the same
//! credentials with every request pays argon2 once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::ops::secret::{digest, digest_in};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::sync::Semaphore;

use super::Resp;
use super::respond::text;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read the calls: pages, JSON API, dead letters, metrics.
    Read,
    /// Read, and use the admin endpoints and methods other than `GET`.
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// `read` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// A user of the web page: a name, a role and an argon2 PHC string of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    role: Role,
    phc: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({}, {})", self.name, self.role.as_str())
    }
}

/// What a request needs, by its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: `/healthz`, `/readyz`.
    Open,
    /// [`Role::Read`] or more.
    Read,
    /// [`Role::Admin`].
    Admin,
}

/// What a request to `path` with `method` needs (the CMS receiver's `POST` is handled, with
/// its own token, before this is asked).
pub fn need(method: &Method, path: &str) -> Need {
    if path.starts_with("/api/v1/admin/") || (method != Method::GET && method != Method::HEAD) {
        Need::Admin
    } else if path == "/healthz" || path == "/readyz" {
        Need::Open
    } else {
        Need::Read
    }
}

/// A problem with the access settings, said so a user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A `CDR_RELAY_USERS` entry is not `name:role:PHC`.
    #[error(
        "CDR_RELAY_USERS: entry {0}: expected name:role:PHC (role read or admin, PHC from --hash-password)"
    )]
    BadUser(usize),
    /// A `CDR_RELAY_USERS` entry's password hash is not a PHC string.
    #[error(
        "CDR_RELAY_USERS: user {0:?}: the password hash is not a PHC string ({1}); make one with --hash-password"
    )]
    BadHash(String, String),
    /// Two users with one name.
    #[error("CDR_RELAY_USERS: user {0:?} is listed twice")]
    Duplicate(String),
    /// A token shorter than 16 characters.
    #[error("{0}: every token must have at least 16 characters")]
    ShortToken(&'static str),
    /// The password could not be hashed.
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// The access rules of one web server (cheap to clone; the login cache is shared).
#[derive(Clone, Default)]
pub struct Access {
    read_tokens: Vec<[u8; 32]>,
    admin_tokens: Vec<[u8; 32]>,
    users: Vec<User>,
    public_read: bool,
    cache: Arc<LoginCache>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PartialEq for Access {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.read_tokens,
            &self.admin_tokens,
            &self.users,
            self.public_read,
        ) == (
            &other.read_tokens,
            &other.admin_tokens,
            &other.users,
            other.public_read,
        )
    }
}

/// Successful Basic logins by the digest of their header, and the limit on argon2 at once.
struct LoginCache {
    known: Mutex<HashMap<[u8; 32], Role>>,
    verifying: Semaphore,
}

impl Default for LoginCache {
    fn default() -> Self {
        Self {
            known: Mutex::new(HashMap::new()),
            verifying: Semaphore::new(2),
        }
    }
}

/// How long a login may wait for its turn at argon2 before it is refused.
const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Logins remembered at most; the cache is emptied when it is full.
const MAX_CACHED_LOGINS: usize = 1024;

impl Access {
    /// Access from the settings: tokens (each at least 16 characters), `users` (the text of
    /// `CDR_RELAY_USERS`, see [`Access::parse_users`]) and whether reading is public.
    pub fn new(
        read_tokens: &[String],
        admin_tokens: &[String],
        users: &str,
        public_read: bool,
    ) -> Result<Self, AccessError> {
        let tokens = |list: &[String], name| {
            list.iter()
                .map(|t| {
                    if t.chars().count() < 16 {
                        Err(AccessError::ShortToken(name))
                    } else {
                        Ok(digest(t.as_bytes()))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            read_tokens: tokens(read_tokens, "CDR_RELAY_READ_TOKENS")?,
            admin_tokens: tokens(admin_tokens, "CDR_RELAY_ADMIN_TOKENS")?,
            users: Self::parse_users(users)?,
            public_read,
            cache: Arc::default(),
        })
    }

    /// Parses `CDR_RELAY_USERS`: entries `name:role:PHC` (role `read` or `admin`) separated by
    /// whitespace or `;` (PHC strings hold commas).
    pub fn parse_users(text: &str) -> Result<Vec<User>, AccessError> {
        let mut users: Vec<User> = Vec::new();
        for (n, entry) in text
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(phc)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(AccessError::BadUser(n + 1));
            };
            let role = Role::parse(role).ok_or(AccessError::BadUser(n + 1))?;
            if name.is_empty() {
                return Err(AccessError::BadUser(n + 1));
            }
            PasswordHash::new(phc)
                .map_err(|e| AccessError::BadHash(name.to_owned(), e.to_string()))?;
            if users.iter().any(|u| u.name == name) {
                return Err(AccessError::Duplicate(name.to_owned()));
            }
            users.push(User {
                name: name.to_owned(),
                role,
                phc: phc.to_owned(),
            });
        }
        Ok(users)
    }

    /// Whether any credential (token or user) is configured.
    pub fn is_configured(&self) -> bool {
        !self.read_tokens.is_empty() || !self.admin_tokens.is_empty() || !self.users.is_empty()
    }

    /// Whether some credential has admin access.
    pub fn has_admin(&self) -> bool {
        !self.admin_tokens.is_empty() || self.users.iter().any(|u| u.role == Role::Admin)
    }

    /// Whether reading is open to anyone (`CDR_RELAY_PUBLIC_READ`).
    pub fn public_read(&self) -> bool {
        self.public_read
    }

    /// One line for `--check-config`: what is configured, never a secret.
    pub fn describe(&self) -> String {
        if !self.is_configured() && !self.public_read {
            return "open (no credentials configured)".to_owned();
        }
        let mut parts = Vec::new();
        if self.public_read {
            parts.push("reading public".to_owned());
        }
        if !self.read_tokens.is_empty() {
            parts.push(format!("{} read token(s)", self.read_tokens.len()));
        }
        if !self.admin_tokens.is_empty() {
            parts.push(format!("{} admin token(s)", self.admin_tokens.len()));
        }
        for u in &self.users {
            parts.push(format!("user {} ({})", u.name, u.role.as_str()));
        }
        if !self.has_admin() {
            parts.push("admin disabled".to_owned());
        }
        parts.join(", ")
    }

    /// Lets the request with `headers` through when it has what `need` asks, else the answer
    /// to send: 401 with the challenges (no or wrong credentials), 403 (too little access, or
    /// administration disabled).
    pub(super) async fn check(&self, headers: &HeaderMap, need: Need) -> Result<(), Resp> {
        let wanted = match need {
            Need::Open => return Ok(()),
            Need::Read => Role::Read,
            Need::Admin => Role::Admin,
        };
        if !self.is_configured() {
            return if !self.public_read || wanted == Role::Read {
                Ok(())
            } else {
                Err(text(
                    StatusCode::FORBIDDEN,
                    "administration is disabled: set CDR_RELAY_ADMIN_TOKENS or an admin user in CDR_RELAY_USERS\n",
                ))
            };
        }
        if wanted == Role::Read && self.public_read {
            return Ok(());
        }
        if wanted == Role::Admin && !self.has_admin() {
            return Err(text(
                StatusCode::FORBIDDEN,
                "administration is disabled: set CDR_RELAY_ADMIN_TOKENS or an admin user in CDR_RELAY_USERS\n",
            ));
        }
        match self.role_of(headers).await {
            Some(role) if role >= wanted => Ok(()),
            Some(_) => Err(text(StatusCode::FORBIDDEN, "admin access needed\n")),
            None => Err(self.challenge()),
        }
    }

    /// The 401 answer, with a `WWW-Authenticate` challenge per configured scheme (Basic makes
    /// a browser ask for a user and password).
    fn challenge(&self) -> Resp {
        let mut resp = text(StatusCode::UNAUTHORIZED, "authentication required\n");
        let headers = resp.headers_mut();
        if !self.users.is_empty() {
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cdr-relay\", charset=\"UTF-8\""),
            );
        }
        if !self.read_tokens.is_empty() || !self.admin_tokens.is_empty() {
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cdr-relay\""),
            );
        }
        resp
    }

    /// The role the request's `Authorization` header proves, if any.
    async fn role_of(&self, headers: &HeaderMap) -> Option<Role> {
        let value = headers.get(header::AUTHORIZATION)?.as_bytes();
        let (scheme, rest) = split_scheme(value)?;
        if scheme.eq_ignore_ascii_case(b"bearer") {
            self.token_role(rest)
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            self.basic_role(rest).await
        } else {
            None
        }
    }

    /// Compares the token's digest with every configured one, in constant time.
    fn token_role(&self, token: &[u8]) -> Option<Role> {
        let d = digest(token);
        if digest_in(&d, &self.admin_tokens) {
            Some(Role::Admin)
        } else if digest_in(&d, &self.read_tokens) {
            Some(Role::Read)
        } else {
            None
        }
    }

    async fn basic_role(&self, encoded: &[u8]) -> Option<Role> {
        if self.users.is_empty() || encoded.len() > 1024 {
            return None;
        }
        let key = digest(encoded);
        if let Some(role) = self.cache.known.lock().ok()?.get(&key) {
            return Some(*role);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let (name, password) = (&decoded[..colon], decoded[colon + 1..].to_vec());
        let user = self.users.iter().find(|u| u.name.as_bytes() == name);
        let (phc, role) = match user {
            Some(u) => (u.phc.clone(), Some(u.role)),
            None => (dummy_hash().to_owned(), None),
        };
        // A flood of guesses waits here a bounded time, then fails, so that it cannot hold
        // the server's connection slots.
        let _permit = tokio::time::timeout(VERIFY_WAIT, self.cache.verifying.acquire())
            .await
            .ok()?
            .ok()?;
        let ok = tokio::task::spawn_blocking(move || verify(&password, &phc))
            .await
            .unwrap_or(false);
        let role = role.filter(|_| ok)?;
        if let Ok(mut known) = self.cache.known.lock() {
            if known.len() >= MAX_CACHED_LOGINS {
                known.clear();
            }
            known.insert(key, role);
        }
        Some(role)
    }
}

/// `Scheme rest` of an `Authorization` header value.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|b| *b == b' ')?;
    let rest = value[space + 1..].trim_ascii();
    (!rest.is_empty()).then_some((&value[..space], rest))
}

/// Whether `password` matches the PHC string `phc`.
fn verify(password: &[u8], phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password, &hash).is_ok())
        .unwrap_or(false)
}

/// A hash verified for unknown user names, so that they cost what a known one costs.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"not a password of anyone").unwrap_or_default())
}

/// The argon2id PHC string of `password` with a fresh random salt (the crate's default
/// parameters: 19 MiB, 2 passes), as `CDR_RELAY_USERS` takes it.
pub fn hash_password(password: &[u8]) -> Result<String, AccessError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AccessError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[tokio::test]
    async fn users_and_tokens() {
        let phc = hash_password(b"s3cret").unwrap_or_default();
        assert!(phc.starts_with("$argon2id$"));
        let access = Access::new(
            &["read-token-0123456789".to_owned()],
            &[],
            &format!("ann:admin:{phc}; bob:read:{phc}"),
            false,
        )
        .unwrap_or_default();
        assert!(
            access
                .check(&basic("ann", "s3cret"), Need::Admin)
                .await
                .is_ok()
        );
        assert!(
            access
                .check(&basic("ann", "s3cret"), Need::Admin)
                .await
                .is_ok()
        );
        assert!(
            access
                .check(&basic("bob", "s3cret"), Need::Read)
                .await
                .is_ok()
        );
        let denied = access.check(&basic("bob", "s3cret"), Need::Admin).await;
        assert_eq!(
            denied.err().map(|r| r.status()),
            Some(StatusCode::FORBIDDEN)
        );
        let wrong = access.check(&basic("ann", "nope"), Need::Read).await;
        assert_eq!(
            wrong.err().map(|r| r.status()),
            Some(StatusCode::UNAUTHORIZED)
        );
        let nobody = access.check(&basic("eve", "s3cret"), Need::Read).await;
        assert_eq!(
            nobody.err().map(|r| r.status()),
            Some(StatusCode::UNAUTHORIZED)
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer read-token-0123456789"),
        );
        assert!(access.check(&bearer, Need::Read).await.is_ok());
        assert!(access.check(&HeaderMap::new(), Need::Open).await.is_ok());
        assert!(Access::parse_users("ann:root:x").is_err());
        assert!(Access::parse_users("ann:read:notaphc").is_err());
        assert!(Access::new(&["short".to_owned()], &[], "", false).is_err());
    }

    #[test]
    fn needs() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Open);
        assert_eq!(need(&Method::GET, "/metrics"), Need::Read);
        assert_eq!(need(&Method::GET, "/api/v1/admin/x"), Need::Admin);
        assert_eq!(need(&Method::POST, "/calls/x"), Need::Admin);
    }
}
