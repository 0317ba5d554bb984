//! The conformance suite against every backend: loopback, tcp and shm everywhere, verbs (alone,
//! and beside shm in a job of two "hosts") where an RDMA device is present (soft-RoCE in the CI
//! guest, see `scripts/test-softroce.sh`).

use transport::conformance;
use transport::{
    BackendKind, LoopbackTransport, MixedTransport, Rank, Secret, ShmConfig, ShmTransport,
    TcpConfig, TcpTransport, VerbsConfig, VerbsTransport,
};

fn loopback() -> Option<Vec<LoopbackTransport>> {
    Some(LoopbackTransport::job(3).expect("loopback job"))
}

fn tcp() -> Option<Vec<TcpTransport>> {
    Some(
        TcpTransport::local_job(3, &TcpConfig::new(Secret::generate().expect("secret")))
            .expect("tcp job"),
    )
}

fn shm() -> Option<Vec<ShmTransport>> {
    Some(ShmTransport::local_job(3, &ShmConfig::default()).expect("shm job"))
}

/// Every rank on this host: shared memory between all pairs, beside a tcp mesh.
fn mixed() -> Option<Vec<MixedTransport>> {
    let tcp = TcpConfig::new(Secret::generate().expect("secret"));
    Some(MixedTransport::local_job(3, &tcp, &ShmConfig::default()).expect("mixed job"))
}

/// Two "hosts" of two ranks each (host ids given in the configuration): shared memory inside
/// each pair, tcp across.
fn two_hosts() -> Option<Vec<MixedTransport>> {
    let tcp = TcpConfig::new(Secret::generate().expect("secret"));
    let hosts = ["host-a", "host-a", "host-b", "host-b"];
    let job = MixedTransport::local_job_on(&hosts, &tcp, &ShmConfig::default()).expect("job");
    assert_eq!(job[0].backend_of(Rank(1)), BackendKind::Shm);
    assert_eq!(job[0].backend_of(Rank(2)), BackendKind::Tcp);
    assert_eq!(job[3].backend_of(Rank(2)), BackendKind::Shm);
    assert_eq!(job[3].backend_of(Rank(1)), BackendKind::Tcp);
    Some(job)
}

/// A verbs job on this machine's RDMA device, or `None` (with a message saying why) when it has
/// none. With `DSM_REQUIRE_RDMA=1` (set by the soft-RoCE run) a missing device is a failure.
fn verbs() -> Option<Vec<VerbsTransport>> {
    let config = rdma("verbs")?;
    Some(VerbsTransport::local_job(3, &config).expect("verbs job"))
}

/// The verbs settings when this machine has a usable RDMA device; else `None`, saying that the
/// `what` check is skipped (a failure under `DSM_REQUIRE_RDMA=1`).
fn rdma(what: &str) -> Option<VerbsConfig> {
    let config = VerbsConfig::default();
    if let Err(why) = transport::verbs::probe(&config) {
        assert!(
            std::env::var_os("DSM_REQUIRE_RDMA").is_none(),
            "DSM_REQUIRE_RDMA is set but the verbs backend cannot run: {why}"
        );
        eprintln!("skipping the {what} conformance check: {why}");
        return None;
    }
    Some(config)
}

/// Two "hosts" of two ranks each over this machine's RDMA device: shared memory inside each
/// pair, verbs across (and for every atomic), or `None` as for [`verbs`].
fn verbs_two_hosts() -> Option<Vec<MixedTransport>> {
    let config = rdma("verbs and shm")?;
    let hosts = ["host-a", "host-a", "host-b", "host-b"];
    let job =
        MixedTransport::local_job_on_verbs(&hosts, &config, &ShmConfig::default()).expect("job");
    assert_eq!(job[0].backend_of(Rank(1)), BackendKind::Shm);
    assert_eq!(job[0].backend_of(Rank(2)), BackendKind::Verbs);
    assert_eq!(job[3].backend_of(Rank(2)), BackendKind::Shm);
    assert_eq!(job[3].backend_of(Rank(0)), BackendKind::Verbs);
    Some(job)
}

/// One module of tests per backend, one test per check. Every backend runs every check: the
/// list is written once (a check missing from it runs nowhere).
macro_rules! suite {
    ($backend:ident) => {
        suite!($backend: read_write_round_trips, many_in_flight, atomics_give_exact_totals,
            messages_keep_order_per_peer, rejects_bad_access, flush_makes_writes_visible,
            batched_operations_land_exactly, batched_diffs_land_in_order,
            waiting_for_a_message_takes_nothing,
            large_messages_arrive_whole, messages_in_parts_arrive_whole,
            lent_messages_keep_order, lent_sends_arrive_whole, landed_messages_take_their_place,
            posted_writes_land_in_order,
            posted_reads_complete_unwaited,
            reads_see_no_later_request,
            accumulates_land_exactly);
    };
    ($backend:ident: $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $check() {
                    if let Some(job) = super::$backend() {
                        super::conformance::$check(&job);
                    }
                }
            )*
        }
    };
}

suite!(loopback);
suite!(tcp);
suite!(verbs);
suite!(shm);
suite!(mixed);
suite!(two_hosts);
suite!(verbs_two_hosts);
