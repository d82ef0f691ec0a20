//! The copies other nodes announce for connections here: read once per
//! notification and pushed, and, when that read fails (the database out
//! of reach for a moment), read again with backoff until it succeeds.
//!
//! Before, a failed read was only logged: the copies waited in the store
//! until their recipient reconnected or the `LISTEN` connection was
//! re-established, which for a connection that stays up could be much
//! later. The failed reads are gathered into one retry task (however many
//! notifications failed, one read at a time); each copy is pushed at most
//! once per connection (`first_push`), so a retry that overlaps a
//! redelivery pushes nothing twice.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::ctx::Ctx;
use crate::delivery;
use crate::metrics::Metrics;
use crate::store::postgres::PgStore;
use crate::store::postgres::notify::Recipients;
use crate::store::{PendingPush, Store, StoreError};

/// The first wait before a failed read is tried again.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What to read: every copy of the messages `seqs`, and the copies of the
/// (message, member) pairs `pairs`.
#[derive(Default, Debug, PartialEq)]
struct Wanted {
    seqs: BTreeSet<i64>,
    pairs: BTreeSet<(i64, String)>,
}

impl Wanted {
    fn is_empty(&self) -> bool {
        self.seqs.is_empty() && self.pairs.is_empty()
    }

    fn merge(&mut self, other: Wanted) {
        self.seqs.extend(other.seqs);
        self.pairs.extend(other.pairs);
    }

    async fn read(
        &self,
        pg: &PgStore,
        now_ms: i64,
    ) -> Result<Vec<(String, String, PendingPush)>, StoreError> {
        let seqs: Vec<i64> = self.seqs.iter().copied().collect();
        let pairs: Vec<(i64, &str)> = self.pairs.iter().map(|(s, m)| (*s, m.as_str())).collect();
        pg.copies_of(&seqs, &pairs, now_ms).await
    }
}

/// Where failed reads go to be tried again.
#[derive(Clone)]
pub struct Retries(UnboundedSender<Wanted>);

impl Retries {
    /// Starts the task that retries failed reads for this node.
    pub fn start(ctx: &Arc<Ctx>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = unbounded_channel();
        (Self(tx), tokio::spawn(retry(ctx.clone(), rx)))
    }
}

/// Another node announced the messages `seqs` (with their recipients
/// `to`, where they fit): reads the undelivered copies for connections
/// here and pushes them; a failed read goes to `retries`.
pub async fn announced(ctx: &Ctx, pg: &PgStore, seqs: &[i64], to: &Recipients, retries: &Retries) {
    let wanted = to_read(ctx, seqs, to);
    if wanted.is_empty() {
        return;
    }
    match wanted.read(pg, ctx.now_ms()).await {
        Ok(copies) => push(ctx, copies),
        Err(e) => {
            tracing::warn!(error = %e, "reading announced messages failed; trying again");
            Metrics::inc(&ctx.metrics.cluster_reads_failed);
            // The task ends only with the node; a send fails only then.
            let _ = retries.0.send(wanted);
        }
    }
}

/// Gathers failed reads and reads them again, with a backoff that grows
/// while the reads keep failing, until they succeed.
async fn retry(ctx: Arc<Ctx>, mut rx: UnboundedReceiver<Wanted>) {
    let Store::Postgres(pg) = &*ctx.store else {
        return;
    };
    while let Some(first) = rx.recv().await {
        let mut wanted = first;
        let mut wait = RETRY_MIN;
        loop {
            tokio::time::sleep(wait).await;
            while let Ok(more) = rx.try_recv() {
                wanted.merge(more);
            }
            match wanted.read(pg, ctx.now_ms()).await {
                Ok(copies) => {
                    Metrics::inc(&ctx.metrics.cluster_reads_retried);
                    push(&ctx, copies);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "reading announced messages failed again");
                    Metrics::inc(&ctx.metrics.cluster_reads_failed);
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

fn push(ctx: &Ctx, copies: Vec<(String, String, PendingPush)>) {
    for (mesh_id, member_id, copy) in copies {
        if let Some(mesh) = ctx.hub.find(&mesh_id) {
            let n = delivery::push_copy(&mesh, &member_id, &copy);
            Metrics::add(&ctx.metrics.messages_pushed, n);
            if n > 0 {
                // From the message's arrival on its node to its push here.
                ctx.metrics.notify_lag(super::since(ctx, copy.sent_at));
            }
        }
    }
}

/// What to read of announced messages: the numbers `to` does not name
/// (all their copies), and the copies `to` names for members connected
/// here. A member that connects after this look is not missed: its
/// connection reads every pending copy once it is visible here (see
/// `delivery::redeliver`), and the message is committed before it is
/// announced.
fn to_read(ctx: &Ctx, seqs: &[i64], to: &Recipients) -> Wanted {
    let listed: HashSet<i64> = to
        .values()
        .flat_map(|m| m.values().flatten())
        .copied()
        .collect();
    let mut wanted = Wanted {
        seqs: seqs
            .iter()
            .copied()
            .filter(|s| !listed.contains(s))
            .collect(),
        pairs: BTreeSet::new(),
    };
    for (mesh_id, members) in to {
        let Some(mesh) = ctx.hub.find(mesh_id) else {
            continue;
        };
        let state = mesh.lock();
        for (member_id, numbers) in members {
            if !state.member_conns(member_id).is_empty() {
                wanted
                    .pairs
                    .extend(numbers.iter().map(|&s| (s, member_id.clone())));
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_reads_name_each_copy_once() {
        let mut a = Wanted {
            seqs: [1, 2].into(),
            pairs: [(5, "m".to_owned())].into(),
        };
        a.merge(Wanted {
            seqs: [2, 3].into(),
            pairs: [(5, "m".to_owned()), (6, "n".to_owned())].into(),
        });
        assert_eq!(a.seqs, [1, 2, 3].into());
        assert_eq!(a.pairs, [(5, "m".to_owned()), (6, "n".to_owned())].into());
        assert!(!a.is_empty());
        assert!(Wanted::default().is_empty());
    }
}
