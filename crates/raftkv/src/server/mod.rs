//! (under construction)

/// Arguments of `raftkv serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

pub fn main(_args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("raftkv serve is not implemented yet")
}
