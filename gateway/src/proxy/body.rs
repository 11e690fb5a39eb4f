//! Request and response bodies, streamed frame by frame between hyper and h3.
//!
//! Nothing here buffers a whole body. A body received on an h3 stream is polled in place by
//! its reader, so a slow reader holds back the sender through QUIC flow control; a body sent on
//! an h3 stream is pumped frame by frame, trailers included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used throughout the gateway.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of one chunk.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body received by hyper.
pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// `body`, holding `guard` until it ends or is dropped.
pub(crate) fn guarded<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    Guarded {
        body,
        _guard: guard,
    }
    .boxed()
}

struct Guarded<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// `body`, which is `Send` but not `Sync` (tonic's), as a [`Body`]. A body is only ever polled
/// through `&mut`, so the mutex that makes it `Sync` is never locked.
pub(crate) fn unsync<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Unsync(std::sync::Mutex::new(body))
        .map_err(Into::into)
        .boxed()
}

struct Unsync<B>(std::sync::Mutex<B>);

impl<B: http_body::Body + Unpin> http_body::Body for Unsync<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let body = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().map(|b| b.is_end_stream()).unwrap_or(true)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.lock().map(|b| b.size_hint()).unwrap_or_default()
    }
}

/// The receiving half of an h3 request stream, client or server side.
pub(crate) trait H3Recv: Send + Sync + Unpin + 'static {
    fn poll_recv_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;
    fn poll_recv_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, StreamError>>;
    // No `stop_sending`: h3-quinn 0.0.10 panics on it whenever h3 has a read pending inside,
    // which a caller cannot see. A stream no longer wanted is dropped, and quinn stops it.
}

/// The next chunk of data on an h3 stream, or `None` at its end.
pub(crate) async fn recv_data(stream: &mut impl H3Recv) -> Result<Option<Bytes>, StreamError> {
    std::future::poll_fn(|cx| stream.poll_recv_data(cx)).await
}

/// The sending half of an h3 request stream, client or server side.
pub(crate) trait H3Send: Send + 'static {
    fn send_data(&mut self, data: Bytes) -> impl Future<Output = Result<(), StreamError>> + Send;
    fn send_trailers(
        &mut self,
        trailers: HeaderMap,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;
    fn finish(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send;
    fn stop_stream(&mut self, code: Code);
}

/// A body that yields what arrives on an h3 stream, polled in place by whoever reads it: no
/// task or channel between them, so a slow reader holds back the sender through QUIC flow
/// control.
///
/// A reader that stops early (an upstream answering a GET before the client's FIN arrived, a
/// client hanging up) hands the stream to [`abandon`], which reads a little longer for the end.
/// Dropping the stream at once would make quinn send STOP_SENDING (code 0) for a request the
/// peer had all but finished, which an HTTP/3 client may report as a failure.
pub(crate) fn from_h3(stream: impl H3Recv) -> Body {
    H3Body {
        stream: Some(stream),
        state: Reading::Data,
    }
    .boxed()
}

/// How much more an abandoned stream is read, and for how long, waiting for its end.
const ABANDON_READ_LIMIT: usize = 64 * 1024;
const ABANDON_READ_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads what is left of an abandoned stream, up to a limit, so that a stream about to end
/// (a request whose FIN is still on its way) ends cleanly instead of being stopped; past the
/// limit or the time, drops it, and quinn stops it.
async fn abandon<S: H3Recv>(mut stream: S) {
    let _ = tokio::time::timeout(ABANDON_READ_TIME, async {
        let mut read = 0;
        while read <= ABANDON_READ_LIMIT {
            match recv_data(&mut stream).await {
                Ok(Some(data)) => read += data.len(),
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
}

/// Sends `body` on an h3 stream, then finishes it. If the body fails, the stream is reset
/// rather than finished, so the other side never mistakes a truncated body for a whole one.
pub(crate) async fn send_to_h3(mut body: Body, mut stream: impl H3Send) -> Result<(), BoxError> {
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                stream.stop_stream(Code::H3_REQUEST_CANCELLED);
                return Err(error);
            }
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => Ok(()),
            Ok(data) => stream.send_data(data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => stream.send_trailers(trailers).await,
                Err(_) => Ok(()),
            },
        };
        if let Err(error) = sent {
            stream.stop_stream(Code::H3_REQUEST_CANCELLED);
            return Err(error.into());
        }
    }
    Ok(stream.finish().await?)
}

struct H3Body<S: H3Recv> {
    /// Taken by `Drop` to hand to [`abandon`].
    stream: Option<S>,
    state: Reading,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Data,
    Trailers,
    Done,
}

impl<S: H3Recv> http_body::Body for H3Body<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.state {
                Reading::Data => match this.stream.as_mut().map(|s| s.poll_recv_data(cx)) {
                    None => return Poll::Ready(None),
                    Some(polled) => match polled {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(Some(data))) => {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Poll::Ready(Ok(None)) => this.state = Reading::Trailers,
                        Poll::Ready(Err(error)) => {
                            this.state = Reading::Done;
                            return Poll::Ready(Some(Err(error.into())));
                        }
                    },
                },
                Reading::Trailers => {
                    let Some(stream) = this.stream.as_mut() else {
                        return Poll::Ready(None);
                    };
                    let trailers = match stream.poll_recv_trailers(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(trailers) => trailers,
                    };
                    this.state = Reading::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                        Ok(None) => None,
                        Err(error) => Some(Err(error.into())),
                    });
                }
                Reading::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == Reading::Done
    }
}

impl<S: H3Recv> Drop for H3Body<S> {
    fn drop(&mut self) {
        if self.state == Reading::Done {
            return;
        }
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        // Usually the stream's end has already arrived (a body whose length the reader knew,
        // a request without one): read up to it here rather than start a task to.
        if ended_already(&mut stream) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(abandon(stream));
        }
    }
}

/// Reads what `stream` has received without waiting, up to [`ABANDON_READ_LIMIT`]: whether
/// it reached the stream's end (or the stream failed, which ends it too).
fn ended_already<S: H3Recv>(stream: &mut S) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut read = 0;
    while read <= ABANDON_READ_LIMIT {
        match stream.poll_recv_data(&mut cx) {
            Poll::Ready(Ok(Some(data))) => read += data.len(),
            Poll::Ready(Ok(None) | Err(_)) => return true,
            Poll::Pending => return false,
        }
    }
    false
}

// === impl H3Recv, H3Send for h3's stream halves ===

macro_rules! h3_halves {
    ($side:ident) => {
        impl H3Recv for h3::$side::RequestStream<h3_quinn::RecvStream, Bytes> {
            fn poll_recv_data(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<Bytes>, StreamError>> {
                h3::$side::RequestStream::poll_recv_data(self, cx).map(|chunk| {
                    chunk.map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())))
                })
            }

            fn poll_recv_trailers(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<HeaderMap>, StreamError>> {
                h3::$side::RequestStream::poll_recv_trailers(self, cx)
            }
        }

        impl H3Send for h3::$side::RequestStream<h3_quinn::SendStream<Bytes>, Bytes> {
            async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
                h3::$side::RequestStream::send_data(self, data).await
            }

            async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
                h3::$side::RequestStream::send_trailers(self, trailers).await
            }

            async fn finish(&mut self) -> Result<(), StreamError> {
                h3::$side::RequestStream::finish(self).await
            }

            fn stop_stream(&mut self, code: Code) {
                h3::$side::RequestStream::stop_stream(self, code)
            }
        }
    };
}

h3_halves!(server);
h3_halves!(client);
