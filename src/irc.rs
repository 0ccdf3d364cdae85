//! The IRC relay (placeholder until the IRC work lands).

use crate::config::Config;

/// `holdfast irc`.
pub async fn run(_cfg: Config) -> anyhow::Result<()> {
    anyhow::bail!("holdfast irc is not built yet")
}
