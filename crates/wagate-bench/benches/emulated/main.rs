//! The whole gateway with N real `whatsapp` sessions connected to the WhatsApp emulator:
//!
//! * resident memory, and the time to bring all of them back after a gateway restart
//!   (`memory.rs`):
//!
//!   ```text
//!   cargo bench -p wagate-bench --bench emulated -- 100 500
//!   ```
//!
//! * messages both ways: rate, gateway CPU per message, inbound latency, memory after
//!   (`messaging.rs`; `WAGATE_BENCH_MESSAGES`, `WAGATE_BENCH_PACED_RATE`,
//!   `WAGATE_BENCH_PACED_PER_SESSION` change the run):
//!
//!   ```text
//!   cargo bench -p wagate-bench --bench emulated -- messaging 100
//!   ```
//!
//! Three kinds of process, all this binary:
//!
//! * the driver (no flag) runs each N in a fresh `--gateway-run N` (or `--messaging-run N`)
//!   process, so that a row does not inherit the memory an earlier row freed but the allocator
//!   kept, and prints the table;
//! * `--gateway-run N` / `--messaging-run N` runs the gateway in-process (SQLite and engine keys
//!   in a temp dir) and reads its own `VmRSS`; the HTTP client that drives the API is the only
//!   non-gateway part;
//! * `--emulator-child` (started by the gateway run) serves the emulator and its HTTP control
//!   surface, prints `READY <ws_url> <control_url>`, and exits when its stdin closes, so the
//!   emulator's memory is not counted.
//!
//! A memory run: baseline RSS once the gateway is up; N sessions created through the API and paired by
//! QR (the emulated phone scans through `POST /scan`), at most 32 pairings (create, first QR,
//! scan) in flight; waits until all N are `connected`, settles 10 s, reads RSS. Then a graceful
//! stop (`run_until`'s shutdown future), a new `Application` on the same data dir and database,
//! and the time from `Application::build` until all N are `connected` again; settles, reads RSS.
//!
//! `WAGATE_WA_*` variables apply (e.g. `WAGATE_WA_MAX_CONNECTS`), except the URL and version,
//! which point at the emulator. Logs: warnings and errors, the first of each kind printed and
//! all counted (`RUST_LOG` overrides the filter). Expect the client's warnings about the
//! optional post-login IQs the emulator answers `501 feature-not-implemented` (props,
//! blocklist, privacy settings, digest key, own device list): a few per login.

mod common;
mod memory;
mod messaging;

use anyhow::Context;

use common::{EMULATOR_CHILD, emulator_child, init_logs, runtime};
use memory::GATEWAY_RUN;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == EMULATOR_CHILD) {
        tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
        return runtime().block_on(emulator_child());
    }
    if let Some(i) = args.iter().position(|a| a == GATEWAY_RUN) {
        let n: usize = args.get(i + 1).context("--gateway-run N")?.parse().context("N")?;
        init_logs();
        let report = runtime().block_on(memory::gateway_run(n))?;
        println!("RESULT {}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == messaging::MESSAGING_RUN) {
        let n: usize = args.get(i + 1).context("--messaging-run N")?.parse().context("N")?;
        init_logs();
        return messaging::run(n);
    }
    let messaging = args.iter().any(|a| a == "messaging");
    let counts: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with('-') && *a != "messaging") // `cargo bench` passes --bench
        .map(|a| a.parse().with_context(|| format!("not a session count: {a}")))
        .collect::<anyhow::Result<_>>()?;
    if messaging {
        let counts = if counts.is_empty() { vec![100] } else { counts };
        return messaging::driver(&counts);
    }
    let counts = if counts.is_empty() { vec![100, 500] } else { counts };
    memory::driver(&counts)
}
