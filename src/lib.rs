//! hookgate: a webhook relay gateway. The modules follow the data path of a request:
//! `config` → `server` → `ingress` → `verify` → `deliver`, with `admin` beside it and `app`
//! wiring them together. See ARCHITECTURE.md.

pub mod admin;
pub mod app;
pub mod config;
pub mod deliver;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingress;
pub mod rules;
pub mod server;
pub mod store;
pub mod verify;
