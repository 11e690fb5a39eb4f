//! `meshfed`: the federation gateway's command line. The commands live in `cmd/`; everything
//! they drive lives in the library.

mod cmd;

fn main() -> std::process::ExitCode {
    cmd::main()
}
