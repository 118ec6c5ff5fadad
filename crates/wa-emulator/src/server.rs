//! One task per client connection: WebSocket, Noise handshake, then encrypted binary nodes
//! in both directions. Protocol decisions are the emulator's ([`crate::Shared`]); this file
//! only moves bytes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_websockets::{Message, ServerBuilder};
use whatsapp_rust::wacore::framing::{FrameDecoder, encode_frame};
use whatsapp_rust::wacore_binary::marshal::{marshal, unmarshal_ref};
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::wacore_binary::Node;

use crate::noise::{Established, Responder, Step, strip_preamble};
use crate::Shared;

/// A client that connects and says nothing is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the emulator asks a connection task to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    Node(Node),
    /// Send this node (usually a `<stream:error>` or `<failure>`), then close the WebSocket.
    CloseWith(Node),
    /// Drop the connection without a word, as a network failure would.
    Drop,
}

pub(crate) type ConnTx = mpsc::UnboundedSender<Outbound>;

pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    if let Err(e) = serve_inner(&shared, stream).await {
        tracing::debug!(?peer, "connection ended: {e:#}");
    }
}

async fn serve_inner(shared: &Arc<Shared>, stream: TcpStream) -> anyhow::Result<()> {
    let (_request, ws) = ServerBuilder::new().accept(stream).await.context("WebSocket upgrade")?;
    let (mut sink, mut source) = ws.split();
    let mut decoder = FrameDecoder::new();

    let established = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut responder = Some(Responder::new(&shared.identity));
        let mut first = true;
        loop {
            let message = match source.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading the handshake")),
                None => bail!("client left during the handshake"),
            };
            if !message.is_binary() {
                continue;
            }
            let data = message.as_payload();
            if first {
                decoder.feed(strip_preamble(data)?);
                first = false;
            } else {
                decoder.feed(data);
            }
            while let Some(frame) = decoder.decode_frame() {
                let step = responder.take().context("handshake already finished")?.feed(&frame)?;
                match step {
                    Step::Reply(reply, next) => {
                        sink.send(Message::binary(encode_frame(&reply, None)?)).await?;
                        responder = Some(next);
                    }
                    Step::ReplyAndDone(reply, established) => {
                        sink.send(Message::binary(encode_frame(&reply, None)?)).await?;
                        return Ok::<Box<Established>, anyhow::Error>(established);
                    }
                    Step::Done(established) => return Ok(established),
                }
            }
        }
    })
    .await
    .context("handshake timed out")??;

    let Established { mut transport, client_static, payload, pattern } = *established;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = shared.on_established(tx, &payload, client_static, pattern);
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                incoming = source.next() => {
                    let message = match incoming {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Ok(()),
                    };
                    if message.is_close() {
                        return Ok(());
                    }
                    if !message.is_binary() {
                        continue;
                    }
                    decoder.feed(message.as_payload());
                    while let Some(frame) = decoder.decode_frame() {
                        let plain = transport.decrypt(&frame).context("decrypting a frame")?;
                        let data = unpack(&plain).context("unpacking a frame")?;
                        let node = unmarshal_ref(&data).context("decoding a node")?.to_owned();
                        shared.on_node(conn, node);
                    }
                }
                outbound = rx.recv() => match outbound {
                    Some(Outbound::Node(node)) => {
                        let frame = encode_frame(&transport.encrypt(&marshal(&node)?)?, None)?;
                        sink.send(Message::binary(frame)).await?;
                    }
                    Some(Outbound::CloseWith(node)) => {
                        let frame = encode_frame(&transport.encrypt(&marshal(&node)?)?, None)?;
                        sink.send(Message::binary(frame)).await?;
                        let _ = sink.close().await;
                        return Ok(());
                    }
                    Some(Outbound::Drop) | None => return Ok(()),
                },
            }
        }
    }
    .await;
    shared.on_closed(conn);
    result
}
