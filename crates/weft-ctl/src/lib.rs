//! `weft`'s operator tools, istioctl's diagnostics with its names and columns:
//! `proxy-status`, `proxy-config`, `describe` and `analyze`, against the running `weft up`
//! mesh or the addresses given; and `why`, what the sidecars would do with a request.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod describe;
pub mod error;
pub mod proxy_config;
pub mod proxy_status;
pub mod table;
pub mod target;
pub mod why;

pub use error::CtlError;
pub use target::{Addresses, Mesh};
