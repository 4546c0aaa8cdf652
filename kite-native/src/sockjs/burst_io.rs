//! [`BurstIo`]: the socket under a server websocket, which holds no read buffer while the
//! connection is idle and reads large input in big chunks.
//!
//! tungstenite zero-fills its whole read buffer before every read, the one an idle connection
//! waits in included, so that buffer is resident for the connection's life: with 8 KiB it was
//! more than half of an idle websocket. A websocket therefore gets a small tungstenite buffer
//! ([`FRAME_BUFFER`]) over a `BurstIo`, which passes reads straight to the socket until one
//! fills the caller's slice completely (more input is then likely waiting). The next read takes
//! up to `chunk` bytes in one system call into a buffer allocated then, and hands them out in
//! the caller's slices; once drained after a short read (the socket is likely empty) or when the
//! socket has nothing more, the buffer is freed. A large frame so costs one system call per
//! `chunk` bytes and one copy, and an idle connection holds nothing here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read buffer tungstenite gets over a [`BurstIo`] (at most): what an idle websocket
/// holds for its input.
pub(crate) const FRAME_BUFFER: usize = 1024;

/// A socket whose reads take up to `chunk` bytes at a time while input streams in, and hold
/// no buffer in between (see the [module docs](self)). Writes go straight through.
#[derive(Debug)]
pub(crate) struct BurstIo<T> {
    io: T,
    /// The most bytes one read of the socket takes.
    chunk: usize,
    /// Input read ahead of the caller; no allocation while nothing is held.
    ahead: BytesMut,
    /// Whether the last read took all that was asked (then the next reads ahead).
    burst: bool,
    /// Whether the chunk that `ahead` holds was full (then it is kept once drained).
    full: bool,
}

impl<T> BurstIo<T> {
    /// `io`, read at most `chunk` bytes at a time (at least 1).
    pub(crate) fn new(io: T, chunk: usize) -> Self {
        BurstIo {
            io,
            chunk: chunk.max(1),
            ahead: BytesMut::new(),
            burst: false,
            full: false,
        }
    }

    /// The bytes allocated for input read ahead (0 while idle).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.ahead.capacity()
    }

    /// Frees the read-ahead buffer and goes back to reading straight into the caller's slices.
    fn release(&mut self) {
        self.ahead = BytesMut::new();
        self.burst = false;
        self.full = false;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BurstIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            let want = out.remaining();
            if !this.burst || want >= this.chunk {
                // Straight into the caller's slice, as without the adapter.
                let before = out.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
                let got = out.filled().len() - before;
                this.burst = want > 0 && got == want && want < this.chunk;
                return Poll::Ready(Ok(()));
            }
            this.ahead.reserve(this.chunk);
            let mut room = (&mut this.ahead).limit(this.chunk);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut room) {
                Poll::Ready(Ok(got)) => this.full = got == this.chunk,
                Poll::Ready(Err(e)) => {
                    this.release();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing waiting after all: hold nothing while the connection is idle.
                    this.release();
                    return Poll::Pending;
                }
            }
            if this.ahead.is_empty() {
                // End of input.
                this.release();
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.ahead.len());
        out.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        if this.ahead.is_empty() && !this.full {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BurstIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every byte arrives once, in order, whatever the caller's slices and the chunk; the
    /// buffer is gone once the input is drained.
    #[tokio::test]
    async fn reads_everything_in_order_and_frees_the_buffer() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (slice, chunk) in [(1024, 65536), (100, 4096), (4096, 1024), (1, 7)] {
            let (mut tx, rx) = tokio::io::duplex(1 << 20);
            tx.write_all(&data).await.unwrap();
            drop(tx);
            let mut io = BurstIo::new(rx, chunk);
            let mut got = Vec::new();
            let mut buf = vec![0; slice];
            loop {
                let n = io.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, data, "slice {slice}, chunk {chunk}");
            assert_eq!(io.held(), 0);
        }
    }

    /// A reader waiting for input holds no buffer, even after a burst.
    #[tokio::test]
    async fn holds_nothing_while_waiting() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut io = BurstIo::new(rx, 65536);
        tx.write_all(&[1; 10_000]).await.unwrap();
        let mut buf = [0; 1024];
        let mut total = 0;
        while total < 10_000 {
            total += io.read(&mut buf).await.unwrap();
        }
        assert_eq!(total, 10_000);
        let waiting = std::future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut io).poll_read(cx, &mut ReadBuf::new(&mut buf)))
        })
        .await;
        assert!(waiting.is_pending());
        assert_eq!(io.held(), 0);
    }
}
