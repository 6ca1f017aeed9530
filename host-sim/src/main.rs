//! `fedrecon`: the simulator's command line (see `fedrecon --help`). The command-line types
//! live here, in the binary; the library (`fedrecon_host_sim`) takes typed options.

mod cli;

use fedrecon_host_sim::run::Interrupted;

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    match cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Interrupted>() {
            // Interrupted runs exit as the shell reports a signal (130 SIGINT, 143 SIGTERM).
            Some(i) => {
                eprintln!("fedrecon: {e:#}");
                std::process::ExitCode::from(i.exit_code())
            }
            None => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`fedrecon stats | head -1`) panics
/// inside `println!`. That is the reader's choice, not an error: end quietly with the status
/// a process killed by SIGPIPE has (141), keeping every other panic's report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
