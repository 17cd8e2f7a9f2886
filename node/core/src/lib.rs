//! # yiciban-core
//!
//! The domain of a yiciban node, with no HTTP and no HTML:
//!
//! - [`catalog`]: the service items (事项) and their guides, routes, materials and fields;
//! - [`application`]: validation of a submission (GB 11643 ID numbers, phones, fields, materials);
//! - [`bundle`]: 一件事 bundles filed as one form and handed out once, 即办件 settled at the counter;
//! - [`case_doc`]: the Automerge schema of a case; [`event`] and [`fold`]: the event log and the
//!   deterministic fold that gives a case its state;
//! - [`store`]: redb with one writer task, group commit and projections in the same transaction;
//! - [`stats`]: the county console's statistics (counts, on-time rate, step days, satisfaction);
//! - [`users`]: roles, Argon2id passwords, login lockout;
//! - [`admin`]: the county's management of its nodes: directory users, enrolment tokens,
//!   revocation (one implementation for the CLI and the console);
//! - [`audit`]: the hash-chained audit trail the store's writer appends to, and its check;
//! - [`node`]: the runtime the web layer calls.
//!
//! ```
//! use yiciban_core::fold::{fold, Status};
//! let route = ["village:accept", "town:review", "village:issue"].map(String::from);
//! assert_eq!(fold(&route, &[]).status, Status::New);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod application;
pub mod audit;
pub mod audit_doc;
pub mod authorship;
pub mod bounds;
pub mod bundle;
pub mod calendar;
pub mod case_doc;
pub mod catalog;
pub mod config;
pub mod county_doc;
pub mod deadline;
pub mod enrol;
pub mod event;
pub mod fold;
pub mod followups;
pub mod health;
pub mod hlc;
pub mod idcard;
pub mod legal_clock;
pub mod link_error;
pub mod message;
pub mod node;
pub mod notice;
pub mod queue;
pub mod rating;
pub mod registry;
pub mod scope;
pub mod seal;
pub mod stats;
pub mod store;
pub mod summary;
pub mod supervision;
pub mod sync_engine;
#[cfg(test)]
mod test_nodes;
pub mod user_dir;
pub mod users;

/// The demo working-day calendar shipped in `config/calendar.toml`.
pub const DEMO_CALENDAR: &str = include_str!("../../../config/calendar.toml");

/// The demo catalogue shipped in `config/catalog.toml`, embedded so `yiciban demo` runs anywhere.
pub const DEMO_CATALOG: &str = include_str!("../../../config/catalog.toml");
