use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: sluice::Allocator = sluice::Allocator;

fn main() -> ExitCode {
    sluice::main()
}
