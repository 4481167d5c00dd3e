//! Authentication policy, without HTTP: password hashes, session cookies,
//! the server-side session table, API tokens,
//! and the limits that keep a guessing flood from hurting logged-in users.
//! The login page that uses it is [`crate::front::login`].

pub mod attempts;
pub mod password;
pub mod session;
pub mod sessions;
pub mod tokens;

pub use attempts::{LoginGuard, LoginLimits, Verdict};
