//! Transport benchmark: one-sided latency and bandwidth between two nodes, each beside the
//! physical floor measured in the same run over a plain TCP socket between the same two
//! processes (request/response of the same size, and a plain stream).
//!
//! When the peer is reached through shared memory (`DSM_TRANSPORT=shm`, or `auto` on one host),
//! 8-byte and 4 KiB reads and the atomics are also timed beside the same accesses made directly
//! on a shared (`memfd`) mapping in this process, interleaved, in batches of 100 (one clock
//! read per operation would cost more than the operation); and atomics in round trips between
//! the two processes (the peer answers each), beside the same round trips made with CPU atomics
//! between this process and a forked child.
//!
//! Run: `dsmrun -n 2 target/release/transport_bench` (or `scripts/bench.sh`). `--quick` runs a
//! few iterations only, to check that the program works; `--medium` is sized for the emulated
//! soft-RoCE guest (`scripts/test-softroce.sh --bench` runs it over verbs beside perftest).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{commit, print_report, Better, Row, Stats};
use dsm_core::{collective, Node};
use transport::{
    AnyTransport, BackendKind, Completion, LocalSlice, Op, Rank, Region, RegionDesc, RemoteSlice,
    Tag, Transport,
};

const RPC: u64 = 1;
const STREAM_TO_CLIENT: u64 = 2;
const STREAM_FROM_CLIENT: u64 = 3;
const RPC_BUSY_POLL: u64 = 4;
const QUIT: u64 = 0;
const REGION: usize = 16 << 20;
const PORT_TAG: Tag = Tag(1);
/// Starts (a count of round trips, and the word's value before them) or stops (count 0)
/// the peer's echo of [`round_trips`].
const ECHO_TAG: Tag = Tag(2);
/// The word of the peer's region that the round trips move: its last cache line, which no
/// other row touches.
const ECHO_WORD: usize = REGION - 64;

struct Plan {
    lat_iters: usize,
    bw_bytes: usize,
    bw_repeats: usize,
}

/// The raw-socket server on rank 1: the simplest possible blocking request/response server.
fn serve_raw(listener: TcpListener) -> std::io::Result<()> {
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    let buf = vec![0x5au8; 4 << 20];
    let mut sink = vec![0u8; 4 << 20];
    loop {
        let mut h = [0u8; 24];
        s.read_exact(&mut h)?;
        let word = |i: usize| {
            u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().unwrap_or_default()) as usize
        };
        let (kind, arg, chunk) = (word(0) as u64, word(1), word(2).clamp(1, 4 << 20));
        match kind {
            RPC => s.write_all(&buf[..arg.min(buf.len())])?,
            RPC_BUSY_POLL => {
                // `chunk` requests of one byte each, read by spinning on a non-blocking socket.
                s.set_nonblocking(true)?;
                let mut token = [0u8; 1];
                for _ in 0..chunk {
                    spin_read(&mut s, &mut token)?;
                    spin_write(&mut s, &buf[..arg.min(buf.len())])?;
                }
                s.set_nonblocking(false)?;
            }
            STREAM_TO_CLIENT => {
                let mut left = arg;
                while left > 0 {
                    let n = left.min(chunk);
                    s.write_all(&buf[..n])?;
                    left -= n;
                }
            }
            STREAM_FROM_CLIENT => {
                let mut left = arg;
                while left > 0 {
                    let n = left.min(chunk);
                    s.read_exact(&mut sink[..n])?;
                    left -= n;
                }
                s.write_all(&[1])?;
            }
            _ => return Ok(()),
        }
    }
}

fn spin_read(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn spin_write(s: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match s.write(&buf[put..]) {
            Ok(n) => put += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Request/response on a raw socket with both ends spinning instead of sleeping.
fn raw_rpc_busy_poll(s: &mut TcpStream, len: usize, iters: usize) -> std::io::Result<Stats> {
    let mut buf = vec![0u8; len];
    let total = iters + iters / 10;
    s.write_all(&header(RPC_BUSY_POLL, len, total))?;
    s.set_nonblocking(true)?;
    let mut samples = Vec::with_capacity(iters);
    for i in 0..total {
        let t0 = Instant::now();
        spin_write(s, &[1])?;
        spin_read(s, &mut buf)?;
        if i >= iters / 10 {
            samples.push(t0.elapsed());
        }
    }
    s.set_nonblocking(false)?;
    Ok(Stats::of(&mut samples))
}

fn header(kind: u64, arg: usize, chunk: usize) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&(arg as u64).to_le_bytes());
    h[16..].copy_from_slice(&(chunk as u64).to_le_bytes());
    h
}

fn raw_rpc(s: &mut TcpStream, len: usize, iters: usize) -> std::io::Result<Stats> {
    let mut buf = vec![0u8; len];
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + iters / 10 {
        let t0 = Instant::now();
        s.write_all(&header(RPC, len, len))?;
        s.read_exact(&mut buf)?;
        if i >= iters / 10 {
            samples.push(t0.elapsed());
        }
    }
    Ok(Stats::of(&mut samples))
}

/// Bytes per second of a raw stream in `chunk`-sized writes, in the given direction.
fn raw_stream(
    s: &mut TcpStream,
    to_client: bool,
    chunk: usize,
    total: usize,
) -> std::io::Result<f64> {
    let mut buf = vec![0u8; chunk];
    let t0 = Instant::now();
    if to_client {
        s.write_all(&header(STREAM_TO_CLIENT, total, chunk))?;
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk);
            s.read_exact(&mut buf[..n])?;
            left -= n;
        }
    } else {
        s.write_all(&header(STREAM_FROM_CLIENT, total, chunk))?;
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk);
            s.write_all(&buf[..n])?;
            left -= n;
        }
        s.read_exact(&mut buf[..1])?;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

fn latency(
    iters: usize,
    mut op: impl FnMut() -> transport::Result<u64>,
) -> transport::Result<Stats> {
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + iters / 10 {
        let t0 = Instant::now();
        op()?;
        if i >= iters / 10 {
            samples.push(t0.elapsed());
        }
    }
    Ok(Stats::of(&mut samples))
}

/// Bytes per second of one-sided reads or writes of `size`, `window` in flight.
fn bandwidth<T: Transport>(
    t: &T,
    remote: &RegionDesc,
    local: &Arc<Region>,
    write: bool,
    size: usize,
    window: usize,
    total: usize,
) -> transport::Result<f64> {
    let ops = total / size;
    let slots = REGION / size;
    let mut inflight: std::collections::VecDeque<Completion> = std::collections::VecDeque::new();
    let t0 = Instant::now();
    for i in 0..ops {
        if inflight.len() >= window {
            if let Some(c) = inflight.pop_front() {
                c.wait()?;
            }
        }
        let off = (i % slots) * size;
        let r: RemoteSlice = remote.slice(off as u64, size)?;
        let l = LocalSlice::new(local, (i % window) * size, size)?;
        let op = if write {
            Op::Write {
                remote: r,
                local: l,
            }
        } else {
            Op::Read {
                remote: r,
                local: l,
            }
        };
        inflight.push_back(t.post(op)?);
    }
    for c in inflight {
        c.wait()?;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn client(
    node: &Node,
    remote: RegionDesc,
    raw: SocketAddr,
    plan: &Plan,
) -> Result<Vec<Row>, String> {
    let t = node.transport();
    let local = Region::allocate(REGION).map_err(|e| e.to_string())?;
    t.register(&local).map_err(|e| e.to_string())?;
    let mut s =
        TcpStream::connect(raw).map_err(|e| format!("connecting to the raw server: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    let tr = |e: transport::Error| e.to_string();
    let mut rows = Vec::new();
    let lat = |metric: &str, ours: Stats, floor: Stats, target: Option<f64>| Row {
        metric: metric.into(),
        value: us(ours.median),
        floor: us(floor.median),
        unit: "us",
        better: Better::Lower,
        target,
    };
    let n = plan.lat_iters;
    for len in [8usize, 4096] {
        let blocking = raw_rpc(&mut s, len, n).map_err(io)?;
        let polling = raw_rpc_busy_poll(&mut s, len, n).map_err(io)?;
        let floor = if polling.median < blocking.median {
            polling
        } else {
            blocking
        };
        rows.push(Row {
            metric: format!("raw rpc {len} B, blocking (info)"),
            value: us(blocking.median),
            floor: us(floor.median),
            unit: "us",
            better: Better::Lower,
            target: None,
        });
        rows.push(Row {
            metric: format!("raw rpc {len} B, busy-poll (info)"),
            value: us(polling.median),
            floor: us(floor.median),
            unit: "us",
            better: Better::Lower,
            target: None,
        });
        let src = remote.slice(0, len).map_err(tr)?;
        let dst = LocalSlice::new(&local, 0, len).map_err(tr)?;
        let read = latency(n, || t.read(src, dst.clone()).map(|()| 0)).map_err(tr)?;
        let write = latency(n, || t.write(src, dst.clone()).map(|()| 0)).map_err(tr)?;
        rows.push(lat(
            &format!("read {len} B latency (median)"),
            read,
            floor,
            Some(1.2),
        ));
        rows.push(lat(
            &format!("write {len} B latency (median)"),
            write,
            floor,
            Some(1.2),
        ));
        if len == 8 {
            let word = remote.word(0).map_err(tr)?;
            let fadd = latency(n, || t.fetch_add(word, 1)).map_err(tr)?;
            let cas = latency(n, || t.compare_swap(word, 0, 0)).map_err(tr)?;
            rows.push(lat("fetch_add latency (median)", fadd, floor, Some(1.2)));
            rows.push(lat("compare_swap latency (median)", cas, floor, Some(1.2)));
        }
    }
    for (size, window) in [(64usize << 10, 32usize), (1 << 20, 8)] {
        let total = plan.bw_bytes;
        // Best of several interleaved runs, for the floor and for us alike: a shared virtual
        // machine's bandwidth swings from one second to the next.
        let (mut floor_in, mut read, mut floor_out, mut write) = (0f64, 0f64, 0f64, 0f64);
        for _ in 0..plan.bw_repeats {
            floor_in = floor_in.max(raw_stream(&mut s, true, size, total).map_err(io)?);
            read = read.max(bandwidth(t, &remote, &local, false, size, window, total).map_err(tr)?);
            floor_out = floor_out.max(raw_stream(&mut s, false, size, total).map_err(io)?);
            write =
                write.max(bandwidth(t, &remote, &local, true, size, window, total).map_err(tr)?);
        }
        let kib = size / 1024;
        let bw = |metric: String, v: f64, f: f64| Row {
            metric,
            value: v / 1e9,
            floor: f / 1e9,
            unit: "GB/s",
            better: Better::Higher,
            target: Some(0.8),
        };
        rows.push(bw(
            format!("read bandwidth {kib} KiB x{window}"),
            read,
            floor_in,
        ));
        rows.push(bw(
            format!("write bandwidth {kib} KiB x{window}"),
            write,
            floor_out,
        ));
    }
    s.write_all(&header(QUIT, 0, 0)).map_err(io)?;
    if t.backend_of(Rank(1)) == BackendKind::Shm {
        rows.extend(shm_rows(t, &remote, &local, plan).map_err(tr)?);
        let trips = round_trips(t, &remote, &local, plan);
        // The peer stops echoing whatever happened here.
        t.send(Rank(1), ECHO_TAG, &[0u8; 16]).map_err(tr)?;
        rows.extend(trips?);
    }
    Ok(rows)
}

/// Rows in ns of medians against their floors' (target 3x), one per name.
fn ns_rows(names: &[&str], ours: &mut [Vec<Duration>], floor: &mut [Vec<Duration>]) -> Vec<Row> {
    names
        .iter()
        .zip(ours.iter_mut().zip(floor.iter_mut()))
        .map(|(name, (o, f))| Row {
            metric: (*name).into(),
            value: Stats::of(o).median.as_secs_f64() * 1e9,
            floor: Stats::of(f).median.as_secs_f64() * 1e9,
            unit: "ns",
            better: Better::Lower,
            target: Some(3.0),
        })
        .collect()
}

/// Operations per timed batch of [`shm_rows`].
const BATCH: u32 = 100;

/// The time of one call of `f`, from a batch of [`BATCH`].
fn per_op(mut f: impl FnMut() -> transport::Result<()>) -> transport::Result<Duration> {
    let t0 = Instant::now();
    for _ in 0..BATCH {
        f()?;
    }
    Ok(t0.elapsed() / BATCH)
}

/// Shared-memory transport operations beside the same accesses made directly on a shared
/// mapping (a `memfd` region of this process): copies out of it with `Region::read_at` and CPU
/// atomics on one of its words. Interleaved batches; medians.
fn shm_rows<T: Transport>(
    t: &T,
    remote: &RegionDesc,
    local: &Arc<Region>,
    plan: &Plan,
) -> transport::Result<Vec<Row>> {
    use std::hint::black_box;
    let reps = (plan.lat_iters / 10).max(5);
    let names = [
        "shm read 8 B vs memcpy (per op, median)",
        "shm read 4 KiB vs memcpy (per op, median)",
        "shm fetch_add vs CPU atomic (per op, median)",
        "shm compare_swap vs CPU atomic (per op, median)",
    ];
    let mut ours: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut floor: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut buf = vec![0u8; 4096];
    let word = local.atomic_u64(REGION / 2)?;
    let rword = remote.word(8)?;
    for _ in 0..reps {
        for (i, len) in [(0usize, 8usize), (1, 4096)] {
            let (src, dst) = (remote.slice(64, len)?, LocalSlice::new(local, 0, len)?);
            floor[i].push(per_op(|| {
                local.read_at(REGION / 2 + 64, black_box(&mut buf[..len]))
            })?);
            ours[i].push(per_op(|| t.read(src, dst.clone()))?);
        }
        floor[2].push(per_op(|| {
            black_box(word.fetch_add(1, Ordering::SeqCst));
            Ok(())
        })?);
        ours[2].push(per_op(|| t.fetch_add(rword, 1).map(drop))?);
        floor[3].push(per_op(|| {
            let _ = black_box(word.compare_exchange(0, 0, Ordering::SeqCst, Ordering::SeqCst));
            Ok(())
        })?);
        ours[3].push(per_op(|| t.compare_swap(rword, 0, 0).map(drop))?);
    }
    Ok(ns_rows(&names, &mut ours, &mut floor))
}

fn run(node: &Node, plan: &Plan) -> Result<(), String> {
    let t = node.transport();
    if node.nodes() != 2 {
        return Err(format!(
            "run with exactly 2 nodes (dsmrun -n 2), not {}",
            node.nodes()
        ));
    }
    let tr = |e: transport::Error| e.to_string();
    let home = Region::allocate(REGION).map_err(|e| e.to_string())?;
    let desc = t.register(&home).map_err(tr)?;
    let descs = collective::all_gather(t, &desc.to_bytes(), None).map_err(|e| e.to_string())?;
    if node.rank() == Rank(1) {
        let listener =
            TcpListener::bind(SocketAddr::new(node.config().bind, 0)).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        t.send(Rank(0), PORT_TAG, addr.to_string().as_bytes())
            .map_err(tr)?;
        serve_raw(listener).map_err(|e| format!("raw server: {e}"))?;
        if t.backend_of(Rank(0)) == BackendKind::Shm {
            echo(t, &home).map_err(tr)?;
        }
    } else {
        let remote = RegionDesc::from_bytes(&descs[1]).map_err(tr)?;
        let addr = t
            .recv(Some(Rank(1)), Some(PORT_TAG), Some(Duration::from_secs(30)))
            .map_err(tr)?;
        let raw: SocketAddr = String::from_utf8_lossy(&addr.data)
            .parse()
            .map_err(|_| "bad raw address".to_string())?;
        let rows = client(node, remote, raw, plan)?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let context = [
            ("benchmark", "transport".to_string()),
            ("transport", t.capabilities().backend.to_string()),
            ("device", device(t)),
            ("nodes", node.nodes().to_string()),
            ("page_size", page.to_string()),
            ("commit", commit()),
            ("spin_us", node.config().spin.as_micros().to_string()),
            (
                "cpus",
                std::thread::available_parallelism()
                    .map_or(0, |n| n.get())
                    .to_string(),
            ),
        ];
        print_report(&context, &rows);
    }
    node.barrier().map_err(|e| e.to_string())
}

/// The device line of the report: the RDMA device, port and GID, or the TCP address.
fn device(t: &AnyTransport) -> String {
    match t {
        AnyTransport::Verbs(v) => format!("RDMA {}", v.device()),
        AnyTransport::Shm(_) => "shared memory".to_string(),
        AnyTransport::Mixed(m) => format!(
            "{} to the peer (shm on this host, tcp to others)",
            m.backend_of(Rank(1))
        ),
        _ => "TCP on loopback".to_string(),
    }
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let quick = std::env::args().any(|a| a == "--quick");
    // --medium: enough iterations for medians under emulation (the soft-RoCE guest).
    let medium = std::env::args().any(|a| a == "--medium");
    let plan = if quick {
        Plan {
            lat_iters: 50,
            bw_bytes: 4 << 20,
            bw_repeats: 1,
        }
    } else if medium {
        Plan {
            lat_iters: 500,
            bw_bytes: 16 << 20,
            bw_repeats: 1,
        }
    } else {
        Plan {
            lat_iters: 5000,
            bw_bytes: 256 << 20,
            bw_repeats: 3,
        }
    };
    let node = match Node::init() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("transport_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = run(&node, &plan);
    let f = node.finalize().map_err(|e| e.to_string());
    match r.and(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transport_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Round trips per timed batch of [`round_trips`].
const TRIPS: u64 = 2000;

/// Waits until `word` holds `want`, spinning (`load` reads it); gives up after 10 s.
fn await_value(mut load: impl FnMut() -> transport::Result<u64>, want: u64) -> Result<(), String> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if load().map_err(|e| e.to_string())? == want {
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) && start.elapsed() > Duration::from_secs(10) {
            return Err(format!("the word never reached {want}"));
        }
        std::hint::spin_loop();
    }
}

/// The peer's side of [`round_trips`] (rank 1): for each start message, `count` times, waits
/// until its word is odd and makes it even again (a CPU atomic on its own memory); a count of 0
/// stops.
fn echo<T: Transport>(t: &T, home: &Region) -> transport::Result<()> {
    let word = home.atomic_u64(ECHO_WORD)?;
    loop {
        let m = t.recv(Some(Rank(0)), Some(ECHO_TAG), None)?;
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(m.data.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(b)
        };
        let (count, base) = (field(0), field(1));
        if count == 0 {
            return Ok(());
        }
        for i in 0..count {
            await_value(|| Ok(word.load(Ordering::Acquire)), base + 2 * i + 1)
                .map_err(transport::Error::Timeout)?;
            word.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Round trips between two processes through shared memory: this rank makes a word odd (a
/// fetch-and-add, or a compare-and-swap), the other process sees it and makes it even, this
/// rank sees that. Through the transport (the word in the peer's region; this rank reads it
/// with 8-byte transport reads) beside the same round trips made with CPU atomics and loads
/// on a shared mapping between this process and a child forked for each batch: the cost of an
/// operation where another process uses the memory too, which is what remote atomics are for.
fn round_trips<T: Transport>(
    t: &T,
    remote: &RegionDesc,
    local: &Arc<Region>,
    plan: &Plan,
) -> Result<Vec<Row>, String> {
    let tr = |e: transport::Error| e.to_string();
    let rword = remote.word(ECHO_WORD as u64).map_err(tr)?;
    let (src, dst) = (
        remote.slice(ECHO_WORD as u64, 8).map_err(tr)?,
        LocalSlice::new(local, 0, 8).map_err(tr)?,
    );
    let seen = local.atomic_u64(0).map_err(tr)?;
    let read = || -> transport::Result<u64> {
        t.read(src, dst.clone())?;
        Ok(seen.load(Ordering::Acquire))
    };
    let shared = Region::allocate(4096).map_err(tr)?;
    let word = shared.atomic_u64(0).map_err(tr)?;
    let ready = shared.atomic_u64(64).map_err(tr)?;
    let reps = (plan.lat_iters / 50).max(3);
    let names = [
        "shm fetch_add round trip vs CPU atomic round trip (2 processes, median)",
        "shm compare_swap round trip vs CPU atomic round trip (2 processes, median)",
    ];
    let mut ours: Vec<Vec<Duration>> = vec![Vec::new(); 2];
    let mut floor: Vec<Vec<Duration>> = vec![Vec::new(); 2];
    let mut base = read().map_err(tr)?;
    for _ in 0..reps {
        for (k, cas) in [(0, false), (1, true)] {
            floor[k].push(forked_round_trips(word, ready, cas)? / TRIPS as u32);
            let mut start = [0u8; 16];
            start[..8].copy_from_slice(&TRIPS.to_le_bytes());
            start[8..].copy_from_slice(&base.to_le_bytes());
            t.send(Rank(1), ECHO_TAG, &start).map_err(tr)?;
            let t0 = Instant::now();
            for i in 0..TRIPS {
                let v = base + 2 * i;
                if cas {
                    t.compare_swap(rword, v, v + 1).map_err(tr)?;
                } else {
                    t.fetch_add(rword, 1).map_err(tr)?;
                }
                await_value(read, v + 2)?;
            }
            ours[k].push(t0.elapsed() / TRIPS as u32);
            base += 2 * TRIPS;
        }
    }
    Ok(ns_rows(&names, &mut ours, &mut floor))
}

/// [`TRIPS`] round trips on `word` (of a shared mapping) with a child process: the floor of
/// [`round_trips`]. Returns the time of all of them, from when the child runs (it says so in
/// `ready`).
fn forked_round_trips(word: &AtomicU64, ready: &AtomicU64, cas: bool) -> Result<Duration, String> {
    word.store(0, Ordering::SeqCst);
    ready.store(0, Ordering::SeqCst);
    // SAFETY: the child runs only atomics on a `MAP_SHARED` mapping it inherited, spin hints,
    // reads of the clock (`clock_gettime`, async-signal-safe) and `_exit`: nothing that could
    // need a lock or allocator state another thread of the parent held at the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        ready.store(1, Ordering::Release);
        let ok = (0..TRIPS).all(|i| {
            let waited = await_value(|| Ok(word.load(Ordering::Acquire)), 2 * i + 1).is_ok();
            word.fetch_add(1, Ordering::AcqRel);
            waited
        });
        // SAFETY: ends the child at once, running nothing of the parent's (no destructors,
        // no atexit handlers, no flushing of buffers the parent owns).
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let started = await_value(|| Ok(ready.load(Ordering::Acquire)), 1);
    let t0 = Instant::now();
    let trips = started.and_then(|()| {
        (0..TRIPS).try_for_each(|i| {
            if cas {
                let _ =
                    word.compare_exchange(2 * i, 2 * i + 1, Ordering::AcqRel, Ordering::Acquire);
            } else {
                word.fetch_add(1, Ordering::AcqRel);
            }
            await_value(|| Ok(word.load(Ordering::Acquire)), 2 * i + 2)
        })
    });
    let took = t0.elapsed();
    let mut status = 0;
    // SAFETY: waits for the child forked above, writing its status into a local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    trips?;
    if status != 0 {
        return Err("the forked echo failed".into());
    }
    Ok(took)
}
