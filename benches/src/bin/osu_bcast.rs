//! `osu_bcast` of the OSU micro-benchmarks over `mpi-compat` (see `benches::osu`).

fn main() -> std::process::ExitCode {
    benches::osu::main(benches::osu::Bench::Broadcast)
}
