//! (under construction)

/// Arguments of `raftkv cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {}

pub fn main(_args: ClusterArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("raftkv cluster is not implemented yet")
}
