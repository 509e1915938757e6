#![forbid(unsafe_code)]
//! `weft`: one binary for the whole mesh — `control` (istiod), `proxy` (the sidecar),
//! `iptables` (capture rules), `validate`, `version`.

mod cli;
mod ops;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the proxy's per-request allocations and the control
/// plane's per-push buffers were ~12% and ~30% of their CPU profiles under glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
