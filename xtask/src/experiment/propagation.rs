//! `propagation`.

use super::Ctx;

pub(crate) fn run(_ctx: &Ctx) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
