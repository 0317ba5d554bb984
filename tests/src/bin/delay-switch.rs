//! A learning Ethernet switch in user space that holds every frame for a fixed delay before
//! forwarding it: added latency for `scripts/netns-test.sh` on kernels without `tc netem`.
//!
//! `delay-switch DELAY_US TAP...` creates one TAP interface per name (in the current network
//! namespace; the script then moves each into a node's namespace), prints `ready` on stdout, and
//! forwards frames between them until it is killed: a frame that enters on one port leaves on
//! the port its destination address was last seen on (every other port for broadcast,
//! multicast and unknown destinations), `DELAY_US` microseconds after it arrived, in arrival
//! order. A frame that a full port cannot take is dropped, as a switch does. Its own cost (a
//! `read` and a `write` per frame, plus the wake-up) is part of what it adds: run it with 0 to
//! measure that.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (40 bytes in all).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() > 15 {
        return Err(std::io::Error::other(format!(
            "bad interface name {name:?}"
        )));
    }
    // SAFETY: a NUL-terminated path literal; open has no other preconditions.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its layout and size and
    // lives across the call.
    if unsafe { libc::ioctl(owned.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

struct Pending {
    due: Instant,
    from: usize,
    frame: Vec<u8>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(delay), true) = (
        args.first().and_then(|d| d.parse::<u64>().ok()),
        args.len() >= 3,
    ) else {
        eprintln!("usage: delay-switch DELAY_US TAP TAP [TAP...]");
        return ExitCode::from(2);
    };
    let delay = Duration::from_micros(delay);
    let mut taps = Vec::new();
    for name in &args[1..] {
        match open_tap(name) {
            Ok(fd) => taps.push(fd),
            Err(e) => {
                eprintln!("delay-switch: cannot create TAP {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut fds: Vec<libc::pollfd> = taps
        .iter()
        .map(|t| libc::pollfd {
            fd: t.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut where_is: HashMap<[u8; 6], usize> = HashMap::new();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // Sleep until a frame arrives or the oldest held frame is due (ppoll: the timeout has
        // nanosecond grain, where poll's has milliseconds).
        let timeout = queue.front().map(|p| {
            let left = p.due.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let ts = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures; `ts` is null or
        // points to a timespec that lives across the call; no signal mask is passed.
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                eprintln!("delay-switch: ppoll: {e}");
                return ExitCode::FAILURE;
            }
        }
        let now = Instant::now();
        for (port, p) in fds.iter().enumerate() {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                // SAFETY: `buf` is writable for its whole length.
                let r = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    break;
                }
                let frame = buf[..r as usize].to_vec();
                if frame.len() >= 14 {
                    queue.push_back(Pending {
                        due: now + delay,
                        from: port,
                        frame,
                    });
                }
            }
        }
        while queue.front().is_some_and(|p| p.due <= Instant::now()) {
            let Some(p) = queue.pop_front() else { break };
            let mut src = [0u8; 6];
            src.copy_from_slice(&p.frame[6..12]);
            where_is.insert(src, p.from);
            let mut dst = [0u8; 6];
            dst.copy_from_slice(&p.frame[0..6]);
            let out: Vec<usize> = match where_is.get(&dst) {
                Some(&port) if dst[0] & 1 == 0 => vec![port],
                _ => (0..fds.len()).filter(|&q| q != p.from).collect(),
            };
            for q in out {
                // SAFETY: the frame is readable for its length; a full port drops it (EAGAIN).
                let _ = unsafe { libc::write(fds[q].fd, p.frame.as_ptr().cast(), p.frame.len()) };
            }
        }
    }
}
