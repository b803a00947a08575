//! The `mota` binary: everything is in the library (`mota_cli`).

fn main() -> std::process::ExitCode {
    mota_cli::main()
}
