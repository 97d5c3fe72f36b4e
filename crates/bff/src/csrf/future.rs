//! [`ResponseFuture`]: the future of [`Csrf`](super::Csrf).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::Response;
use pin_project_lite::pin_project;

pin_project! {
    /// Response future of [`Csrf`](super::Csrf): the inner service's answer,
    /// or the refusal when the request lacked the anti-forgery header.
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F>
    where
        F: Future,
    {
        Future {
            #[pin]
            future: tower_http::csrf::ResponseFuture<F>,
        },
        Rejected {
            response: Option<Response>,
        },
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn future(future: tower_http::csrf::ResponseFuture<F>) -> Self {
        ResponseFuture {
            kind: Kind::Future { future },
        }
    }

    pub(super) fn rejected(response: Response) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Future { future } => future.poll(cx),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it completed: stay pending, as a fused
                // future would, rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
