//! The API the `tg` CLI talks to: [`dispatch`] authenticates each request and routes it by role to
//! the operation's module.

pub mod audit;
pub mod backup;
pub mod dispatch;
pub mod import;
pub mod records;
pub mod rotation;
pub mod status;
