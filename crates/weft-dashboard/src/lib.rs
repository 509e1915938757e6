//! The live service graph `weft up` and `weft dashboard` serve: request rate, error rate, p99
//! and mTLS per edge and service from the sidecars' metrics, each service's pods, identities,
//! routes and policies, and the config in force with its validation errors. One page with its
//! own small script (no external assets), served by Weft.
#![forbid(unsafe_code)]

pub mod details;
pub mod error;
pub mod graph;
pub mod server;

pub use error::DashboardError;
pub use server::{Options, run};
