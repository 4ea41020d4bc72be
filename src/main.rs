//! The `meg-decoder` command line: one subcommand per job a lab runs.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let mut args = cli::Cli::parse();
    cli::logging_from_config(&mut args);
    if let Err(e) = cli::init_logging(&args.global) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(2);
    }
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
