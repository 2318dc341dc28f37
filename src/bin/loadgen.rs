//! `loadgen`: see `chaos_lab::loadgen` and `loadgen --help`.
fn main() -> std::process::ExitCode {
    chaos_lab::loadgen::cli::main()
}
