//! Sessions: random ids in an HttpOnly, SameSite=Strict cookie, a CSRF token per session,
//! rotation at login and logout after idle time. Kept in memory: a restart logs users out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use yiciban_core::users::{Role, User};

use crate::AppState;
use crate::error::AppError;

pub const COOKIE: &str = "yiciban_session";
/// Live sessions a node keeps at most; the oldest idle ones go first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub csrf: String,
    last_seen: Instant,
}

#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a fresh session for `user`, ending `old` if given (rotation at login).
    pub fn start(&self, user: &User, old: Option<&str>) -> Session {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = old {
            map.remove(old);
        }
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            let idle = self.idle;
            map.retain(|_, s| now.duration_since(s.last_seen) < idle);
        }
        let session = Session {
            id: random_token(),
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            csrf: random_token(),
            last_seen: now,
        };
        map.insert(session.id.clone(), session.clone());
        session
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let session = map.get_mut(id)?;
        if now.duration_since(session.last_seen) > self.idle {
            map.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    pub fn end(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The session cookie's value in a request's headers, if any.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

/// The value of cookie `name` in a request's headers, if any.
pub fn cookie_named(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub fn set_cookie(session: &Session) -> String {
    format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", session.id)
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A logged-in user. Pages without one redirect to the login page; the API answers 401.
#[derive(Debug, Clone)]
pub struct Auth(pub Session);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        // Nested routers see their path without the prefix; the original URI keeps it.
        let api = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri.path(), |u| u.0.path())
            .starts_with("/api/");
        cookie_value(&parts.headers)
            .and_then(|id| state.sessions.get(&id))
            .map(Auth)
            .ok_or(if api {
                AppError::Unauthorized
            } else {
                AppError::LoginRequired
            })
    }
}

impl Auth {
    pub fn require(&self, action: crate::authz::Action) -> Result<(), AppError> {
        if crate::authz::allowed(self.0.role, action) {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    pub fn actor(&self) -> yiciban_core::node::Actor {
        yiciban_core::node::Actor {
            username: self.0.username.clone(),
            role: self.0.role,
        }
    }

    /// Checks the CSRF token sent with a write (header for the API, form field for pages).
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), AppError> {
        match sent {
            Some(token) if constant_time_eq(token.as_bytes(), self.0.csrf.as_bytes()) => Ok(()),
            _ => Err(AppError::Csrf),
        }
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
