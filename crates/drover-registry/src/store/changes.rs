//! The change feed read back from the outbox, and its retention.

use chrono::{DateTime, Utc};

use super::{tables, Backend, SqlRegistry};
use crate::{Change, Result};

pub(super) async fn since<B: Backend>(
    reg: &SqlRegistry<B>,
    since: u64,
    limit: usize,
) -> Result<Vec<Change>> {
    Ok(tables::changes_since(&mut reg.backend.pool(), since, limit).await?)
}

pub(super) async fn compacted<B: Backend>(reg: &SqlRegistry<B>) -> Result<u64> {
    Ok(tables::compacted(&mut reg.backend.pool()).await?)
}

pub(super) async fn prune<B: Backend>(reg: &SqlRegistry<B>, before: DateTime<Utc>) -> Result<u64> {
    // Under the writer lock, so `compacted` and the deletion are one step for readers.
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let Some(last) = tables::last_change_before(&mut w.tx, before).await? else {
            return Ok(0);
        };
        let n = tables::delete_changes(&mut w.tx, last).await?;
        tables::set_compacted(&mut w.tx, last).await?;
        w.commit().await?;
        Ok(n)
    })
    .await
}
