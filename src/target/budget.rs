//! One time budget per run for an off-site target that does not answer.
//!
//! [`Budgeted`] wraps any off-site [`Target`] (bucket, SFTP) so that a run
//! gives up on it after waiting `BACKUP_OFFSITE_TIMEOUT` in all without an
//! answer, however many steps (list, upload, manifest, retention, catch-up
//! copies) the run has: the budget is shared by every call of the run, not
//! granted per step. Only time spent waiting on the target counts: while
//! no call waits on it (the dump producing the next bytes, a write it
//! takes at once, the local backup's own steps), the clock stands still,
//! so a backup that takes an hour to dump costs its target nothing. Each
//! answer from the target (a listing, a committed upload, the next bytes
//! accepted after a wait) renews it, so a slow but working transfer of any
//! size is never cut; once it has run out, every further call fails at
//! once, so an unreachable target costs a run the budget once. Inside the
//! budget, the target's own retries (S3's back-off) go on as they would.
//!
//! The volume is never wrapped: a local backup does not wait on this. Not
//! here: which errors are worth retrying (each target knows its protocol).

use std::fmt;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{ObjectInfo, ObjectReader, Target, TargetError, Upload};

/// The variable that sets the budget, for messages.
pub const VARIABLE: &str = "BACKUP_OFFSITE_TIMEOUT";

/// Time without an answer that one run grants an off-site target.
#[derive(Debug)]
pub struct Budget {
    limit: Duration,
    state: Mutex<Waits>,
}

/// The budget's clock: it runs only while some call waits on the target.
#[derive(Debug, Default)]
struct Waits {
    /// Time spent waiting since the last answer, before the current wait.
    spent: Duration,
    /// Calls waiting now.
    waiters: usize,
    /// When the current wait began (some call has waited since).
    since: Option<Instant>,
}

/// One call waiting on the target; its time counts until it is dropped.
struct Waiting(Arc<Budget>);

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut w = self.0.state.lock().expect("budget lock");
        w.waiters -= 1;
        if w.waiters == 0 {
            if let Some(since) = w.since.take() {
                w.spent += since.elapsed();
            }
        }
    }
}

impl Budget {
    /// A budget of `limit`, whose clock runs while a call made under it waits.
    pub fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            state: Mutex::new(Waits::default()),
        })
    }

    /// A call starts waiting on the target.
    fn wait(self: &Arc<Self>) -> Waiting {
        let mut w = self.state.lock().expect("budget lock");
        w.waiters += 1;
        w.since.get_or_insert_with(Instant::now);
        Waiting(Arc::clone(self))
    }

    /// When the budget runs out if the target stays silent from now.
    fn deadline(&self) -> Instant {
        let w = self.state.lock().expect("budget lock");
        w.since.unwrap_or_else(Instant::now) + self.limit.saturating_sub(w.spent)
    }

    /// The target answered: the budget is whole again.
    fn answered(&self) {
        let mut w = self.state.lock().expect("budget lock");
        w.spent = Duration::ZERO;
        if w.waiters > 0 {
            w.since = Some(Instant::now());
        }
    }

    fn gave_up(&self, target: &'static str, action: &'static str, name: &str) -> TargetError {
        TargetError::Remote {
            target,
            action,
            name: name.to_owned(),
            detail: format!(
                "gave up: no answer for {} s in this run ({VARIABLE}); the local backup is kept and the copy is made by a later run",
                self.limit.as_secs()
            ),
        }
    }

    fn gave_up_io(&self, target: &'static str, action: &'static str, name: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            self.gave_up(target, action, name).to_string(),
        )
    }
}

/// An off-site target whose every call of the run shares one [`Budget`].
pub struct Budgeted {
    inner: Arc<dyn Target>,
    budget: Arc<Budget>,
}

impl fmt::Debug for Budgeted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgeted")
            .field("inner", &self.inner)
            .field("limit", &self.budget.limit)
            .finish()
    }
}

impl Budgeted {
    /// Wrap `inner` with `budget` (share one budget per target and run).
    pub fn new(inner: Arc<dyn Target>, budget: Arc<Budget>) -> Self {
        Budgeted { inner, budget }
    }

    /// Run `op` within the budget; an answer renews it.
    async fn within<T>(
        &self,
        action: &'static str,
        name: &str,
        op: impl std::future::Future<Output = Result<T, TargetError>>,
    ) -> Result<T, TargetError> {
        let _waiting = self.budget.wait();
        let deadline = self.budget.deadline();
        if Instant::now() >= deadline {
            return Err(self.budget.gave_up(self.inner.label(), action, name));
        }
        match tokio::time::timeout_at(deadline, op).await {
            Ok(Ok(v)) => {
                self.budget.answered();
                Ok(v)
            }
            // An error is an answer too, but not one that shows the
            // target works: the budget keeps running.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.budget.gave_up(self.inner.label(), action, name)),
        }
    }
}

/// Wrap every target but the first (the volume) in a fresh budget of
/// `limit` each: call once per run.
pub fn for_run(targets: &[Arc<dyn Target>], limit: Duration) -> Vec<Arc<dyn Target>> {
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i == 0 {
                Arc::clone(t)
            } else {
                Arc::new(Budgeted::new(Arc::clone(t), Budget::new(limit))) as Arc<dyn Target>
            }
        })
        .collect()
}

#[async_trait]
impl Target for Budgeted {
    fn label(&self) -> &'static str {
        self.inner.label()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.within("listing", prefix, self.inner.list(prefix))
            .await
    }

    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.within("reading metadata of", name, self.inner.metadata(name))
            .await
    }

    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError> {
        let waiting = self.budget.wait();
        let deadline = self.budget.deadline();
        if Instant::now() >= deadline {
            return Err(self.budget.gave_up(self.inner.label(), "uploading", name));
        }
        // Starting an upload may send nothing yet: it is not an answer.
        let inner = match tokio::time::timeout_at(deadline, self.inner.create(name)).await {
            Ok(r) => r?,
            Err(_) => return Err(self.budget.gave_up(self.inner.label(), "uploading", name)),
        };
        drop(waiting);
        Ok(Box::new(BudgetedUpload {
            inner,
            budget: Arc::clone(&self.budget),
            label: self.inner.label(),
            name: name.to_owned(),
            wait: None,
        }))
    }

    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError> {
        let inner = self.within("opening", name, self.inner.open(name)).await?;
        Ok(Box::new(BudgetedReader {
            inner,
            budget: Arc::clone(&self.budget),
            label: self.inner.label(),
            name: name.to_owned(),
            wait: None,
        }))
    }

    async fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.within("deleting", name, self.inner.delete(name)).await
    }

    async fn clean_interrupted(&self) -> Result<Vec<String>, TargetError> {
        self.within(
            "cleaning up",
            "interrupted uploads",
            self.inner.clean_interrupted(),
        )
        .await
    }

    async fn answers(&self) -> Result<(), TargetError> {
        self.within("reaching", "the target", self.inner.answers())
            .await
    }
}

/// A poll-based call (a write, a read) waiting on the target: its guard
/// and the budget's deadline.
struct PollWait {
    sleep: Pin<Box<Sleep>>,
    _waiting: Waiting,
}

/// Poll `inner` within the budget: a call that is ready at once passes
/// through and costs nothing; one that has to wait fails when the budget
/// runs out while it waits, and renews the budget when it completes.
fn poll_within<T>(
    cx: &mut Context<'_>,
    wait: &mut Option<PollWait>,
    budget: &Arc<Budget>,
    inner: Poll<io::Result<T>>,
    gave_up: impl FnOnce() -> io::Error,
) -> Poll<io::Result<T>> {
    match inner {
        Poll::Ready(r) => {
            if wait.is_some() && r.is_ok() {
                budget.answered();
            }
            *wait = None;
            Poll::Ready(r)
        }
        Poll::Pending => {
            let w = wait.get_or_insert_with(|| {
                let waiting = budget.wait();
                PollWait {
                    sleep: Box::pin(tokio::time::sleep_until(budget.deadline())),
                    _waiting: waiting,
                }
            });
            let deadline = budget.deadline();
            if w.sleep.deadline() != deadline {
                w.sleep.as_mut().reset(deadline);
            }
            match w.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *wait = None;
                    Poll::Ready(Err(gave_up()))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

/// An upload of a [`Budgeted`] target.
struct BudgetedUpload {
    inner: Box<dyn Upload>,
    budget: Arc<Budget>,
    label: &'static str,
    name: String,
    /// The budget's deadline while the inner upload makes us wait.
    wait: Option<PollWait>,
}

impl AsyncWrite for BudgetedUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let inner = Pin::new(&mut this.inner).poll_write(cx, buf);
        let (budget, label, name) = (&this.budget, this.label, &this.name);
        poll_within(cx, &mut this.wait, budget, inner, || {
            budget.gave_up_io(label, "uploading", name)
        })
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let inner = Pin::new(&mut this.inner).poll_flush(cx);
        let (budget, label, name) = (&this.budget, this.label, &this.name);
        poll_within(cx, &mut this.wait, budget, inner, || {
            budget.gave_up_io(label, "uploading", name)
        })
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let inner = Pin::new(&mut this.inner).poll_shutdown(cx);
        let (budget, label, name) = (&this.budget, this.label, &this.name);
        poll_within(cx, &mut this.wait, budget, inner, || {
            budget.gave_up_io(label, "uploading", name)
        })
    }
}

#[async_trait]
impl Upload for BudgetedUpload {
    async fn commit(self: Box<Self>) -> Result<ObjectInfo, TargetError> {
        let _waiting = self.budget.wait();
        let deadline = self.budget.deadline();
        match tokio::time::timeout_at(deadline, self.inner.commit()).await {
            Ok(Ok(info)) => {
                self.budget.answered();
                Ok(info)
            }
            Ok(Err(e)) => Err(e),
            // The dropped upload cleans up after itself; what it cannot
            // reach now is removed at the next start.
            Err(_) => Err(self.budget.gave_up(self.label, "uploading", &self.name)),
        }
    }

    async fn abort(self: Box<Self>) -> Result<(), TargetError> {
        let _waiting = self.budget.wait();
        let deadline = self.budget.deadline();
        match tokio::time::timeout_at(deadline, self.inner.abort()).await {
            Ok(r) => r,
            Err(_) => Err(self.budget.gave_up(self.label, "aborting", &self.name)),
        }
    }
}

/// A reader of a [`Budgeted`] target.
struct BudgetedReader {
    inner: ObjectReader,
    budget: Arc<Budget>,
    label: &'static str,
    name: String,
    wait: Option<PollWait>,
}

impl AsyncRead for BudgetedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let inner = Pin::new(&mut this.inner).poll_read(cx, buf);
        let (budget, label, name) = (&this.budget, this.label, &this.name);
        poll_within(cx, &mut this.wait, budget, inner, || {
            budget.gave_up_io(label, "downloading", name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target that never answers, or answers at once, as told.
    #[derive(Debug)]
    struct Silent {
        answers: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Target for Silent {
        fn label(&self) -> &'static str {
            "bucket"
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, TargetError> {
            if !self.answers.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(Vec::new())
        }
        async fn metadata(&self, _: &str) -> Result<Option<ObjectInfo>, TargetError> {
            std::future::pending().await
        }
        async fn create(&self, _: &str) -> Result<Box<dyn Upload>, TargetError> {
            std::future::pending().await
        }
        async fn open(&self, _: &str) -> Result<ObjectReader, TargetError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), TargetError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_budget_for_every_step_of_a_run_renewed_by_an_answer() {
        let silent = Arc::new(Silent {
            answers: false.into(),
        });
        let t = Budgeted::new(silent.clone(), Budget::new(Duration::from_secs(60)));
        // The budget starts with the first call, not before (the local
        // backup comes first and may take long).
        tokio::time::advance(Duration::from_secs(600)).await;
        let start = Instant::now();
        let e = t.list("x").await.unwrap_err().to_string();
        assert!(
            e.contains("BACKUP_OFFSITE_TIMEOUT") && e.contains("60 s"),
            "{e}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        // Every further step of the run fails at once.
        assert!(t.metadata("a").await.is_err());
        assert!(t.delete("a").await.is_err());
        assert!(t.create("a").await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        // Back again: an answer renews the budget.
        let t = Budgeted::new(silent.clone(), Budget::new(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(59)).await;
        silent
            .answers
            .store(true, std::sync::atomic::Ordering::SeqCst);
        t.list("x").await.unwrap();
        silent
            .answers
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let before = Instant::now();
        assert!(t.list("x").await.is_err());
        assert_eq!(before.elapsed(), Duration::from_secs(60));
    }

    /// A target whose uploads take every write at once and commit after
    /// `commit_takes`.
    #[derive(Debug)]
    struct Quick {
        commit_takes: Duration,
    }

    struct QuickUpload(Duration);

    impl AsyncWrite for QuickUpload {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[async_trait]
    impl Upload for QuickUpload {
        async fn commit(self: Box<Self>) -> Result<ObjectInfo, TargetError> {
            tokio::time::sleep(self.0).await;
            Ok(ObjectInfo {
                name: "a".into(),
                size: 1,
                modified: None,
            })
        }
        async fn abort(self: Box<Self>) -> Result<(), TargetError> {
            Ok(())
        }
    }

    #[async_trait]
    impl Target for Quick {
        fn label(&self) -> &'static str {
            "sftp"
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, TargetError> {
            Ok(Vec::new())
        }
        async fn metadata(&self, _: &str) -> Result<Option<ObjectInfo>, TargetError> {
            Ok(None)
        }
        async fn create(&self, _: &str) -> Result<Box<dyn Upload>, TargetError> {
            Ok(Box::new(QuickUpload(self.commit_takes)))
        }
        async fn open(&self, _: &str) -> Result<ObjectReader, TargetError> {
            unreachable!()
        }
        async fn delete(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
    }

    // The same pass: a dump much longer than the budget, whose every
    // write the target takes at once, leaves the whole budget to the
    // commit.
    #[tokio::test(start_paused = true)]
    async fn time_no_call_waits_on_the_target_does_not_count() {
        let quick = Arc::new(Quick {
            commit_takes: Duration::from_secs(50),
        });
        let t = Budgeted::new(quick, Budget::new(Duration::from_secs(60)));
        let mut up = t.create("a").await.unwrap();
        for _ in 0..10 {
            tokio::io::AsyncWriteExt::write_all(&mut up, b"chunk")
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        up.commit().await.unwrap();
    }

    // A call given up by its caller (an upload that did not start in
    // time) spent what it waited; the rest of the budget is left, however
    // long the run goes on before the next call.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_spends_what_it_waited_and_no_more() {
        let silent = Arc::new(Silent {
            answers: false.into(),
        });
        let t = Budgeted::new(silent, Budget::new(Duration::from_secs(60)));
        assert!(tokio::time::timeout(Duration::from_secs(5), t.create("a"))
            .await
            .is_err());
        tokio::time::advance(Duration::from_secs(600)).await;
        let start = Instant::now();
        assert!(t.list("x").await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(55));
        assert!(t.list("x").await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(55));
    }
}
