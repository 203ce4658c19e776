//! The request a log line belongs to.
//!
//! While a request's future (or a task it spawned: a WebSocket relay, an in-band session) is being
//! polled, its request id is the thread's current request, and the log formatters add it to every
//! line written meanwhile (`"request_id":"…"` in JSON, `request_id=… ` in text) — an upstream
//! failure, a JWKS refetch or a relay error names the request it happened in.
//!
//! This stands in for a per-request `tracing` span on purpose: with tracing-subscriber's formatter a
//! span is registered and its fields rendered to JSON on every request whether or not anything is
//! logged, 3.7k instructions per proxied request at level `info` (`bench/callgrind.sh` with
//! `SG_AUDIT=1`, 8.5% of the request); marking the current request costs two thread-local writes
//! per poll, and the id is only read when a line is actually written.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::task::{Context as TaskContext, Poll};

use http::HeaderValue;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

thread_local! {
    // Points at the request id of the future being polled on this thread, or is null. Only
    // `in_scope` sets it, for the duration of a borrow of that id, and restores it after.
    static CURRENT: Cell<*const HeaderValue> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with `id` as this thread's current request.
pub fn in_scope<R>(id: &HeaderValue, f: impl FnOnce() -> R) -> R {
    struct Restore(*const HeaderValue);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(id)));
    f()
}

/// Calls `f` with the current request's id, if a request is being polled on this thread.
pub fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    let current = CURRENT.with(Cell::get);
    // SAFETY: a non-null pointer was set by `in_scope` from a `&HeaderValue` that outlives the
    // closure `in_scope` is running, and this call happens inside that closure (the pointer is
    // restored when it returns or unwinds), on the same thread.
    let id = unsafe { current.as_ref() };
    f(id.and_then(|v| v.to_str().ok()))
}

pin_project_lite::pin_project! {
    /// A future polled with its request as the current one (for tasks a request spawns).
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        id: HeaderValue,
    }
}

impl<F> Scoped<F> {
    pub fn new(id: HeaderValue, inner: F) -> Scoped<F> {
        Scoped { inner, id }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        in_scope(this.id, || this.inner.poll(cx))
    }
}

/// Wraps a line formatter so each line written inside a request names the request.
pub struct WithRequestId<E> {
    inner: E,
    json: bool,
}

impl<E> WithRequestId<E> {
    pub fn json(inner: E) -> Self {
        WithRequestId { inner, json: true }
    }

    pub fn text(inner: E) -> Self {
        WithRequestId { inner, json: false }
    }
}

impl<S, N, E> FormatEvent<S, N> for WithRequestId<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_current(|id| {
            let Some(id) = id.filter(|id| is_plain(id)) else {
                return self.inner.format_event(ctx, writer, event);
            };
            if !self.json {
                write!(writer, "request_id={id} ")?;
                return self.inner.format_event(ctx, writer, event);
            }
            // `{"timestamp":…}` → `{"request_id":"…","timestamp":…}`
            let mut line = String::new();
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let rest = line.strip_prefix('{').unwrap_or(&line);
            write!(writer, "{{\"request_id\":\"{id}\",{rest}")
        })
    }
}

/// Request ids are `[A-Za-z0-9._:-]` (generated, or a trusted peer's checked by the finish
/// phase); anything else is left out rather than escaped into a line.
fn is_plain(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Option<String> {
        with_current(|id| id.map(str::to_string))
    }

    #[test]
    fn the_current_request_is_set_inside_the_scope_and_restored_after() {
        assert_eq!(current(), None);
        let outer = HeaderValue::from_static("outer-1");
        let inner = HeaderValue::from_static("inner-2");
        in_scope(&outer, || {
            assert_eq!(current().as_deref(), Some("outer-1"));
            in_scope(&inner, || assert_eq!(current().as_deref(), Some("inner-2")));
            assert_eq!(current().as_deref(), Some("outer-1"));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn a_panic_inside_the_scope_restores_the_previous_request() {
        let id = HeaderValue::from_static("panicking-3");
        let caught = std::panic::catch_unwind(|| in_scope(&id, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(current(), None);
    }

    #[test]
    fn a_scoped_future_is_polled_as_its_request() {
        let fut = Scoped::new(HeaderValue::from_static("task-4"), async { current() });
        let seen = block_on(fut);
        assert_eq!(seen.as_deref(), Some("task-4"));
        assert_eq!(current(), None);
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn logged_with(json: bool, id: Option<&'static str>) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let out = sink.clone();
        let make = move || sink.clone();
        let base = tracing_subscriber::fmt::format().with_ansi(false);
        let log = || match id {
            Some(id) => in_scope(&HeaderValue::from_static(id), || {
                tracing::warn!(detail = 7, "upstream failed")
            }),
            None => tracing::warn!(detail = 7, "upstream failed"),
        };
        if json {
            let sub = tracing_subscriber::fmt()
                .with_writer(make)
                .json()
                .event_format(WithRequestId::json(base.json().flatten_event(true)))
                .finish();
            tracing::subscriber::with_default(sub, log);
        } else {
            let sub = tracing_subscriber::fmt()
                .with_writer(make)
                .event_format(WithRequestId::text(base))
                .finish();
            tracing::subscriber::with_default(sub, log);
        }
        let bytes = out.0.lock().expect("sink").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn json_lines_inside_a_request_carry_its_id_and_stay_json() {
        let line = logged_with(true, Some("boot-2a"));
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
        assert_eq!(v["request_id"], "boot-2a");
        assert_eq!(v["message"], "upstream failed");
        assert_eq!(v["detail"], 7);
        let outside = logged_with(true, None);
        let v: serde_json::Value = serde_json::from_str(outside.trim()).expect("JSON");
        assert!(v.get("request_id").is_none(), "{outside}");
    }

    #[test]
    fn text_lines_inside_a_request_start_with_its_id() {
        let line = logged_with(false, Some("boot-2b"));
        assert!(line.starts_with("request_id=boot-2b "), "{line:?}");
        assert!(line.contains("upstream failed"), "{line:?}");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!logged_with(false, None).contains("request_id"));
    }

    #[test]
    fn an_id_that_is_not_plain_is_left_out_of_the_line() {
        assert!(!is_plain("a\"b"));
        assert!(!is_plain(""));
        assert!(is_plain("boot-1f:x.y_z"));
    }
}
