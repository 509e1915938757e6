#![forbid(unsafe_code)]
//! `weft`: one binary for the whole mesh — `control` (istiod), `proxy` (the sidecar),
//! `iptables` (capture rules), `validate`, `version`.

mod cli;

use clap::Parser;

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
