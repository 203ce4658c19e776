//! Per-connection storage the stack reuses from one request to the next, so that the two heap
//! values the shape needs — the request's [`Context`] (with room for its outcome) and the
//! forwarding future — are allocated once per connection, not once per request.
//!
//! Both are boxed because every layer moves its exchange and its inner future by value: a 560-byte
//! context and a 3.7 KiB forwarding future copied at each of eight layers cost 5.8k instructions of
//! `memcpy` per request. The outcome (a 330-byte response or a refusal) is written into the same
//! box, so what each layer passes back up is one pointer. An HTTP/1.1 connection carries one request at a time, so its one slot is
//! always free when the next request arrives; concurrent HTTP/2 streams find it taken and allocate,
//! and the last one home fills it again.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio_util::sync::ReusableBoxFuture;

use http::Response;

use super::context::{Context, Done};
use crate::error::Refusal;
use crate::upstream::body::ResponseBody;

/// A request's outcome: the response to send, or the refusal to render.
pub type Outcome = Result<Response<ResponseBody>, Refusal>;

/// The reused allocation: a context while a request runs, empty between requests.
#[derive(Default)]
struct Room {
    ctx: Option<Context>,
    outcome: Option<Outcome>,
}

/// A boxed [`Context`] whose allocation outlives the request that filled it.
pub struct ContextBox(Box<Room>);

impl ContextBox {
    pub fn new(ctx: Context) -> ContextBox {
        ContextBox(Box::new(Room {
            ctx: Some(ctx),
            outcome: None,
        }))
    }

    pub(super) fn set_outcome(&mut self, outcome: Outcome) {
        self.0.outcome = Some(outcome);
    }

    pub(super) fn take_outcome(&mut self) -> Option<Outcome> {
        self.0.outcome.take()
    }

    /// Drops the context and any outcome (the snapshot, identity and decision go now, not at the
    /// next request) and keeps the allocation.
    fn vacate(mut self) -> Box<Room> {
        *self.0 = Room::default();
        self.0
    }
}

impl Deref for ContextBox {
    type Target = Context;

    fn deref(&self) -> &Context {
        match &self.0.ctx {
            Some(ctx) => ctx,
            // A ContextBox is only made full and only emptied by `vacate`, which consumes it.
            None => unreachable!("a ContextBox is always full"),
        }
    }
}

impl DerefMut for ContextBox {
    fn deref_mut(&mut self) -> &mut Context {
        match &mut self.0.ctx {
            Some(ctx) => ctx,
            None => unreachable!("a ContextBox is always full"),
        }
    }
}

type Forwarding = ReusableBoxFuture<'static, Done>;

/// One connection's spare allocations.
#[derive(Default)]
pub struct Recycler {
    context: Slot<Room>,
    forwarding: Slot<Forwarding>,
}

impl Recycler {
    pub fn new() -> Arc<Recycler> {
        Arc::new(Recycler::default())
    }

    /// `ctx` in this connection's spare context allocation, or a new one.
    pub fn context(&self, ctx: Context) -> ContextBox {
        match self.context.take() {
            Some(mut room) => {
                room.ctx = Some(ctx);
                ContextBox(room)
            }
            None => ContextBox::new(ctx),
        }
    }

    /// Gives a finished request's context allocation back.
    pub fn give_back(&self, ctx: ContextBox) {
        self.context.put(ctx.vacate());
    }

    /// `future` in this connection's spare forwarding allocation (or a new one), returned to the
    /// connection when it finishes.
    pub fn forward<F>(self: &Arc<Recycler>, future: F) -> Forward
    where
        F: Future<Output = Done> + Send + 'static,
    {
        let boxed = match self.forwarding.take() {
            Some(mut spare) => {
                spare.set(future);
                spare
            }
            None => Box::new(ReusableBoxFuture::new(future)),
        };
        Forward {
            boxed: Some(boxed),
            recycler: self.clone(),
        }
    }
}

/// The forwarding future in its reused box.
pub struct Forward {
    // Boxed once more so the slot can hold it as one pointer.
    boxed: Option<Box<Forwarding>>,
    recycler: Arc<Recycler>,
}

impl Future for Forward {
    type Output = Done;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Done> {
        let this = &mut *self;
        let Some(boxed) = this.boxed.as_mut() else {
            // Polled after it finished: nothing more will come.
            return Poll::Pending;
        };
        let done = std::task::ready!(boxed.poll(cx));
        if let Some(spare) = this.boxed.take() {
            this.recycler.forwarding.put(spare);
        }
        Poll::Ready(done)
    }
}

/// A place for one boxed value, shared by a connection's requests: taking and putting are one
/// atomic operation each (a mutex cost four times as many instructions on every request).
struct Slot<T> {
    held: AtomicPtr<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            held: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl<T> Slot<T> {
    fn take(&self) -> Option<Box<T>> {
        let p = self.held.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null pointer in the slot came from `Box::into_raw` in `put`, and the swap
        // took it out, so this is its only owner.
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }

    /// Fills an empty slot; a full one (another stream came home first) keeps its value, and this
    /// one is dropped.
    fn put(&self, value: Box<T>) {
        let p = Box::into_raw(value);
        if let Err(_held) =
            self.held
                .compare_exchange(ptr::null_mut(), p, Ordering::Release, Ordering::Relaxed)
        {
            // SAFETY: `p` came from `Box::into_raw` above and was not stored.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing;

    fn context() -> Context {
        let snap = testing::snapshot(&testing::config());
        let ex = testing::exchange(&snap, "127.0.0.1", http::Request::new(()));
        (*ex.ctx).clone()
    }

    fn address(ctx: &ContextBox) -> *const Context {
        &**ctx
    }

    #[test]
    fn a_connections_next_request_reuses_its_context_allocation() {
        let recycler = Recycler::new();
        let first = recycler.context(context());
        let at = address(&first);
        recycler.give_back(first);
        let second = recycler.context(context());
        assert_eq!(address(&second), at, "the same allocation");
        // Taken: a concurrent stream gets an allocation of its own.
        let concurrent = recycler.context(context());
        assert_ne!(address(&concurrent), at);
        recycler.give_back(second);
        recycler.give_back(concurrent);
        assert_eq!(
            address(&recycler.context(context())),
            at,
            "the first one home stays"
        );
    }

    #[test]
    fn a_given_back_context_releases_its_snapshot_at_once() {
        let recycler = Recycler::new();
        let ctx = context();
        let snap = ctx.snap.clone();
        let held = Arc::strong_count(&snap);
        recycler.give_back(recycler.context(ctx));
        assert_eq!(Arc::strong_count(&snap), held - 1);
    }

    #[tokio::test]
    async fn the_forwarding_box_goes_back_to_the_connection_when_it_finishes() {
        let recycler = Recycler::new();
        let done = |ctx: Context| async move {
            Done::answered(
                ContextBox::new(ctx),
                http::Response::new(crate::upstream::body::ResponseBody::empty()),
            )
        };
        let first = recycler.forward(done(context()));
        assert!(recycler.forwarding.take().is_none(), "in use");
        let answered = first.await;
        let (_, outcome) = answered.into_parts();
        assert_eq!(outcome.map(|r| r.status()).ok(), Some(http::StatusCode::OK));
        let spare = recycler.forwarding.take();
        assert!(spare.is_some(), "given back");
        recycler.forwarding.put(spare.expect("spare"));
        // Dropped before it finished (the client left): the box is not given back, nothing leaks.
        drop(recycler.forward(done(context())));
        assert!(recycler.forwarding.take().is_none());
    }

    #[test]
    fn a_slot_keeps_one_value_and_drops_the_rest() {
        let token = Arc::new(());
        let slot: Slot<Arc<()>> = Slot::default();
        slot.put(Box::new(token.clone()));
        slot.put(Box::new(token.clone()));
        assert_eq!(Arc::strong_count(&token), 2, "the second one was dropped");
        let taken = slot.take();
        assert!(taken.is_some());
        assert!(slot.take().is_none(), "taken once");
        slot.put(taken.expect("taken"));
        drop(slot);
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "dropping the slot drops what it holds"
        );
    }
}
