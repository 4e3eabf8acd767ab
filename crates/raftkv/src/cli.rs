//! (under construction)

/// Client subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Show the status of every node.
    Status {},
}

pub fn main(_cmd: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("client commands are not implemented yet")
}
