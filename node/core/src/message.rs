//! A message for people, in Chinese first and English second.

use serde::{Deserialize, Serialize};

/// One message in both languages the node speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    pub zh: String,
    pub en: String,
}

impl Msg {
    pub fn new(zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            zh: zh.into(),
            en: en.into(),
        }
    }

    /// Both languages in one line, for the API: `中文 / English`.
    pub fn both(&self) -> String {
        format!("{} / {}", self.zh, self.en)
    }
}

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.both())
    }
}
