//! The conformance suite against every backend that runs without hardware.

use transport::conformance;
use transport::{LoopbackTransport, Secret, TcpConfig, TcpTransport};

fn loopback() -> Vec<LoopbackTransport> {
    LoopbackTransport::job(3).expect("loopback job")
}

fn tcp() -> Vec<TcpTransport> {
    TcpTransport::local_job(3, &TcpConfig::new(Secret::generate().expect("secret")))
        .expect("tcp job")
}

macro_rules! suite {
    ($backend:ident: $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $check() {
                    super::conformance::$check(&super::$backend());
                }
            )*
        }
    };
}

suite!(loopback: read_write_round_trips, many_in_flight, atomics_give_exact_totals,
    messages_keep_order_per_peer, rejects_bad_access, flush_makes_writes_visible);
suite!(tcp: read_write_round_trips, many_in_flight, atomics_give_exact_totals,
    messages_keep_order_per_peer, rejects_bad_access, flush_makes_writes_visible);
