//! `meshfed`: the federation gateway's command line. The commands live in `cmd/`; everything
//! they drive lives in the library.

mod cmd;

/// mimalloc: the request path allocates small objects at a high rate (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cmd::main()
}
