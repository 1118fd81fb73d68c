//! A UDP socket for quinn that sends and receives through an emulated [`Link`]: every datagram
//! waits in the link's queues (rate, delay), may be lost or dropped at a full queue, and an
//! unreachable viewer hears only from addresses it sent to. QUIC's own congestion control and loss
//! recovery then react to it as they would on a real path.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::link::{Fate, Link};

/// Datagrams delivered and not yet read by quinn; more are dropped (a receive buffer).
const RECEIVE_QUEUE: usize = 8192;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 65_535;

type Datagram = (SocketAddr, Vec<u8>);

/// See the module docs.
pub struct ShapedUdpSocket {
    local: SocketAddr,
    link: Arc<Link>,
    outgoing: mpsc::UnboundedSender<(Instant, SocketAddr, Vec<u8>)>,
    incoming: Mutex<mpsc::Receiver<Datagram>>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for ShapedUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShapedUdpSocket")
            .field("local", &self.local)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl ShapedUdpSocket {
    /// Wraps a bound socket; must be called within a Tokio runtime (it spawns the link's pumps).
    pub fn new(socket: std::net::UdpSocket, link: Arc<Link>) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let local = socket.local_addr()?;
        // Out: each datagram leaves the uplink at its time (the times only grow: one FIFO lane).
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<(Instant, SocketAddr, Vec<u8>)>();
        let sender = {
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                while let Some((at, to, bytes)) = to_send.recv().await {
                    tokio::time::sleep_until(at.into()).await;
                    // A send error is a lost datagram: QUIC recovers.
                    let _ = socket.send_to(&bytes, to).await;
                }
            })
        };
        // In: read as fast as the kernel delivers, queue in the downlink, hand over on time.
        let (arrived, mut delayed) = mpsc::unbounded_channel::<(Instant, Datagram)>();
        let reader = {
            let socket = Arc::clone(&socket);
            let link = Arc::clone(&link);
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let (n, from) = match socket.recv_from(&mut buf).await {
                        Ok(r) => r,
                        // ICMP errors and the like: keep reading.
                        Err(_) => continue,
                    };
                    if let Fate::Deliver(at) = link.receive_datagram(Instant::now(), from, n) {
                        if arrived.send((at, (from, buf[..n].to_vec()))).is_err() {
                            return;
                        }
                    }
                }
            })
        };
        let (ready, incoming) = mpsc::channel(RECEIVE_QUEUE);
        let releaser = tokio::spawn(async move {
            while let Some((at, datagram)) = delayed.recv().await {
                tokio::time::sleep_until(at.into()).await;
                match ready.try_send(datagram) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(Self {
            local,
            link,
            outgoing,
            incoming: Mutex::new(incoming),
            tasks: vec![sender, reader, releaser],
        })
    }
}

impl Drop for ShapedUdpSocket {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The queue always takes a datagram (or drops it, as a full router would): always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for ShapedUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let now = Instant::now();
        let bytes = transmit.contents;
        if let Fate::Deliver(at) = self
            .link
            .send_datagram(now, transmit.destination, bytes.len())
        {
            self.outgoing
                .send((at, transmit.destination, bytes.to_vec()))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "link closed"))?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut incoming = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        match incoming.poll_recv(cx) {
            Poll::Ready(Some((from, bytes))) => {
                let len = bytes.len().min(buf.len());
                buf[..len].copy_from_slice(&bytes[..len]);
                *slot = RecvMeta {
                    addr: from,
                    len,
                    stride: len,
                    ..RecvMeta::default()
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "link closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
