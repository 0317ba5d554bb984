//! What the verbs test binaries share.

use transport::{VerbsConfig, VerbsTransport};

/// A job of `n` nodes over the RDMA device in this process, or `None` (saying why) where the
/// verbs backend cannot run; under `DSM_REQUIRE_RDMA` that is a failure, not a skip.
pub fn verbs_job(n: usize, config: &VerbsConfig) -> Option<Vec<VerbsTransport>> {
    match transport::verbs::probe(config) {
        Ok(_) => Some(VerbsTransport::local_job(n, config).expect("verbs job")),
        Err(why) => {
            assert!(
                std::env::var_os("DSM_REQUIRE_RDMA").is_none(),
                "DSM_REQUIRE_RDMA is set but the verbs backend cannot run: {why}"
            );
            eprintln!("skipping: {why}");
            None
        }
    }
}
