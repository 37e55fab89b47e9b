//! The HTTP connection loop of both listeners (the client API and the peers'):
//! what a connection may cost before a handler sees a request.
//!
//! axum's `serve` sets no timer, so a client that sent half a header, or opened a
//! socket and said nothing, was held forever (issue #11: 400 slow connections were
//! held indefinitely and ~1,000 idle sockets exhausted the descriptors until
//! `/health` timed out). Here every connection has:
//! - a **connection limit** ([`Hygiene::max_connections`]): past it a new socket is
//!   closed at once, before any byte is read, so the descriptors held stay bounded;
//! - a **header-read timeout** (hyper's, which also runs while a kept-alive
//!   connection waits for its next request: it is the idle timeout too);
//! - a **body-read deadline** for the whole body (not per chunk), answered `408
//!   body_timeout` by the body readers (`body`);
//! - a `Content-Length` over the listener's body limit answered `413` at once, before
//!   the body is read, so an `Expect: 100-continue` client never gets a `100`.
//!
//! With TLS (`tls`), the handshake must also finish within the header-read
//! timeout; a connection that fails it is closed.
//!
//! Must not depend on the client API or the peer routes: both pass their router in.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// What one listener allows a connection (`limits` has the client API's; the peer
/// listener's body limit is its own).
#[derive(Debug, Clone, Copy)]
pub struct Hygiene {
    /// Connections served at once; a socket past this is closed at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, counted from
    /// when it is ready for one (so also how long a kept-alive connection may idle).
    pub header_read_timeout: Duration,
    /// How long a request's whole body may take to arrive.
    pub body_read_timeout: Duration,
    /// Largest body accepted; a larger `Content-Length` is refused before reading.
    pub max_body_bytes: usize,
}

/// How long a shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then lets the open
/// connections finish (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    hygiene: Hygiene,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let router = router.layer(axum::middleware::from_fn_with_state(hygiene, admit_body));
    let slots = Arc::new(tokio::sync::Semaphore::new(hygiene.max_connections));
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was
                    // accepted: pause briefly rather than spin.
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                max = hygiene.max_connections,
                "connection limit reached: closing a new connection"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let closed = closed.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, service, hygiene, closed).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(hygiene.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, hygiene, closed).await,
                        Ok(Err(error)) => tracing::debug!("TLS handshake refused: {error}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let all = u32::try_from(hygiene.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutting down with connections still open");
    }
    Ok(())
}

/// Serves one accepted connection (plain or TLS) until it ends or, after the
/// listener's shutdown, finishes its request in flight.
async fn serve_connection<IO>(
    stream: IO,
    service: TowerToHyperService<Router>,
    hygiene: Hygiene,
    mut closed: tokio::sync::watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(hygiene.header_read_timeout);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = closed.wait_for(|closed| *closed), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Refuses a declared body over the limit before reading it, and puts a deadline on
/// reading the rest.
async fn admit_body(State(hygiene): State<Hygiene>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > hygiene.max_body_bytes as u64) {
        let limit = hygiene.max_body_bytes;
        let body = serde_json::json!({ "error": {
            "code": "payload_too_large",
            "message": format!("too large: the limit is {limit} bytes"),
            "limit": limit,
        }});
        let mut response = (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
        // The body is never read: the connection cannot be reused.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(hygiene.body_read_timeout)),
        after: hygiene.body_read_timeout,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

/// The error of a body that did not arrive within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", after.as_millis())]
pub struct BodyTimedOut {
    pub after: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let after = self.after;
                Poll::Ready(Some(Err(Box::new(BodyTimedOut { after }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Descriptors kept free of client connections for the node itself (sled, peer
/// connections, forwarding, the peer listener's connections).
pub const RESERVED_DESCRIPTORS: usize = 512;

/// `wanted`, lowered so that the connections of both listeners and
/// [`RESERVED_DESCRIPTORS`] fit in this process's descriptor limit: past the limit
/// `accept` fails and nothing, `/health` included, is served.
pub fn fit_to_descriptors(wanted: usize, peers: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !read || limit.rlim_cur == libc::RLIM_INFINITY {
        return wanted;
    }
    let available = (limit.rlim_cur as usize).saturating_sub(RESERVED_DESCRIPTORS + peers);
    wanted.min(available.max(16))
}
