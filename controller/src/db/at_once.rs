//! Transactions whose `BEGIN` (and, where nothing must be read first,
//! `COMMIT`) travel with their statements instead of waiting for a round
//! trip of their own.
//!
//! `Client::transaction` sends `BEGIN` and waits for its answer before the
//! first statement goes out, and `commit` waits again; on the job path that
//! was two of a claim's four round trips to Postgres (the pool's check,
//! `BEGIN`, the pipelined statements, `COMMIT`) and two of a report's five.
//! Statements sent on one connection run in the order sent, so a `BEGIN`
//! sent just ahead of them opens their transaction as well as one that was
//! answered first; a `COMMIT` sent behind them commits them, or, after one
//! of them failed, ends the aborted transaction without committing anything.
//!
//! What `tokio_postgres::Transaction` does on drop, [`AtOnce`] does too: a
//! connection whose transaction may still be open never goes back to the
//! pool. When a statement fails, the caller sends `ROLLBACK` behind it
//! ([`AtOnce::or_roll_back`]) and the connection, idle again, is kept; when
//! the caller's future is dropped before the end was answered, or the
//! `ROLLBACK` fails too (the connection is lost), it is taken out and
//! closed, and Postgres rolls its transaction back.

use super::flow::{generic_plans, plan_once_sql};
use deadpool_postgres::{Object, Transaction};

/// One pooled connection used for transactions sent at once. See the
/// module's doc.
pub struct AtOnce {
    /// The connection; `None` only once dropped.
    client: Option<Object>,
    /// Whether a `BEGIN` may have been sent without its transaction's end
    /// being answered: the connection must not be reused then.
    open: bool,
}

impl AtOnce {
    /// Wraps a connection just taken from the pool (idle, no transaction).
    pub fn new(client: Object) -> Self {
        AtOnce {
            client: Some(client),
            open: false,
        }
    }

    /// The connection, for statements of the open transaction.
    pub fn client(&self) -> &Object {
        let Some(client) = &self.client else {
            unreachable!("the connection is only taken out when dropped")
        };
        client
    }

    /// A transaction opened the usual way (`BEGIN` answered first), for
    /// work whose statements depend on one another's answers; it rolls
    /// itself back if dropped. Only once no transaction sent at once is
    /// open.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        let Some(client) = &mut self.client else {
            unreachable!("the connection is only taken out when dropped")
        };
        client.transaction().await
    }

    /// The text that opens a transaction for a batch of `batch` items: with
    /// generic plans for batches of at most [`super::flow::PLAN_ONCE_UP_TO`], as
    /// [`super::flow::plan_once_sql`] sets them in transactions opened the
    /// usual way. Marks the transaction open: call it just before sending it.
    pub fn begin(&mut self, batch: usize) -> &'static str {
        self.open = true;
        match plan_once_sql(batch) {
            Some(_) => concat!("BEGIN; ", generic_plans!()),
            None => "BEGIN",
        }
    }

    /// Records that the transaction's `COMMIT` was answered: the connection
    /// is idle again and may go back to the pool.
    pub fn ended(&mut self) {
        self.open = false;
    }

    /// Passes on what the open transaction's statements answered; on an
    /// error, first sends `ROLLBACK`, which runs behind everything sent
    /// before it (a mere warning if a `COMMIT` sent with them already ended
    /// the transaction), so that once it is answered the connection is idle
    /// again and may go back to the pool instead of being closed. Should it
    /// fail too, the connection stays marked open and is closed on drop.
    pub async fn or_roll_back<T, E>(&mut self, sent: Result<T, E>) -> Result<T, E> {
        if sent.is_err() && self.open && self.client().batch_execute("ROLLBACK").await.is_ok() {
            self.open = false;
        }
        sent
    }
}

impl Drop for AtOnce {
    fn drop(&mut self) {
        if let (true, Some(client)) = (self.open, self.client.take()) {
            tracing::warn!("closing a connection whose transaction may still be open");
            drop(Object::take(client));
        }
    }
}
