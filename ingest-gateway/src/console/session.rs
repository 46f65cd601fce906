//! Console sessions: the admin token exchanged for a cookie, and the CSRF
//! token every write made with that cookie must carry.
//!
//! Guarantees, argued here and nowhere else:
//! 1. **A session proves the admin token was presented.** It is created only by
//!    [`Sessions::sign_in`] after a constant-time comparison with the token's
//!    hash, and lives at most [`SESSION_LIFETIME`]; sign-out removes it at once.
//!    The cookie holds 256 random bits; the store keeps only their SHA-256, so
//!    neither a memory dump nor a lookup's timing gives a usable cookie away.
//! 2. **The cookie never reaches script or another site.** `HttpOnly` keeps it
//!    out of page script (an injected script cannot carry it away);
//!    `SameSite=Strict` keeps the browser from sending it on any request that
//!    another site starts (a form post, an image, a link followed).
//! 3. **Every write made with the cookie carries the session's CSRF token** in
//!    `X-CSRF-Token` (another 256 random bits, compared in constant time).
//!    A page of another origin cannot learn it: it reads no answer of this
//!    listener (no CORS grant here) and cannot set that header on a cross-site
//!    request without a preflight this listener never grants. So a write
//!    without it, or with another session's, is refused 403 even when
//!    `SameSite` is not honoured (an old browser, a sibling subdomain).
//! 4. **Bearer clients are untouched**: a request with `Authorization: Bearer`
//!    is judged by that alone (a browser never attaches it by itself, so it
//!    needs no CSRF token).
//!
//! Sessions live in this gateway's memory: a restart signs everyone out, and
//! behind a load balancer the console needs sticky sessions (or one gateway
//! for the admin listener, its default: loopback). At most [`MAX_SESSIONS`]
//! are kept; beyond that the oldest goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::auth::{hash_key, KeyHash};

/// The cookie's name.
pub const COOKIE: &str = "powehi_console";
/// The header a console write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in (a working day).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Live sessions kept at once; the oldest are dropped beyond it.
pub const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf_token: String,
    created: Instant,
}

/// What a signed-in browser gets: the cookie value (set `HttpOnly`) and the
/// CSRF token (handed to the page's script).
pub struct NewSession {
    pub cookie_value: String,
    pub csrf_token: String,
}

/// Why a request made with a session cookie is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// No cookie, or one that names no live session: 401.
    NotSignedIn,
    /// A write without `X-CSRF-Token`: 403.
    CsrfMissing,
    /// A write whose `X-CSRF-Token` is not its session's: 403.
    CsrfWrong,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<KeyHash, Session>>,
}

/// 256 bits from the OS generator (two v4 UUIDs), as write keys are made.
fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// A new session if `presented` is the admin token (by its hash, in
    /// constant time); `None` otherwise.
    pub fn sign_in(&self, presented: &str, admin_token_hash: &KeyHash) -> Option<NewSession> {
        if !bool::from(hash_key(presented).ct_eq(admin_token_hash)) {
            return None;
        }
        let session = NewSession {
            cookie_value: random_token("cs_"),
            csrf_token: random_token("csrf_"),
        };
        let mut live = self.lock();
        live.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        while live.len() >= MAX_SESSIONS {
            let oldest = live.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            match oldest {
                Some(key) => live.remove(&key),
                None => break,
            };
        }
        live.insert(
            hash_key(&session.cookie_value),
            Session {
                csrf_token: session.csrf_token.clone(),
                created: Instant::now(),
            },
        );
        Some(session)
    }

    /// The CSRF token of the live session the cookie names.
    pub fn csrf_token(&self, cookie_value: &str) -> Option<String> {
        let key = hash_key(cookie_value);
        let mut live = self.lock();
        match live.get(&key) {
            Some(s) if s.created.elapsed() < SESSION_LIFETIME => Some(s.csrf_token.clone()),
            Some(_) => {
                live.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether a request made with this cookie may go on: any live session
    /// for a read; for a write (`needs_csrf`), also its CSRF token.
    pub fn admit(
        &self,
        cookie_value: Option<&str>,
        needs_csrf: bool,
        csrf_presented: Option<&str>,
    ) -> Result<(), SessionRefusal> {
        let expected = cookie_value
            .and_then(|c| self.csrf_token(c))
            .ok_or(SessionRefusal::NotSignedIn)?;
        if !needs_csrf {
            return Ok(());
        }
        let presented = csrf_presented
            .filter(|p| !p.is_empty())
            .ok_or(SessionRefusal::CsrfMissing)?;
        // Equal-length hashes, so the comparison's time says nothing of the token.
        if bool::from(hash_key(presented).ct_eq(&hash_key(&expected))) {
            Ok(())
        } else {
            Err(SessionRefusal::CsrfWrong)
        }
    }

    /// Ends the session the cookie names (sign-out); unknown cookies are a no-op.
    pub fn sign_out(&self, cookie_value: &str) {
        self.lock().remove(&hash_key(cookie_value));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, Session>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The value of cookie `name` in a `Cookie:` header (`a=1; b=2`).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session: script cannot read it, no other site's
/// request carries it, every admin path gets it (the API lives under `/v1`).
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// `Set-Cookie` that removes the cookie (sign-out).
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> KeyHash {
        hash_key("the-admin-token")
    }

    #[test]
    fn only_the_admin_token_opens_a_session() {
        let sessions = Sessions::default();
        assert!(sessions.sign_in("wrong", &admin()).is_none());
        assert!(sessions.sign_in("", &admin()).is_none());
        let session = sessions.sign_in("the-admin-token", &admin());
        assert!(session.is_some());
    }

    #[test]
    fn reads_need_a_live_session_and_writes_its_csrf_token() {
        let sessions = Sessions::default();
        let Some(s) = sessions.sign_in("the-admin-token", &admin()) else {
            panic!("sign-in refused")
        };
        let cookie = Some(s.cookie_value.as_str());
        assert_eq!(sessions.admit(cookie, false, None), Ok(()));
        assert_eq!(
            sessions.admit(cookie, true, None),
            Err(SessionRefusal::CsrfMissing)
        );
        assert_eq!(
            sessions.admit(cookie, true, Some("")),
            Err(SessionRefusal::CsrfMissing)
        );
        assert_eq!(
            sessions.admit(cookie, true, Some("csrf_guess")),
            Err(SessionRefusal::CsrfWrong)
        );
        assert_eq!(sessions.admit(cookie, true, Some(&s.csrf_token)), Ok(()));
        assert_eq!(
            sessions.admit(Some("cs_forged"), false, None),
            Err(SessionRefusal::NotSignedIn)
        );
        assert_eq!(
            sessions.admit(None, false, None),
            Err(SessionRefusal::NotSignedIn)
        );
    }

    #[test]
    fn another_sessions_csrf_token_is_refused_and_sign_out_ends_it() {
        let sessions = Sessions::default();
        let (Some(a), Some(b)) = (
            sessions.sign_in("the-admin-token", &admin()),
            sessions.sign_in("the-admin-token", &admin()),
        ) else {
            panic!("sign-in refused")
        };
        assert_eq!(
            sessions.admit(Some(&a.cookie_value), true, Some(&b.csrf_token)),
            Err(SessionRefusal::CsrfWrong)
        );
        sessions.sign_out(&a.cookie_value);
        assert_eq!(
            sessions.admit(Some(&a.cookie_value), false, None),
            Err(SessionRefusal::NotSignedIn)
        );
        assert_eq!(sessions.admit(Some(&b.cookie_value), false, None), Ok(()));
    }

    #[test]
    fn the_store_is_bounded() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 5 {
            assert!(sessions.sign_in("the-admin-token", &admin()).is_some());
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn cookie_header_parsing() {
        let header = "a=1; powehi_console=cs_abc ; b=2";
        assert_eq!(cookie_value(header, COOKIE), Some("cs_abc"));
        assert_eq!(cookie_value("powehi_console=", COOKIE), None);
        assert_eq!(cookie_value("xpowehi_console=1", COOKIE), None);
        assert!(set_cookie("v").contains("HttpOnly; SameSite=Strict"));
    }
}
