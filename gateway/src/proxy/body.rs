//! Request and response bodies, streamed frame by frame between hyper and h3.
//!
//! Nothing here buffers a whole body. A body received on an h3 stream is fed through a small
//! bounded channel by its own task, so a slow reader holds back the sender (QUIC flow control
//! does the rest); a body sent on an h3 stream is pumped frame by frame, trailers included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::sync::mpsc;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used throughout the gateway.
pub type Body = BoxBody<Bytes, BoxError>;

/// Frames buffered between an h3 stream and its reader. Small: QUIC flow control is the real
/// buffer, and a deep channel would only hide back-pressure.
const CHANNEL_DEPTH: usize = 4;

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

/// The receiving half of an h3 request stream, client or server side.
pub(crate) trait H3Recv: Send + 'static {
    fn recv_data(&mut self) -> impl Future<Output = Result<Option<Bytes>, StreamError>> + Send;
    fn recv_trailers(
        &mut self,
    ) -> impl Future<Output = Result<Option<HeaderMap>, StreamError>> + Send;
    fn stop_sending(&mut self, code: Code);
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

/// A body that yields what arrives on an h3 stream.
pub(crate) fn from_h3(stream: impl H3Recv) -> Body {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(feed(stream, tx));
    ChannelBody { rx }.boxed()
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

async fn feed(mut stream: impl H3Recv, tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>) {
    loop {
        match stream.recv_data().await {
            Ok(Some(data)) => {
                if tx.send(Ok(Frame::data(data))).await.is_err() {
                    // The reader went away: tell the sender to stop.
                    stream.stop_sending(Code::H3_REQUEST_CANCELLED);
                    return;
                }
            }
            Ok(None) => break,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        }
    }
    match stream.recv_trailers().await {
        Ok(Some(trailers)) => {
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        }
        Ok(None) => {}
        Err(error) => {
            let _ = tx.send(Err(error.into())).await;
        }
    }
}

struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

// === impl H3Recv, H3Send for h3's stream halves ===

macro_rules! h3_halves {
    ($side:ident) => {
        impl H3Recv for h3::$side::RequestStream<h3_quinn::RecvStream, Bytes> {
            async fn recv_data(&mut self) -> Result<Option<Bytes>, StreamError> {
                let chunk = h3::$side::RequestStream::recv_data(self).await?;
                Ok(chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())))
            }

            async fn recv_trailers(&mut self) -> Result<Option<HeaderMap>, StreamError> {
                h3::$side::RequestStream::recv_trailers(self).await
            }

            fn stop_sending(&mut self, code: Code) {
                h3::$side::RequestStream::stop_sending(self, code)
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
