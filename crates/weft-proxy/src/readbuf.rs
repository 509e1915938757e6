//! A read buffer that grows with the traffic. rustls reads at most 4 KiB per call, so TLS on a
//! proxied TCP connection reads the socket through a buffer; a bulk transfer wants it large
//! (256 KiB moves ~8% more through the mTLS pair than 64 KiB), an idle connection wants it
//! small. tokio's `BufReader` allocates and zeroes its whole capacity up front; this one starts
//! at 16 KiB and doubles, up to its limit, whenever a read fills half of it or more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First buffer size.
const START: usize = 16 * 1024;

pub(crate) struct GrowingReader<R> {
    inner: R,
    /// Initialized buffer; its length is the current capacity.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    max: usize,
}

impl<R> GrowingReader<R> {
    /// A reader over `inner` whose buffer grows up to `max` bytes.
    pub(crate) fn new(inner: R, max: usize) -> Self {
        GrowingReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            max: max.max(START),
        }
    }

    /// The buffer's current size.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for GrowingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.filled {
            if this.buf.is_empty() {
                this.buf = vec![0; START];
            } else if this.filled * 2 >= this.buf.len() && this.buf.len() < this.max {
                // The last read filled half the buffer or more: a bulk transfer.
                let grown = (this.buf.len() * 2).min(this.max);
                this.buf.resize(grown, 0);
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            this.filled = rb.filled().len();
            this.pos = 0;
        }
        let n = out.remaining().min(this.filled - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncWrite + Unpin> AsyncWrite for GrowingReader<R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn grows_under_bulk_reads_and_passes_everything_through() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let mut r = GrowingReader::new(near, 64 * 1024);
        // A small message: the buffer stays at its first size.
        far.write_all(b"hello").await.unwrap();
        let mut small = [0u8; 5];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hello");
        assert_eq!(r.capacity(), START);

        // Bulk data read in 4 KiB calls, as rustls does: each fill of half the buffer or more
        // doubles it, up to the limit; every byte comes out in order.
        let data: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                far.write_all(&data).await.unwrap();
                far
            })
        };
        let mut got = Vec::with_capacity(data.len());
        let mut chunk = [0u8; 4096];
        while got.len() < data.len() {
            let n = r.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(r.capacity(), 64 * 1024);

        // Writes go straight through; end of stream reads as 0.
        let mut far = writer.await.unwrap();
        r.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
        drop(far);
        assert_eq!(r.read(&mut chunk).await.unwrap(), 0);
    }
}
