//! A read-ahead buffer between the TLS layer and its TCP stream.
//!
//! A reader that asks the stream for less than [`READ_AHEAD`] at a time (the TLS layer
//! under `wss://` reads a record's worth at a time) would make one `recv`, and one window
//! update, which on loopback also runs the sender's acknowledgement work, per small read.
//! Here one `recv` takes up to [`READ_AHEAD`] bytes and small reads are served from
//! memory; a read with room for the whole buffer (the WebSocket reader's over plain TCP)
//! goes straight to the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes taken from the socket in one read.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// `inner` with reads taken [`READ_AHEAD`] bytes at a time; writes pass through.
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Bytes read and not yet handed out are `buf[start..]`. Allocated when a small read
    /// needs it, refilled from its front once empty, and let go when a read has room
    /// for more than it holds (as the reader's does between bursts), so an idle socket
    /// keeps none.
    buf: Vec<u8>,
    start: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: Vec::new(),
            start: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.start == this.buf.len() {
            if out.remaining() >= READ_AHEAD {
                // Nothing to gain from the buffer; an idle socket does not keep one.
                this.buf = Vec::new();
                this.start = 0;
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.buf.clear();
            this.start = 0;
            if this.buf.capacity() < READ_AHEAD {
                this.buf.reserve_exact(READ_AHEAD);
            }
            let mut spare = ReadBuf::uninit(this.buf.spare_capacity_mut());
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut spare))?;
            let filled = spare.filled().len();
            // SAFETY: `filled` bytes at the start of the spare capacity were written by the
            // read (ReadBuf only counts initialised bytes as filled), and filled <= capacity.
            unsafe { this.buf.set_len(filled) };
            if filled == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.buf.len() - this.start);
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
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

    /// A stream that hands out its bytes in the pieces it was given, counting reads.
    struct Pieces {
        pieces: Vec<Vec<u8>>,
        reads: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            if let Some(piece) = this.pieces.first_mut() {
                let n = out.remaining().min(piece.len());
                out.put_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    this.pieces.remove(0);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Everything `r` yields, read `piece` bytes at a time as the WebSocket reader does
    /// (not `read_to_end`, whose large reads would bypass the buffer).
    async fn read_in_pieces<S: AsyncRead + Unpin>(r: &mut ReadAhead<S>, piece: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut small = vec![0u8; piece];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&small[..n]);
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_and_nothing_is_lost() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let pieces = vec![data[..150_000].to_vec(), data[150_000..].to_vec()];
        let mut r = ReadAhead::new(Pieces { pieces, reads: 0 });
        let got = read_in_pieces(&mut r, 3000).await;
        assert_eq!(got, data);
        // 200,000 bytes in 64 KiB reads (plus the read that saw the end), not 67 reads of
        // 3,000 bytes.
        assert!(r.inner.reads <= 6, "{} reads", r.inner.reads);
    }

    #[tokio::test]
    async fn a_read_with_room_for_the_whole_buffer_bypasses_it() {
        let data = vec![7u8; 100_000];
        let mut r = ReadAhead::new(Pieces {
            pieces: vec![data.clone()],
            reads: 0,
        });
        let mut big = vec![0u8; 128 * 1024];
        let n = r.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], &data[..]);
        assert_eq!(r.buf.capacity(), 0, "the buffer was never needed");
    }

    #[tokio::test]
    async fn the_buffer_is_let_go_once_drained_reads_bypass_it() {
        let mut r = ReadAhead::new(Pieces {
            pieces: vec![vec![1u8; 100], vec![2u8; 100]],
            reads: 0,
        });
        let mut small = [0u8; 100];
        assert_eq!(r.read(&mut small).await.unwrap(), 100);
        assert!(
            r.buf.capacity() >= READ_AHEAD,
            "a small read filled the buffer"
        );
        let mut big = vec![0u8; READ_AHEAD];
        assert_eq!(r.read(&mut big).await.unwrap(), 100);
        assert_eq!(&big[..100], &[2u8; 100][..]);
        assert_eq!(r.buf.capacity(), 0, "an idle socket keeps no buffer");
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_over_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let sent = data.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for chunk in sent.chunks(10_007) {
                s.write_all(chunk).await.unwrap();
            }
        });
        let mut r = ReadAhead::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let got = read_in_pieces(&mut r, 2048).await;
        server.await.unwrap();
        assert_eq!(got, data);
    }
}
