//! The shape shared by the phases that decide without waiting (hygiene, limits, public keys,
//! authorise, inject): a [`Phase`] looks at the exchange, records what it learned in the context, and
//! lets the request go on, answers it itself, or refuses it. [`PhaseService`] turns one into a tower
//! service whose future is [`Step`] — finished now, or the next phase's future — so a phase costs no
//! allocation and no boxing, in the way tower-http's validating layers return their own futures.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::Response;
use tower::Service;

use super::context::{Done, Exchange};
use crate::error::Refusal;
use crate::upstream::body::ResponseBody;

/// What a phase decided about one request.
pub enum Verdict {
    /// On to the next phase.
    Next,
    /// Answered here (scopegate's own endpoints).
    Answer(Box<Response<ResponseBody>>),
    /// Refused, with the contract's status and reasons.
    Refuse(Refusal),
}

impl From<Result<(), Refusal>> for Verdict {
    fn from(r: Result<(), Refusal>) -> Verdict {
        match r {
            Ok(()) => Verdict::Next,
            Err(refusal) => Verdict::Refuse(refusal),
        }
    }
}

/// One synchronous phase of the request's path.
pub trait Phase {
    fn run<B>(&self, ex: &mut Exchange<B>) -> Verdict;
}

/// A [`Phase`] in front of the rest of the stack.
#[derive(Clone)]
pub struct PhaseService<P, S> {
    phase: P,
    inner: S,
}

impl<P, S> PhaseService<P, S> {
    pub fn new(phase: P, inner: S) -> Self {
        PhaseService { phase, inner }
    }
}

impl<P, S, B> Service<Exchange<B>> for PhaseService<P, S>
where
    P: Phase,
    S: Service<Exchange<B>, Response = Done, Error = Infallible>,
{
    type Response = Done;
    type Error = Infallible;
    type Future = Step<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut ex: Exchange<B>) -> Self::Future {
        match self.phase.run(&mut ex) {
            Verdict::Next => Step::next(self.inner.call(ex)),
            Verdict::Answer(resp) => Step::now(Done::answered(ex.ctx, *resp)),
            Verdict::Refuse(refusal) => Step::now(Done::refused(ex.ctx, refusal)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a synchronous phase: finished now, or the next phase's future.
    #[project = StepProj]
    pub enum Step<F> {
        Now { done: Option<Done> },
        Next { #[pin] future: F },
    }
}

impl<F> Step<F> {
    pub fn now(done: Done) -> Self {
        Step::Now { done: Some(done) }
    }

    pub fn next(future: F) -> Self {
        Step::Next { future }
    }
}

impl<F: Future<Output = Result<Done, Infallible>>> Future for Step<F> {
    type Output = Result<Done, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            StepProj::Now { done } => match done.take() {
                Some(d) => Poll::Ready(Ok(d)),
                // Polled again after it finished: nothing more will come.
                None => Poll::Pending,
            },
            StepProj::Next { future } => future.poll(cx),
        }
    }
}
