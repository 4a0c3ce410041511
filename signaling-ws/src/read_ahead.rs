//! [`ReadAhead`]: large socket reads for a transport that asks for small ones, with no
//! buffer kept while the connection idles.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes [`ReadAhead`] asks the socket for at once, in a buffer on the stack.
pub const READ_AHEAD: usize = 4 * 1024;

/// Wraps a byte stream so that each read of the socket asks for [`READ_AHEAD`] bytes however
/// little the reader above asked for, and keeps what it did not take on the heap only until it
/// is taken.
///
/// tungstenite reads the socket into a buffer of `read_buffer_size` bytes that it allocates
/// with the stream and keeps for the stream's life, and each read asks for at most that many
/// bytes: a large buffer costs every idle connection its size, a small one costs a system call
/// per frame or two under load. Under this layer the WebSocket's own buffer can be small
/// ([`Config::read_buffer_size`](signaling_core::driver::Config::read_buffer_size)): a burst of
/// frames still arrives in one system call (read into the stack), the part the WebSocket did
/// not ask for yet waits in a buffer of this layer, and that buffer is freed as soon as it is
/// drained. An idle connection holds no read-ahead buffer at all; a busy one at most
/// [`READ_AHEAD`] bytes more than the WebSocket's.
///
/// The adapters put it under every WebSocket they make ([`serve_io`](crate::serve_io),
/// `signaling-warp`); use it when you upgrade sockets yourself. Writes go straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read from `inner`, not yet handed out: `pending[taken..]`. Unallocated while empty.
    pending: Vec<u8>,
    taken: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            pending: Vec::new(),
            taken: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the stream and not yet handed out.
    pub fn pending(&self) -> usize {
        self.pending.len() - self.taken
    }

    /// Hands out what is pending into `buf`; frees the buffer once it is all taken.
    fn take_pending(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.pending());
        buf.put_slice(&self.pending[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.pending.len() {
            self.pending = Vec::new();
            self.taken = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            this.take_pending(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // Uninitialised: tokio's sockets read into it without zeroing it first.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut chunk = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        let n = buf.remaining().min(read.len());
        buf.put_slice(&read[..n]);
        if n < read.len() {
            this.pending = read[n..].to_vec();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whatever sizes the reader asks for, it gets the stream's bytes in order; the buffer is
    /// held only while bytes wait in it.
    #[tokio::test]
    async fn small_reads_see_every_byte_and_the_buffer_goes_when_drained() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let sent: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        let mut layer = ReadAhead::new(server);
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        let n = layer.read(&mut small).await.unwrap();
        assert_eq!(n, 100);
        got.extend_from_slice(&small[..n]);
        // One read of the stream took READ_AHEAD bytes; the rest of them wait in the layer.
        assert_eq!(layer.pending(), READ_AHEAD - 100);
        assert!(layer.pending.capacity() >= READ_AHEAD - 100);
        while got.len() < READ_AHEAD {
            let n = layer.read(&mut small).await.unwrap();
            got.extend_from_slice(&small[..n]);
        }
        // Drained: nothing kept.
        assert_eq!(layer.pending(), 0);
        assert_eq!(layer.pending.capacity(), 0);
        // A read as large as a chunk goes straight to the stream.
        let mut large = vec![0u8; READ_AHEAD];
        let n = layer.read(&mut large).await.unwrap();
        got.extend_from_slice(&large[..n]);
        assert_eq!(layer.pending.capacity(), 0);
        drop(client);
        layer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, sent);
        assert_eq!(layer.pending.capacity(), 0);
    }
}
