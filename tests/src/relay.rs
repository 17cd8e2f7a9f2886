//! A seeded userspace UDP relay that stands between two QUIC endpoints and misbehaves like a
//! village link: loss, delay with jitter, reordering, duplication, a bandwidth limit, and
//! blackouts switched on and off by the test. `tc netem` does not exist on the machines this
//! runs on, so this is how the project's tests and benchmarks shape a link.
//!
//! Clients send to [`Relay::addr`]; each client address gets its own upstream socket towards
//! the target, so the target sees one peer per client. Bytes are counted as they arrive at
//! the relay, in both directions, before any loss: what the endpoints put on the wire.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How the link misbehaves. Probabilities are per datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub loss: f64,
    pub duplicate: f64,
    /// A reordered datagram is held back by an extra `delay + jitter`.
    pub reorder: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter`.
    pub jitter: Duration,
    /// Bits per second in each direction; `None` for no limit.
    pub rate_bps: Option<u64>,
}

impl Shape {
    /// A clean link: forwards everything at once.
    pub const CLEAN: Shape = Shape {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        rate_bps: None,
    };

    /// A poor rural link: a few percent loss, duplication and reordering, 20-60 ms one way.
    pub fn lossy() -> Shape {
        Shape {
            loss: 0.03,
            duplicate: 0.02,
            reorder: 0.05,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(40),
            rate_bps: None,
        }
    }

    /// BENCHMARKS.md's EDGE link: 240 kbit/s, 840 ms round trip, 1% loss.
    pub fn edge() -> Shape {
        Shape {
            loss: 0.01,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::from_millis(420),
            jitter: Duration::ZERO,
            rate_bps: Some(240_000),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    blackout: AtomicBool,
    stop: AtomicBool,
    /// Client → target.
    bytes_up: AtomicU64,
    /// Target → client.
    bytes_down: AtomicU64,
    datagrams: AtomicU64,
    dropped: AtomicU64,
}

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What crossed the relay so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub datagrams: u64,
    pub dropped: u64,
}

impl Traffic {
    pub fn bytes(&self) -> u64 {
        self.bytes_up + self.bytes_down
    }
}

impl Relay {
    /// Starts a relay on a free loopback port forwarding to `target`, with its own thread
    /// and runtime (so blocking tests can use it). `seed` fixes every random decision.
    pub fn start(target: SocketAddr, shape: Shape, seed: u64) -> Result<Relay> {
        let front = bind(([127, 0, 0, 1], 0).into()).context("binding the relay")?;
        Self::start_on(front, target, shape, seed)
    }

    /// Like [`Relay::start`] on a given address (to stand where a node expects its peer).
    pub fn start_at(
        listen: SocketAddr,
        target: SocketAddr,
        shape: Shape,
        seed: u64,
    ) -> Result<Relay> {
        let front = bind(listen).with_context(|| format!("binding {listen}"))?;
        Self::start_on(front, target, shape, seed)
    }

    fn start_on(front: StdUdpSocket, target: SocketAddr, shape: Shape, seed: u64) -> Result<Relay> {
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{addr}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("relay {addr}: no runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    if let Err(e) = run(front, target, shape, seed, c).await {
                        eprintln!("relay {addr}: {e:#}");
                    }
                });
            })?;
        Ok(Relay {
            addr,
            counters,
            thread: Some(thread),
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every datagram both ways while on.
    pub fn set_blackout(&self, on: bool) {
        self.counters.blackout.store(on, Ordering::SeqCst);
    }

    pub fn traffic(&self) -> Traffic {
        let c = &self.counters;
        Traffic {
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
            datagrams: c.datagrams.load(Ordering::SeqCst),
            dropped: c.dropped.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One direction's shaping state: its random stream and when its "wire" is next free.
struct Lane {
    rng: StdRng,
    next_free: Instant,
}

impl Lane {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            next_free: Instant::now(),
        }
    }

    /// The send times of one datagram of `len` bytes (empty when it is lost).
    fn schedule(&mut self, shape: &Shape, len: usize, blackout: bool) -> Vec<Instant> {
        // Draw every number for every datagram, so one decision never shifts the others.
        let lost = self.rng.random::<f64>() < shape.loss;
        let dup = self.rng.random::<f64>() < shape.duplicate;
        let reorder = self.rng.random::<f64>() < shape.reorder;
        let jitter_frac: f64 = self.rng.random();
        if lost || blackout {
            return Vec::new();
        }
        let now = Instant::now();
        let mut depart = now;
        if let Some(rate) = shape.rate_bps.filter(|r| *r > 0) {
            let wire = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            depart = self.next_free.max(now) + wire;
            self.next_free = depart;
        }
        let mut at = depart + shape.delay + shape.jitter.mul_f64(jitter_frac);
        if reorder {
            at += shape.delay + shape.jitter + Duration::from_millis(5);
        }
        if dup {
            vec![at, at + Duration::from_millis(1)]
        } else {
            vec![at]
        }
    }
}

/// Socket buffers as large as the nodes' own (`sync_engine`): with the kernel's default
/// (~208 KiB) a relay thread that waited for a core overflowed during a 10,000-case catch-up
/// on loopback (`/proc/net/snmp` `RcvbufErrors`), and every drop cost a retransmission the
/// shape did not ask for.
const BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket bound to `addr` with large buffers; a kernel that refuses the size keeps its
/// default.
fn bind(addr: SocketAddr) -> std::io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn run(
    front: StdUdpSocket,
    target: SocketAddr,
    shape: Shape,
    seed: u64,
    counters: Arc<Counters>,
) -> Result<()> {
    let front = Arc::new(UdpSocket::from_std(front)?);
    let up = Arc::new(Mutex::new(Lane::new(seed)));
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut client_seq = 0u64;
    loop {
        if counters.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (n, from) = match tokio::time::timeout(
            Duration::from_millis(50),
            front.recv_from(&mut buf),
        )
        .await
        {
            Ok(Ok(x)) => x,
            // A previous datagram to a closed port reports back as an error: go on.
            Ok(Err(_)) => continue,
            Err(_) => continue,
        };
        let back = match backs.get(&from) {
            Some(b) => b.clone(),
            None => {
                let b = bind(([127, 0, 0, 1], 0).into())?;
                b.set_nonblocking(true)?;
                let b = Arc::new(UdpSocket::from_std(b)?);
                b.connect(target).await?;
                client_seq += 1;
                tokio::spawn(downstream(
                    b.clone(),
                    front.clone(),
                    from,
                    shape,
                    seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(client_seq)),
                    counters.clone(),
                ));
                backs.insert(from, b.clone());
                b
            }
        };
        counters.bytes_up.fetch_add(n as u64, Ordering::SeqCst);
        forward(&up, &shape, &counters, buf[..n].to_vec(), move |d| {
            let back = back.clone();
            async move {
                let _ = back.send(&d).await;
            }
        })
        .await;
    }
}

async fn downstream(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shape: Shape,
    seed: u64,
    counters: Arc<Counters>,
) {
    let lane = Arc::new(Mutex::new(Lane::new(seed)));
    let mut buf = vec![0u8; 65_536];
    loop {
        if counters.stop.load(Ordering::SeqCst) {
            return;
        }
        let n = match tokio::time::timeout(Duration::from_millis(50), back.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => continue,
        };
        counters.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
        let front = front.clone();
        forward(&lane, &shape, &counters, buf[..n].to_vec(), move |d| {
            let front = front.clone();
            async move {
                let _ = front.send_to(&d, client).await;
            }
        })
        .await;
    }
}

/// Sends one datagram at the times its lane schedules (none when lost or blacked out).
async fn forward<F, Fut>(
    lane: &Mutex<Lane>,
    shape: &Shape,
    counters: &Counters,
    datagram: Vec<u8>,
    send: F,
) where
    F: Fn(Arc<Vec<u8>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    counters.datagrams.fetch_add(1, Ordering::SeqCst);
    let blackout = counters.blackout.load(Ordering::SeqCst);
    let times = lane.lock().await.schedule(shape, datagram.len(), blackout);
    if times.is_empty() {
        counters.dropped.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let datagram = Arc::new(datagram);
    let now = Instant::now();
    for at in times {
        let d = datagram.clone();
        if at <= now {
            send(d).await;
        } else {
            let fut = send(d);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                fut.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the relay: what goes through comes back, counted both ways.
    fn echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let sock = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let addr = sock.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        (addr, t)
    }

    fn client() -> StdUdpSocket {
        let c = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c
    }

    #[test]
    fn a_clean_relay_forwards_and_counts_both_ways() {
        let (target, _t) = echo();
        let relay = Relay::start(target, Shape::CLEAN, 1).unwrap();
        let c = client();
        for i in 0..20u8 {
            c.send_to(&[i; 100], relay.addr()).unwrap();
            let mut buf = [0u8; 200];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 100]);
        }
        let t = relay.traffic();
        assert_eq!((t.bytes_up, t.bytes_down), (2000, 2000));
        assert_eq!(t.dropped, 0);
    }

    #[test]
    fn a_blackout_drops_everything_until_it_ends() {
        let (target, _t) = echo();
        let relay = Relay::start(target, Shape::CLEAN, 2).unwrap();
        let c = client();
        relay.set_blackout(true);
        c.send_to(b"lost", relay.addr()).unwrap();
        let mut buf = [0u8; 64];
        assert!(c.recv(&mut buf).is_err(), "nothing crosses a blackout");
        relay.set_blackout(false);
        c.send_to(b"back", relay.addr()).unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
        assert!(relay.traffic().dropped >= 1);
    }

    #[test]
    fn loss_follows_the_seed() {
        let shape = Shape {
            loss: 0.3,
            ..Shape::CLEAN
        };
        let decisions = |seed| {
            let mut lane = Lane::new(seed);
            (0..200)
                .map(|_| lane.schedule(&shape, 100, false).is_empty())
                .collect::<Vec<_>>()
        };
        assert_eq!(decisions(7), decisions(7));
        assert_ne!(decisions(7), decisions(8));
        let lost = decisions(7).iter().filter(|l| **l).count();
        assert!((30..90).contains(&lost), "{lost} of 200 lost at 30%");
    }

    #[test]
    fn a_rate_limit_spaces_datagrams_out() {
        let shape = Shape {
            rate_bps: Some(80_000),
            ..Shape::CLEAN
        };
        let mut lane = Lane::new(3);
        let first = lane.schedule(&shape, 1000, false)[0];
        let tenth = (0..9)
            .map(|_| lane.schedule(&shape, 1000, false)[0])
            .last()
            .unwrap();
        // 1000 bytes at 80 kbit/s take 100 ms on the wire.
        let gap = tenth - first;
        assert!(gap >= Duration::from_millis(890), "{gap:?}");
    }
}
