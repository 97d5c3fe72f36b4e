//! The access log: one line per request with its method, path, status and
//! latency; INFO below 500, WARN from 500 on. Queries and headers are never
//! logged: they may carry authorization codes, states, cookies and tokens.
//!
//! Each request also gets a `request` span at DEBUG, so at that level every
//! line logged while handling it names the request. At the default level
//! (INFO) the span is disabled and costs next to nothing.
//!
//! With human log lines without colours on standard error (the gateway's
//! default when it does not write to a terminal, set by
//! [`crate::cli::init_logging`] through [`write_lines_directly`]), the
//! line is written here, byte for byte as tracing-subscriber's formatter
//! would write that event (a unit test compares them), into a buffer kept
//! per thread: the event's dispatch and the field-by-field `Debug`
//! formatting were about 7,800 instructions of the ~66,000 of a proxied
//! request (docs/BENCHMARKS.md, issue 13). Whether a line is written still
//! follows the log filter (`RUST_LOG` or `log.level`), and JSON or coloured
//! output stays a tracing event.
//!
//! Why not tower-http's `TraceLayer`, which the gateway used before: it needs
//! an INFO span per request for the same line, and formatting the span plus a
//! separate response event cost 5.3 µs of the 39 µs of CPU the gateway spent
//! per proxied request (docs/BENCHMARKS.md). One event costs less than half
//! of that.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode, Uri};
use tower::{Layer, Service};
use tracing::{Level, Span};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::log_time::SecondCachedTime;

/// The target of the access log lines (this module's path).
const TARGET: &str = "oidc_bff_gateway::access_log";

/// Whether the lines are written here (see the [module docs](self)).
static DIRECT: AtomicBool = AtomicBool::new(false);

/// Writes the access log lines here rather than as tracing events, for a
/// process whose global subscriber is tracing-subscriber's `fmt` writing
/// human lines without colours to standard error, with
/// [`SecondCachedTime`], the target shown and no thread names, ids, files
/// or lines: [`crate::cli::init_logging`]'s human output. Whether a line
/// is written still follows that subscriber's filter.
pub fn write_lines_directly() {
    DIRECT.store(true, Ordering::Relaxed);
}

thread_local! {
    /// The line being written, kept between lines.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Adds the access log to a service; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The service made by [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = tracing::debug_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        );
        let method = request.method().clone();
        let uri = request.uri().clone();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture {
            future,
            span,
            method,
            uri,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AccessLog`]: logs when the response is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        span: Span,
        method: Method,
        uri: Uri,
        start: Instant,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.future.poll(cx))
        };
        if let Ok(response) = &result {
            let status = response.status();
            let latency_ms = this.start.elapsed().as_secs_f64() * 1000.0;
            let (method, path) = (this.method.as_str(), this.uri.path());
            let level = if status.as_u16() >= 500 {
                Level::WARN
            } else {
                Level::INFO
            };
            if DIRECT.load(Ordering::Relaxed) {
                write_line(level, method, path, status, latency_ms);
            } else {
                event(level, method, path, status.as_u16(), latency_ms);
            }
        }
        Poll::Ready(result)
    }
}

/// The access log line as a tracing event.
fn event(level: Level, method: &str, path: &str, status: u16, latency_ms: f64) {
    if level == Level::WARN {
        tracing::warn!(method, path, status, latency_ms, "request");
    } else {
        tracing::info!(method, path, status, latency_ms, "request");
    }
}

/// Writes one line to standard error, if the log filter lets it through.
fn write_line(level: Level, method: &str, path: &str, status: StatusCode, latency_ms: f64) {
    // The filter's answer for the events `tracing::info!`/`warn!` here
    // would make (cached per call site).
    let enabled = if level == Level::WARN {
        tracing::event_enabled!(target: TARGET, Level::WARN)
    } else {
        tracing::event_enabled!(target: TARGET, Level::INFO)
    };
    if !enabled {
        return;
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        if format_line(
            &mut line,
            &SecondCachedTime,
            level,
            method,
            path,
            status,
            latency_ms,
        )
        .is_ok()
        {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    });
}

/// The text tracing-subscriber's `fmt` writes for the access log event
/// (`Format<Full>` without colours, thread names or ids, with the fields
/// written `name=value` by `Debug` after the message):
///
/// ```text
/// 2026-11-30T18:16:19.123456Z  INFO oidc_bff_gateway::access_log: request method="GET" path="/api/x" status=200 latency_ms=0.1234
/// ```
fn format_line(
    out: &mut String,
    timer: &impl FormatTime,
    level: Level,
    method: &str,
    path: &str,
    status: StatusCode,
    latency_ms: f64,
) -> std::fmt::Result {
    if timer.format_time(&mut Writer::new(out)).is_err() {
        out.push_str("<unknown time>");
    }
    out.push_str(if level == Level::WARN {
        "  WARN "
    } else {
        "  INFO "
    });
    out.push_str(TARGET);
    out.push_str(": request method=");
    debug_str(out, method)?;
    out.push_str(" path=");
    debug_str(out, path)?;
    out.push_str(" status=");
    out.push_str(status.as_str());
    out.push_str(" latency_ms=");
    write!(out, "{latency_ms:?}")?;
    out.push('\n');
    Ok(())
}

/// `s` as `{:?}` writes it: quoted, escaped where needed (plain printable
/// ASCII, all a method or a URI path holds in practice, is copied as is).
fn debug_str(out: &mut String, s: &str) -> std::fmt::Result {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
        Ok(())
    } else {
        write!(out, "{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A fixed time, for both formatters.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
            w.write_str("2026-11-30T18:16:19.123456Z")
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What tracing-subscriber writes for the event, configured as
    /// `init_logging` does for human lines without colours.
    fn by_tracing(level: Level, method: &str, path: &str, status: u16, latency_ms: f64) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_timer(Fixed)
            .with_ansi(false)
            .fmt_fields(crate::cli::plain_fields())
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            event(level, method, path, status, latency_ms);
        });
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn the_line_written_here_is_the_line_tracing_writes() {
        for (level, method, path, status, latency_ms) in [
            (Level::INFO, "GET", "/api/hello", 200, 0.123_456_789),
            (Level::INFO, "POST", "/", 302, 12.5),
            (Level::INFO, "DELETE", "/api/a%22b/c", 404, 0.000_01),
            (Level::WARN, "GET", "/api/slow", 504, 30_000.000_1),
            (Level::WARN, "PATCH", "/a\"b\\c", 502, 1e17),
            (Level::INFO, "GET", "/caf\u{e9}/\u{7}", 200, 0.0),
        ] {
            let status_code = StatusCode::from_u16(status).unwrap();
            let mut ours = String::new();
            format_line(
                &mut ours,
                &Fixed,
                level,
                method,
                path,
                status_code,
                latency_ms,
            )
            .unwrap();
            assert_eq!(
                ours,
                by_tracing(level, method, path, status, latency_ms),
                "{method} {path}"
            );
        }
    }
}
