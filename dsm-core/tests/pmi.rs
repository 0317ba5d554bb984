//! The PMI-1 client against PMI servers made here: one that follows the protocol (a key-value
//! space shared by several clients, with a barrier), and broken ones that answer garbage, close,
//! or say nothing. Every failure must be a clear error within a bounded time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use dsm_core::bootstrap::pmi::Pmi;
use dsm_core::Error;

/// Serves one client like Hydra does, with a small value limit so that long values are split.
fn serve(
    stream: UnixStream,
    kvs: Arc<Mutex<HashMap<String, String>>>,
    barrier: Arc<Barrier>,
    vallen: usize,
) {
    let mut out = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let f: HashMap<&str, &str> = line.split(' ').filter_map(|w| w.split_once('=')).collect();
        let reply = match f["cmd"] {
            "init" => "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0".to_string(),
            "get_maxes" => {
                format!("cmd=maxes kvsname_max=256 keylen_max=64 vallen_max={vallen}")
            }
            "get_my_kvsname" => "cmd=my_kvsname kvsname=kvs_test_0".into(),
            "put" => {
                assert_eq!(f["kvsname"], "kvs_test_0");
                assert!(f["value"].len() <= vallen, "{line}");
                kvs.lock()
                    .unwrap()
                    .insert(f["key"].into(), f["value"].into());
                "cmd=put_result rc=0 msg=success".into()
            }
            "barrier_in" => {
                barrier.wait();
                "cmd=barrier_out".into()
            }
            "get" => match kvs.lock().unwrap().get(f["key"]) {
                Some(v) => format!("cmd=get_result rc=0 msg=success value={v}"),
                None => "cmd=get_result rc=-1 msg=key_not_found value=unknown".into(),
            },
            "finalize" => "cmd=finalize_ack".into(),
            other => panic!("unexpected request {other}"),
        };
        if out.write_all(format!("{reply}\n").as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn three_clients_exchange_long_endpoints_and_a_secret() {
    let n = 3;
    let kvs = Arc::new(Mutex::new(HashMap::new()));
    let barrier = Arc::new(Barrier::new(n));
    let mut clients = Vec::new();
    for rank in 0..n {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (kvs, barrier) = (Arc::clone(&kvs), Arc::clone(&barrier));
        std::thread::spawn(move || serve(theirs, kvs, barrier, 72));
        clients.push(std::thread::spawn(move || {
            let mut pmi = Pmi::over(ours, rank as u32, n as u32, Duration::from_secs(20))?;
            let secret = pmi.share_secret(None)?;
            // 300 bytes: 600 hexadecimal digits, split over ten values of at most 72.
            let endpoint: Vec<u8> = (0..300).map(|i| (i * 7 + rank) as u8).collect();
            let table = pmi.exchange(&endpoint)?;
            pmi.finalize()?;
            Ok::<_, Error>((secret.to_hex(), table))
        }));
    }
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap().unwrap())
        .collect();
    for (secret, table) in &results {
        assert_eq!(secret, &results[0].0, "every rank has rank 0's secret");
        assert_eq!(table.len(), n);
        for (r, ep) in table.iter().enumerate() {
            let want: Vec<u8> = (0..300).map(|i| (i * 7 + r) as u8).collect();
            assert_eq!(ep, &want, "rank {r}'s endpoint");
        }
    }
}

/// A server that reads the first request and then does `answer` with the stream.
fn broken_server(answer: impl FnOnce(&mut UnixStream) + Send + 'static) -> UnixStream {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(theirs.try_clone().unwrap()).read_line(&mut line);
        answer(&mut theirs);
        // Keep the connection open (silent) until the client gives up.
        let _ = BufReader::new(theirs).read_line(&mut line);
    });
    ours
}

fn init_error(answer: impl FnOnce(&mut UnixStream) + Send + 'static) -> (String, Duration) {
    let start = Instant::now();
    let e = Pmi::over(broken_server(answer), 0, 2, Duration::from_millis(500))
        .expect_err("a broken server must fail the client");
    (e.to_string(), start.elapsed())
}

#[test]
fn garbage_from_the_server_is_a_clear_error() {
    let (e, t) = init_error(|s| s.write_all(b"HTTP/1.1 400 Bad Request\r\n").unwrap());
    assert!(
        e.contains("PMI") && e.contains("malformed PMI reply"),
        "{e}"
    );
    assert!(t < Duration::from_secs(2), "{t:?}");
    let (e, _) = init_error(|s| s.write_all(b"cmd=barrier_out\n").unwrap());
    assert!(e.contains("expected `cmd=response_to_init`"), "{e}");
    let (e, _) = init_error(|s| {
        s.write_all(b"cmd=response_to_init pmi_version=1 rc=-1 msg=no\n")
            .unwrap()
    });
    assert!(e.contains("rc=-1"), "{e}");
    let (e, _) = init_error(|s| {
        s.write_all(b"cmd=response_to_init pmi_version=2 rc=0\n")
            .unwrap()
    });
    assert!(e.contains("version 2"), "{e}");
}

#[test]
fn an_endless_line_is_refused() {
    let (e, t) = init_error(|s| {
        let _ = s.write_all(&[b'x'; 64 * 1024]);
    });
    assert!(e.contains("longer than"), "{e}");
    assert!(t < Duration::from_secs(2), "{t:?}");
}

#[test]
fn a_server_that_closes_is_a_clear_error() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    let start = Instant::now();
    let e = Pmi::over(ours, 0, 2, Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("closed the connection") || e.contains("Broken pipe"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_silent_server_times_out() {
    let (e, t) = init_error(|_| {});
    assert!(e.contains("did not answer `cmd=init` within 500ms"), "{e}");
    assert!(
        t >= Duration::from_millis(500) && t < Duration::from_secs(3),
        "{t:?}"
    );
}

#[test]
fn absurd_limits_are_refused() {
    let (e, _) = init_error(|s| {
        s.write_all(b"cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n")
            .unwrap();
        // The next request is get_maxes; answer it with a value limit of 0.
        let mut line = String::new();
        let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
        s.write_all(b"cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=0\n")
            .unwrap();
    });
    assert!(e.contains("vallen_max=0"), "{e}");
}

/// The whole program, started as if by mpiexec but with a server that answers garbage: it
/// stops with a clear message and a failure status, quickly.
#[test]
fn a_program_under_a_garbage_pmi_server_stops_with_a_clear_error() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(theirs.try_clone().unwrap()).read_line(&mut line);
        let _ = theirs.write_all(b"\x00\x01garbage\n");
        line
    });
    let fd = ours.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsm-demo"));
    cmd.env("PMI_FD", fd.to_string())
        .env("PMI_RANK", "0")
        .env("PMI_SIZE", "2")
        .env("DSM_CONNECT_TIMEOUT", "5")
        .env_remove("DSM_RANK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let inherit = move || {
        // SAFETY: fcntl(F_SETFD) on a descriptor this process owns is async-signal-safe and
        // touches only the descriptor table; it lets the child inherit its end of the pair.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only calls fcntl (async-signal-safe),
    // allocating nothing on success.
    unsafe { cmd.pre_exec(inherit) };
    let start = Instant::now();
    let out = cmd.output().expect("run dsm-demo");
    drop(ours);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("malformed PMI reply"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(server.join().unwrap().starts_with("cmd=init "));
}

#[test]
fn a_pmi_fd_that_is_not_a_socket_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_dsm-demo"))
        .env("PMI_FD", "97")
        .env("PMI_RANK", "0")
        .env("PMI_SIZE", "2")
        .env_remove("DSM_RANK")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("PMI_FD=97 is not an open socket"),
        "{stderr}"
    );
}

#[test]
fn a_secret_given_to_some_ranks_only_keeps_the_barriers_paired() {
    let n = 3;
    let kvs = Arc::new(Mutex::new(HashMap::new()));
    let barrier = Arc::new(Barrier::new(n));
    let given =
        dsm_core::config::secret_from_lookup(|k| (k == "DSM_SECRET").then(|| "ab".repeat(32)))
            .unwrap();
    let mut clients = Vec::new();
    for rank in 0..n {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (kvs, barrier) = (Arc::clone(&kvs), Arc::clone(&barrier));
        std::thread::spawn(move || serve(theirs, kvs, barrier, 1024));
        let preset = (rank == 1).then(|| given.clone()).flatten();
        clients.push(std::thread::spawn(move || {
            let mut pmi = Pmi::over(ours, rank as u32, n as u32, Duration::from_secs(10))?;
            let secret = pmi.share_secret(preset)?;
            let table = pmi.exchange(format!("ep{rank}").as_bytes())?;
            Ok::<_, Error>((secret.to_hex(), table))
        }));
    }
    let r: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap().unwrap())
        .collect();
    // Everyone finished both collective steps with the right table; rank 1 kept its own secret
    // (its handshakes with the others would then fail, naming the secret).
    assert_eq!(r[0].0, r[2].0);
    assert_eq!(r[1].0, "ab".repeat(32));
    for (_, table) in &r {
        assert_eq!(
            table,
            &vec![b"ep0".to_vec(), b"ep1".to_vec(), b"ep2".to_vec()]
        );
    }
}

/// Runs dsm-demo as rank 0 of a one-process PMI job served by [`serve`], with `kvs` preloaded;
/// returns its status and stderr.
fn demo_under_fake_pmi(preload: &[(&str, &str)], env: &[(&str, &str)]) -> (bool, String) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let kvs: HashMap<String, String> = preload
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        serve(
            theirs,
            Arc::new(Mutex::new(kvs)),
            Arc::new(Barrier::new(1)),
            1024,
        )
    });
    let fd = ours.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsm-demo"));
    cmd.arg("32")
        .env("PMI_FD", fd.to_string())
        .env("PMI_RANK", "0")
        .env("PMI_SIZE", "1")
        .env("DSM_CONNECT_TIMEOUT", "10")
        .env_remove("DSM_RANK")
        .env_remove("DSM_BIND")
        .env_remove("DSM_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let inherit = move || {
        // SAFETY: as in the garbage-server test: fcntl on our own descriptor, async-signal-safe.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls fcntl between fork and exec.
    unsafe { cmd.pre_exec(inherit) };
    let out = cmd.output().expect("run dsm-demo");
    drop(ours);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_job_spanning_hosts_without_dsm_bind_stops_by_name() {
    let (ok, stderr) = demo_under_fake_pmi(&[("PMI_process_mapping", "(vector,(0,2,1))")], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("spans 2 hosts") && stderr.contains("DSM_BIND"),
        "{stderr}"
    );
    // With DSM_BIND it starts (a one-process job, so nobody else has to be reachable).
    let (ok, stderr) = demo_under_fake_pmi(
        &[("PMI_process_mapping", "(vector,(0,2,1))")],
        &[("DSM_BIND", "lo")],
    );
    assert!(ok, "{stderr}");
}
