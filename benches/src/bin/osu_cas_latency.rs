//! `osu_cas_latency` of the OSU micro-benchmarks over `mpi-compat` (see `benches::osu`).

fn main() -> std::process::ExitCode {
    benches::osu::main(benches::osu::Bench::CasLatency)
}
