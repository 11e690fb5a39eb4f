//! The real `meshfed` binary, for tests that drive it as a user would.

use std::path::PathBuf;
use std::process::Command;

/// The path of the `meshfed` binary of this build, building it first if need be.
///
/// Integration tests of this crate cannot name another package's binary through
/// `CARGO_BIN_EXE_*`, so this asks cargo to build it (a no-op when it is up to date) into the
/// same target directory and profile as the running test.
pub fn meshfed() -> anyhow::Result<PathBuf> {
    let test_exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {}", test_exe.display()))?
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "meshfed-gateway",
        "--bin",
        "meshfed",
    ]);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status()?;
    anyhow::ensure!(status.success(), "cargo build of meshfed failed: {status}");
    let binary = profile_dir.join("meshfed");
    anyhow::ensure!(binary.exists(), "{} was not built", binary.display());
    Ok(binary)
}
