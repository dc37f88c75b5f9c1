//! The `galmanhae` binary: everything is in the library ([`galmanhae::main`]).

fn main() -> std::process::ExitCode {
    galmanhae::main()
}
