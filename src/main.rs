//! The `resnet` command-line tool.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    if let Err(e) = cli::main() {
        if e.reported_here() {
            eprintln!("error: {}", cli::with_flags(&e.to_string()));
        }
        if cli::mpi::exits_late() {
            // exiting after rank 0 keeps mpirun from ending rank 0 before its message is out
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        std::process::exit(1);
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}
