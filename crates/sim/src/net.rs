//! The simulator's listener. Connections are accepted (and, with `--tls`, handshaken) by a
//! background task, so a slow TLS client never holds up others. Each connection carries a
//! reset flag so the `drop` fault can end it with a TCP RST (zero linger) instead of an
//! orderly FIN: the way a connection dies when a load balancer or NAT box forgets it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener whose connections can be reset on purpose, optionally behind TLS.
pub struct SimListener {
    ready: mpsc::Receiver<(SimConn, ConnInfo)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl SimListener {
    /// Starts accepting on a bound listener.
    pub fn new(inner: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Self> {
        let local = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(inner, tls.map(TlsAcceptor::from), tx));
        Ok(SimListener {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    inner: TcpListener,
    tls: Option<TlsAcceptor>,
    ready: mpsc::Sender<(SimConn, ConnInfo)>,
) {
    loop {
        let (stream, peer) = match inner.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and similar: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let reset = Arc::new(AtomicBool::new(false));
        let info = ConnInfo {
            peer,
            reset: reset.clone(),
        };
        match &tls {
            None => {
                if ready
                    .send((
                        SimConn {
                            io: Io::Plain(stream),
                            reset,
                        },
                        info,
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(acceptor) => {
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready
                                .send((
                                    SimConn {
                                        io: Io::Tls(Box::new(tls)),
                                        reset,
                                    },
                                    info,
                                ))
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// What a handler learns about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Set to make the connection end with a RST when it is dropped.
    pub reset: Arc<AtomicBool>,
}

impl ConnInfo {
    /// Asks for a RST when the connection is dropped.
    pub fn reset_on_drop(&self) {
        self.reset.store(true, Ordering::SeqCst);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection.
pub struct SimConn {
    io: Io,
    reset: Arc<AtomicBool>,
}

impl Drop for SimConn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let tcp = match &self.io {
                Io::Plain(s) => s,
                Io::Tls(t) => t.get_ref().0,
            };
            // Zero linger makes the kernel send RST instead of FIN on close.
            let _ = tcp.set_zero_linger();
        }
    }
}

impl Listener for SimListener {
    type Io = SimConn;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only stops when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnInfo {
            peer: self.local,
            reset: Arc::default(),
        })
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.remote_addr().clone()
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match &mut $self.io {
            Io::Plain($io) => $call,
            Io::Tls($io) => $call,
        }
    };
}

impl AsyncRead for SimConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(t) => t.is_write_vectored(),
        }
    }
}
