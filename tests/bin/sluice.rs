//! The `sluice` binary, built inside the test package so the end-to-end
//! tests can start it as a real process.

#[global_allocator]
static ALLOCATOR: sluice::Allocator = sluice::Allocator;

fn main() -> std::process::ExitCode {
    sluice::main()
}
