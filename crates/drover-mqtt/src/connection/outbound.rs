//! The session's messages onto the write buffer (in-flight window and redelivery live in the
//! session), and writing the buffer to the socket.

use std::io;

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Conn, State};
use crate::policy::Policy;
use crate::session::{Outgoing, Sink};
use crate::wire::Codec;

impl<P: Policy> Conn<'_, P> {
    /// Moves what the session has for the client onto the write buffer, up to its high-water
    /// mark, when there may be something.
    pub(super) fn pump(&self, st: &mut State<'_>, wbuf: &mut BytesMut) {
        let high_water = st.cfg.write_buffer_high_water;
        if st.pump_needed && wbuf.len() < high_water {
            st.pump_needed = false;
            let mut sink = WireSink {
                codec: &mut st.codec,
                buf: wbuf,
                high_water,
                max_size: self.client_max_packet,
                peer: st.peer,
                client_id: &st.client_id,
            };
            self.session.pump(self.generation, &mut sink);
            st.pump_stalled = wbuf.len() >= high_water;
        }
    }
}

/// Puts the session's messages on the wire.
struct WireSink<'a> {
    codec: &'a mut Codec,
    buf: &'a mut BytesMut,
    high_water: usize,
    max_size: usize,
    peer: std::net::SocketAddr,
    client_id: &'a ByteString,
}

impl Sink for WireSink<'_> {
    fn has_room(&self) -> bool {
        self.buf.len() < self.high_water
    }

    fn emit(&mut self, out: Outgoing<'_>) -> bool {
        let topic = match &out {
            Outgoing::Qos0(m, _) => m.topic.clone(),
            Outgoing::Qos1 { msg, .. } => msg.topic.clone(),
        };
        let ok = self.codec.encode_publish(out, self.max_size, self.buf);
        if !ok {
            tracing::warn!(
                peer = %self.peer, client_id = %self.client_id, %topic,
                "outbound message exceeds the client's maximum packet size of {} bytes; dropped", self.max_size
            );
        }
        ok
    }
}

/// Writes some of `wbuf`, then flushes once it is empty.
pub(super) async fn write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &mut BytesMut,
    needs_flush: &mut bool,
) -> io::Result<()> {
    if !wbuf.is_empty() {
        let n = wr.write_buf(wbuf).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *needs_flush = true;
    }
    if wbuf.is_empty() && *needs_flush {
        wr.flush().await?;
        *needs_flush = false;
    }
    Ok(())
}
