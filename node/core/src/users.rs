//! Users, roles and passwords (Argon2id), and the login guard that locks an account after
//! repeated failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The six roles (三员分立: county admin, security admin and auditor are separate duties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Clerk,
    Reviewer,
    Approver,
    CountyAdmin,
    SecurityAdmin,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Clerk,
        Role::Reviewer,
        Role::Approver,
        Role::CountyAdmin,
        Role::SecurityAdmin,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clerk => "clerk",
            Role::Reviewer => "reviewer",
            Role::Approver => "approver",
            Role::CountyAdmin => "county_admin",
            Role::SecurityAdmin => "security_admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn zh(self) -> &'static str {
        match self {
            Role::Clerk => "受理员",
            Role::Reviewer => "审核员",
            Role::Approver => "审批员",
            Role::CountyAdmin => "系统管理员",
            Role::SecurityAdmin => "安全管理员",
            Role::Auditor => "安全审计员",
        }
    }

    /// Whether the role works on cases (files, comments, withdraws). Admins and auditors
    /// do not touch case content.
    pub fn handles_cases(self) -> bool {
        matches!(self, Role::Clerk | Role::Reviewer | Role::Approver)
    }
}

/// A user as stored in `users-1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
    pub disabled: bool,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PasswordError {
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub const MIN_PASSWORD_CHARS: usize = 8;

/// Hashes a password with Argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let mut salt_bytes = [0u8; 16];
    rand::fill(&mut salt_bytes);
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Checks a password against a stored hash; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub fn valid_username(name: &str) -> bool {
    (2..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Counts failed logins per username and locks the account for a while after too many.
#[derive(Debug)]
pub struct LoginGuard {
    max_failures: u32,
    lock_for: Duration,
    state: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

impl LoginGuard {
    pub fn new(max_failures: u32, lock_for: Duration) -> Self {
        Self {
            max_failures,
            lock_for,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Remaining lock time, if the account is locked now.
    pub fn locked(&self, username: &str, now: Instant) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (_, until) = state.get(username)?;
        until.and_then(|u| u.checked_duration_since(now))
    }

    pub fn failed(&self, username: &str, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Bound the map: a flood of made-up usernames must not grow it without limit.
        if state.len() > 10_000 {
            state.retain(|_, (_, until)| until.is_some_and(|u| u > now));
        }
        let entry = state.entry(username.to_string()).or_insert((0, None));
        if entry.1.is_some_and(|u| u <= now) {
            *entry = (0, None);
        }
        entry.0 += 1;
        if entry.0 >= self.max_failures {
            entry.1 = Some(now + self.lock_for);
        }
    }

    pub fn succeeded(&self, username: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hash_verifies_only_the_right_password() {
        let hash = hash_password("yiciban-demo").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "yiciban-demo"));
        assert!(!verify_password(&hash, "yiciban-demO"));
        assert!(!verify_password("garbage", "yiciban-demo"));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
    }

    #[test]
    fn guard_locks_after_max_failures_and_unlocks_later() {
        let guard = LoginGuard::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            guard.failed("clerk", t0);
        }
        assert!(guard.locked("clerk", t0).is_none());
        guard.failed("clerk", t0);
        assert!(guard.locked("clerk", t0).is_some());
        assert!(
            guard
                .locked("clerk", t0 + Duration::from_secs(61))
                .is_none()
        );
        assert!(guard.locked("other", t0).is_none());
    }
}
