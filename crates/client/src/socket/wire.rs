//! The WebSocket under each session. tungstenite performs the opening handshake (the HTTP
//! upgrade); from then on holdline reads frames itself, straight into one large buffer,
//! and hands each message out as a slice of that buffer, and writes the few frames a
//! client sends (its keepalive, pongs, the close) masked as RFC 6455 requires.
//!
//! tungstenite's reader zero-fills the spare room of its buffer before every read and
//! its stream adapter adds work per frame; reading here took a quarter of the socket
//! thread's CPU off every event (docs/BENCHMARKS.md).

use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{TlsError, UrlError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use holdline_proto::frame::{Parsed, ServerFrame};

use crate::socket::readahead::ReadAhead;

/// The byte stream under the WebSocket.
type Io = MaybeTlsStream<ReadAhead<TcpStream>>;

/// Least free room before each read: one read takes what the socket holds, up to this
/// (at least the read-ahead's size, so plain-TCP reads go straight to the socket).
const READ_ROOM: usize = 64 * 1024;
/// A fresh read buffer: frames are slices of it, so it is replaced, not reused, once
/// full while events from it are still on their way out.
const BUFFER: usize = 128 * 1024;
/// Longest control frame payload (RFC 6455, 5.5).
const CONTROL_MAX: usize = 125;

/// A message from the server.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A text message, a view into the read buffer when it came whole.
    Text(Text),
    /// A binary message; the service sends none, so only its arrival matters.
    Binary,
    /// A WebSocket ping, to be answered with [`Socket::pong`].
    Ping(Bytes),
    /// A WebSocket pong.
    Pong,
    /// The server's close frame (code and reason; 1005 without a code), to be answered
    /// with [`Socket::answer_close`].
    Close(u16, String),
}

/// A text message whose payload is not yet checked as UTF-8: [`Text::parse`] checks it
/// in the same pass that parses the frame, so the bytes are walked once, not twice.
#[derive(Debug)]
pub(crate) struct Text(Bytes);

impl Text {
    /// The message's bytes, and as text with the frame it holds; [`WireError::Utf8`]
    /// when the payload is not UTF-8, which ends the socket (RFC 6455, 8.1).
    pub(crate) fn parse(&self) -> Result<(&Bytes, Parsed<'_>), WireError> {
        let parsed = ServerFrame::parse_payload(&self.0).map_err(|_| WireError::Utf8)?;
        Ok((&self.0, parsed))
    }
}

/// Why the socket cannot be read any further.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The connection ended without a close frame.
    #[error("connection closed without a close frame")]
    Eof,
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A frame (or a message put together from fragments) over the size limit.
    #[error("message of {size} bytes is over the {max}-byte limit")]
    TooLong { size: usize, max: usize },
    /// Something RFC 6455 does not allow from a server.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("text message is not valid UTF-8")]
    Utf8,
}

/// A connected WebSocket, client side.
pub(crate) struct Socket {
    io: Io,
    /// Bytes read and not yet handed out as messages.
    buf: BytesMut,
    /// A fragmented message being put together: text or not, and its parts so far.
    partial: Option<(bool, BytesMut)>,
    /// Bytes the frame at the front of `buf` needs in all (0 when it is whole or unknown).
    want: usize,
    max_message: usize,
    /// holdline sent its close frame.
    close_sent: bool,
    /// Reads that brought bytes: frames that came in the same read arrived together.
    reads: u64,
}

/// Opens the WebSocket at `uri` (TLS for `wss://`) over a TCP stream with Nagle off and
/// reads taken through [`ReadAhead`]; messages larger than `max_message` end the socket.
/// The most a proxy's tunnel may take (the session's connect timeout usually ends first).
const PROXY_TUNNEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) async fn connect(
    uri: &str,
    tls: Arc<rustls::ClientConfig>,
    proxy: &crate::proxy::ProxyRules,
    resolve: &[crate::config::Resolve],
    max_message: usize,
) -> Result<Socket, WsError> {
    let request = uri.into_client_request()?;
    let host = request
        .uri()
        .host()
        .ok_or(WsError::Url(UrlError::NoHostName))?
        .to_owned();
    let secure = match request.uri().scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(WsError::Url(UrlError::UnsupportedUrlScheme)),
    };
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let scheme = if secure { "wss" } else { "ws" };
    let tcp = match proxy.for_url(scheme, host.trim_matches(['[', ']'])) {
        // Through the proxy; a refusal is no answer of the service (not an HTTP status
        // of the upgrade), and its message names the proxy.
        Some(p) => p
            .tunnel(&host, port, PROXY_TUNNEL_TIMEOUT)
            .await
            .map_err(|e| WsError::Io(std::io::Error::other(e.to_string())))?,
        None => match crate::config::Resolve::find(resolve, host.trim_matches(['[', ']']), port) {
            Some(addr) => TcpStream::connect(addr).await?,
            // An IPv6 host keeps its brackets, so "[::1]:443" parses as an address.
            None => TcpStream::connect(format!("{host}:{port}")).await?,
        },
    };
    tcp.set_nodelay(true)?;
    let tcp = ReadAhead::new(tcp);
    let mut io = if secure {
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|_| WsError::Tls(TlsError::InvalidDnsName))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        MaybeTlsStream::Rustls(stream)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    // Frames the server sends right behind its upgrade response stay here, not in the
    // handshake's buffer, which is let go with it.
    let mut early = BytesMut::new();
    let upgrade = UpToHeaders {
        io: &mut io,
        early: &mut early,
        seen: 0,
        done: false,
    };
    // The handshake's WebSocket reads no frames, so its limits do not matter; ours do.
    tokio_tungstenite::client_async(request, upgrade).await?;
    Ok(Socket {
        io,
        buf: early,
        partial: None,
        want: 0,
        max_message,
        close_sent: false,
        reads: 0,
    })
}

impl Socket {
    /// The next message. Cancel-safe: it only reads (replies are the caller's), and a read
    /// interrupted before it completes leaves everything already read in the buffer.
    pub(crate) async fn recv(&mut self) -> Result<Incoming, WireError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(message);
            }
            // Room for the frame being read and for a full read, made in one step: a
            // buffer still shared with messages on their way out is replaced, and only
            // the unread bytes are copied.
            let need = self.want.max(self.buf.len() + READ_ROOM);
            if self.buf.capacity() < need {
                self.buf.reserve(need.max(BUFFER) - self.buf.len());
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Eof);
            }
            self.reads += 1;
        }
    }

    /// How many reads have brought bytes so far.
    pub(crate) fn reads(&self) -> u64 {
        self.reads
    }

    /// Sends a text message.
    pub(crate) async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let payload = Bytes::copy_from_slice(text.as_bytes());
        self.send(Frame::message(payload, OpCode::Data(Data::Text), true))
            .await
    }

    /// Starts the closing handshake with `code` and `reason`; reading goes on until the
    /// server's close.
    pub(crate) async fn close(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        self.close_sent = true;
        self.send(Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
    }

    /// Answers a ping.
    pub(crate) async fn pong(&mut self, payload: Bytes) -> io::Result<()> {
        self.send(Frame::pong(payload)).await
    }

    /// Answers the server's close with the same code, unless holdline closed first.
    pub(crate) async fn answer_close(&mut self, code: u16) -> io::Result<()> {
        if self.close_sent {
            return Ok(());
        }
        self.close_sent = true;
        let echo = (code != 1005).then(|| CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        });
        self.send(Frame::close(echo)).await
    }

    async fn send(&mut self, mut frame: Frame) -> io::Result<()> {
        // A client masks every frame with a fresh unpredictable key (RFC 6455, 5.3).
        frame.header_mut().mask = Some(rand::random());
        let mut out = Vec::with_capacity(frame.len() + 4);
        frame.format(&mut out).map_err(io::Error::other)?;
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// The next whole message in the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<Incoming>, WireError> {
        loop {
            let mut cursor = Cursor::new(&self.buf[..]);
            let Some((header, len)) = FrameHeader::parse(&mut cursor)
                .map_err(|_| WireError::Protocol("unreadable frame header"))?
            else {
                return Ok(None);
            };
            let head = cursor.position() as usize;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > self.max_message {
                return Err(WireError::TooLong {
                    size: len,
                    max: self.max_message,
                });
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(WireError::Protocol("reserved bits set"));
            }
            if header.mask.is_some() {
                return Err(WireError::Protocol("masked frame from the server"));
            }
            if self.buf.len() - head < len {
                self.want = head + len;
                return Ok(None);
            }
            self.want = 0;
            self.buf.advance(head);
            let payload = self.buf.split_to(len).freeze();
            match header.opcode {
                OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => {
                    if self.partial.is_some() {
                        return Err(WireError::Protocol(
                            "a new message began inside a fragmented one",
                        ));
                    }
                    let text = header.opcode == OpCode::Data(Data::Text);
                    if !header.is_final {
                        self.partial = Some((text, BytesMut::from(payload)));
                        continue;
                    }
                    return Ok(Some(message(text, payload)));
                }
                OpCode::Data(Data::Continue) => {
                    let Some((_, parts)) = &mut self.partial else {
                        return Err(WireError::Protocol("a continuation frame began a message"));
                    };
                    if parts.len() + payload.len() > self.max_message {
                        return Err(WireError::TooLong {
                            size: parts.len() + payload.len(),
                            max: self.max_message,
                        });
                    }
                    parts.extend_from_slice(&payload);
                    if header.is_final
                        && let Some((text, parts)) = self.partial.take()
                    {
                        return Ok(Some(message(text, parts.freeze())));
                    }
                }
                OpCode::Control(control) => {
                    if !header.is_final || len > CONTROL_MAX {
                        return Err(WireError::Protocol(
                            "a control frame was fragmented or over 125 bytes",
                        ));
                    }
                    return match control {
                        Control::Ping => Ok(Some(Incoming::Ping(payload))),
                        Control::Pong => Ok(Some(Incoming::Pong)),
                        Control::Close => close(&payload).map(Some),
                        Control::Reserved(_) => Err(WireError::Protocol("unknown control opcode")),
                    };
                }
                OpCode::Data(Data::Reserved(_)) => {
                    return Err(WireError::Protocol("unknown data opcode"));
                }
            }
        }
    }
}

fn message(text: bool, payload: Bytes) -> Incoming {
    if text {
        Incoming::Text(Text(payload))
    } else {
        Incoming::Binary
    }
}

fn close(payload: &[u8]) -> Result<Incoming, WireError> {
    match payload {
        [] => Ok(Incoming::Close(1005, String::new())),
        [_] => Err(WireError::Protocol("a close frame with a one-byte body")),
        [hi, lo, reason @ ..] => {
            let reason = std::str::from_utf8(reason).map_err(|_| WireError::Utf8)?;
            Ok(Incoming::Close(
                u16::from_be_bytes([*hi, *lo]),
                reason.to_owned(),
            ))
        }
    }
}

/// The stream as the opening handshake sees it: reads stop at the end of the upgrade
/// response's headers, and whatever the server sent after them is kept in `early`.
struct UpToHeaders<'a> {
    io: &'a mut Io,
    early: &'a mut BytesMut,
    /// The last four bytes read, to find `\r\n\r\n` across reads.
    seen: u32,
    done: bool,
}

impl AsyncRead for UpToHeaders<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.done {
            // The handshake reads nothing past its response.
            return Poll::Ready(Ok(()));
        }
        let before = out.filled().len();
        ready!(Pin::new(&mut *this.io).poll_read(cx, out))?;
        let end = out.filled().len();
        for i in before..end {
            this.seen = (this.seen << 8) | u32::from(out.filled()[i]);
            if this.seen == u32::from_be_bytes(*b"\r\n\r\n") {
                this.done = true;
                this.early.extend_from_slice(&out.filled()[i + 1..end]);
                out.set_filled(i + 1);
                break;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UpToHeaders<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    /// A server frame (unmasked) with `opcode`, FIN as given.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// A server on a free loopback port that answers the upgrade and writes `then` in the
    /// same write as its response; returns the client's socket and the server's stream.
    async fn pair(then: Vec<u8>, max_message: usize) -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .or_else(|| {
                    request
                        .lines()
                        .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                })
                .unwrap();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.trim().as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(&then);
            stream.write_all(&out).await.unwrap();
            stream
        });
        let tls = crate::tls::client_config(None).unwrap();
        let socket = connect(
            &format!("ws://{addr}/channel"),
            tls,
            &Default::default(),
            &[],
            max_message,
        )
        .await
        .unwrap();
        (socket, server.await.unwrap())
    }

    /// Reads one client frame: opcode, whether it was masked, and the unmasked payload.
    async fn client_frame(stream: &mut TcpStream) -> (u8, bool, Vec<u8>) {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read_client_frame(stream),
        )
        .await
        .expect("no frame from the client within 10 s")
    }

    async fn read_client_frame(stream: &mut TcpStream) -> (u8, bool, Vec<u8>) {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.unwrap();
        let len = match head[1] & 0x7f {
            126 => u64::from(stream.read_u16().await.unwrap()),
            127 => stream.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let masked = head[1] & 0x80 != 0;
        let mut mask = [0u8; 4];
        if masked {
            stream.read_exact(&mut mask).await.unwrap();
        }
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (head[0] & 0x0f, masked, payload)
    }

    /// The next message, or a failed test after 10 s (a broken reader must not hang).
    async fn recv(ws: &mut Socket) -> Result<Incoming, WireError> {
        tokio::time::timeout(std::time::Duration::from_secs(10), ws.recv())
            .await
            .expect("no message within 10 s")
    }

    fn text(message: Incoming) -> String {
        match message {
            Incoming::Text(t) => t.parse().unwrap().1.0.to_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_sent_with_the_upgrade_arrive_whole_and_in_order() {
        let long = "x".repeat(300);
        let longer = "y".repeat(70_000);
        let mut then = frame(true, 1, b"first");
        then.extend(frame(false, 1, b"he"));
        then.extend(frame(true, 9, b"are you there"));
        then.extend(frame(false, 0, b"ll"));
        then.extend(frame(true, 0, b"o"));
        then.extend(frame(true, 2, &[0xff, 0x00]));
        then.extend(frame(true, 1, long.as_bytes()));
        then.extend(frame(true, 1, longer.as_bytes()));
        then.extend(frame(true, 10, b""));
        let (mut ws, mut server) = pair(then, 1 << 20).await;

        assert_eq!(text(recv(&mut ws).await.unwrap()), "first");
        // A control frame may come between the fragments of a message.
        let Incoming::Ping(payload) = recv(&mut ws).await.unwrap() else {
            panic!("expected the ping")
        };
        assert_eq!(&payload[..], b"are you there");
        ws.pong(payload).await.unwrap();
        assert_eq!(
            client_frame(&mut server).await,
            (10, true, b"are you there".to_vec())
        );
        assert_eq!(text(recv(&mut ws).await.unwrap()), "hello");
        assert!(matches!(recv(&mut ws).await.unwrap(), Incoming::Binary));
        assert_eq!(text(recv(&mut ws).await.unwrap()), long);
        assert_eq!(text(recv(&mut ws).await.unwrap()), longer);
        assert!(matches!(recv(&mut ws).await.unwrap(), Incoming::Pong));

        ws.send_text(r#"{"message":"ping"}"#).await.unwrap();
        let (opcode, masked, payload) = client_frame(&mut server).await;
        assert_eq!((opcode, masked), (1, true), "client frames are masked");
        assert_eq!(payload, br#"{"message":"ping"}"#);

        drop(server);
        assert!(matches!(recv(&mut ws).await, Err(WireError::Eof)));
    }

    #[tokio::test]
    async fn frames_that_came_in_one_read_share_its_count() {
        let (mut ws, mut server) = pair(Vec::new(), 1 << 20).await;
        let before = ws.reads();
        let two = [frame(true, 1, b"a"), frame(true, 1, b"b")].concat();
        server.write_all(&two).await.unwrap();
        assert_eq!(text(recv(&mut ws).await.unwrap()), "a");
        let first = ws.reads();
        assert_eq!(first, before + 1);
        assert_eq!(text(recv(&mut ws).await.unwrap()), "b");
        assert_eq!(ws.reads(), first, "the second frame came in the same read");
        server.write_all(&frame(true, 1, b"c")).await.unwrap();
        assert_eq!(text(recv(&mut ws).await.unwrap()), "c");
        assert_eq!(ws.reads(), first + 1);
    }

    #[tokio::test]
    async fn a_close_is_reported_with_its_code_and_answered_once() {
        let mut body = 4000u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"channel expired");
        let (mut ws, mut server) = pair(frame(true, 8, &body), 1 << 20).await;
        let Incoming::Close(code, reason) = recv(&mut ws).await.unwrap() else {
            panic!("expected the close")
        };
        assert_eq!((code, reason.as_str()), (4000, "channel expired"));
        ws.answer_close(code).await.unwrap();
        ws.answer_close(code).await.unwrap();
        let (opcode, masked, payload) = client_frame(&mut server).await;
        assert_eq!((opcode, masked), (8, true));
        assert_eq!(payload, 4000u16.to_be_bytes());
        // Only one close went out.
        drop(ws);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn holdline_closing_first_does_not_answer_the_servers_close() {
        let (mut ws, mut server) = pair(Vec::new(), 1 << 20).await;
        ws.close(CloseCode::Normal, "rollover").await.unwrap();
        let (opcode, _, payload) = client_frame(&mut server).await;
        assert_eq!(opcode, 8);
        assert_eq!(&payload[2..], b"rollover");
        server
            .write_all(&frame(true, 8, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        assert!(matches!(
            recv(&mut ws).await.unwrap(),
            Incoming::Close(1000, _)
        ));
        ws.answer_close(1000).await.unwrap();
        drop(ws);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "no second close: {rest:?}");
    }

    #[tokio::test]
    async fn what_a_server_must_not_send_ends_the_socket_with_a_reason() {
        // Over the limit: refused from the header alone, before the payload arrives.
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(10u64 << 20).to_be_bytes());
        let masked = vec![0x81, 0x81, 1, 2, 3, 4, b'a' ^ 1];
        type Expected = fn(&WireError) -> bool;
        let cases: Vec<(Vec<u8>, Expected)> = vec![
            (
                huge,
                |e| matches!(e, WireError::TooLong { size, max: 1000 } if *size == 10 << 20),
            ),
            (frame(true, 1, &[b'a'; 2000]), |e| {
                matches!(e, WireError::TooLong { size: 2000, .. })
            }),
            (
                [frame(false, 1, &[b'a'; 600]), frame(true, 0, &[b'a'; 600])].concat(),
                |e| matches!(e, WireError::TooLong { size: 1200, .. }),
            ),
            (masked, |e| matches!(e, WireError::Protocol(_))),
            (frame(true, 1, &[0xc3, 0x28]), |e| {
                matches!(e, WireError::Utf8)
            }),
            (
                [
                    frame(false, 1, b"{\"a\":\"\xc3"),
                    frame(true, 0, b"\xc3\"}"),
                ]
                .concat(),
                |e| matches!(e, WireError::Utf8),
            ),
            (frame(true, 8, &[0x03, 0xe8, 0xc3, 0x28]), |e| {
                matches!(e, WireError::Utf8)
            }),
            (frame(true, 0, b"orphan"), |e| {
                matches!(e, WireError::Protocol(_))
            }),
            (
                [frame(false, 1, b"a"), frame(true, 1, b"b")].concat(),
                |e| matches!(e, WireError::Protocol(_)),
            ),
            (frame(true, 3, b"?"), |e| {
                matches!(e, WireError::Protocol(_))
            }),
            (frame(false, 9, b"split ping"), |e| {
                matches!(e, WireError::Protocol(_))
            }),
            (frame(true, 8, &[3]), |e| {
                matches!(e, WireError::Protocol(_))
            }),
            (vec![0xc1, 0x01, b'a'], |e| {
                matches!(e, WireError::Protocol(_))
            }),
        ];
        for (i, (bytes, expected)) in cases.into_iter().enumerate() {
            let (mut ws, _server) = pair(bytes, 1000).await;
            let error = match recv(&mut ws).await {
                Err(e) => e,
                // A text message's UTF-8 is checked as it is parsed.
                Ok(Incoming::Text(text)) => match text.parse() {
                    Err(e) => e,
                    Ok((text, _)) => panic!("case {i}: expected an error, got {text:?}"),
                },
                Ok(m) => panic!("case {i}: expected an error, got {m:?}"),
            };
            assert!(expected(&error), "case {i}: {error}");
        }
    }
}
