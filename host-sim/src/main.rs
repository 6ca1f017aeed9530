//! `fedrecon`: the simulator's command line (see `fedrecon --help`). The command-line types
//! live here, in the binary; the library (`fedrecon_host_sim`) takes typed options.

mod cli;

fn main() -> std::process::ExitCode {
    match cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
