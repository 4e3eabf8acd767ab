//! (under construction)

/// Arguments of `raftkv bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn main(_args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("raftkv bench is not implemented yet")
}
