//! Resident memory of the whole gateway with N real `whatsapp` sessions connected to the
//! emulator, and the time to bring all of them back after a gateway restart
//! (`cargo bench -p wagate-bench --bench emulated -- 100 500`; see `main.rs`).

use std::time::{Duration, Instant};

use anyhow::Context;
use wagate::config::Layer;

use crate::common::*;

pub(crate) const GATEWAY_RUN: &str = "--gateway-run";

pub(crate) fn driver(counts: &[usize]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("emulated bench: N = {counts:?}, {cores} cores, {PAIRING_CONCURRENCY} pairings in flight");
    let mut rows = Vec::new();
    for &n in counts {
        eprintln!("\n=== N = {n} ===");
        if let Some(report) = run_child::<Report>(&exe, GATEWAY_RUN, n)? {
            rows.push(report);
        }
    }
    println!();
    println!(
        "{:>5} {:>9} {:>10} {:>12} {:>11} {:>9} {:>10} {:>10} {:>12} {:>11} {:>9}",
        "N",
        "base MiB",
        "conn. MiB",
        "per sess KiB",
        "pair all s",
        "stop s",
        "resume s",
        "resumed",
        "resumed MiB",
        "peak MiB",
        "emu MiB"
    );
    for r in &rows {
        println!(
            "{:>5} {:>9.1} {:>10.1} {:>12.0} {:>11.1} {:>9.1} {:>10.1} {:>10} {:>12.1} {:>11.1} {:>9.1}",
            r.n,
            mib(r.baseline_kib),
            mib(r.connected_kib),
            r.per_session_kib(),
            r.pair_all_secs,
            r.stop_secs,
            r.resume_secs,
            format!("{}/{}", r.resumed, r.n),
            mib(r.resumed_kib),
            mib(r.peak_kib),
            mib(r.emulator_kib),
        );
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Default, Debug)]
pub(crate) struct Report {
    n: usize,
    baseline_kib: u64,
    connected_kib: u64,
    /// Sessions `connected` before the restart.
    connected: usize,
    pair_all_secs: f64,
    stop_secs: f64,
    resume_secs: f64,
    /// Sessions `connected` again after the restart (within the timeout).
    resumed: usize,
    resumed_kib: u64,
    /// VmHWM at the end of the run.
    peak_kib: u64,
    emulator_kib: u64,
}

impl Report {
    fn per_session_kib(&self) -> f64 {
        if self.n == 0 { 0.0 } else { (self.connected_kib as f64 - self.baseline_kib as f64) / self.n as f64 }
    }
}

pub(crate) async fn gateway_run(n: usize) -> anyhow::Result<Report> {
    check_open_files(n);
    let emulator = EmulatorProcess::spawn().await?;
    eprintln!("emulator child {} at {} (control {})", emulator.child.id().unwrap_or(0), emulator.ws_url, emulator.control);

    let dir = tempfile::tempdir()?;
    let config = gateway_config(dir.path(), &emulator, Layer::default())?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    let (gateway, key) = Gateway::start(&config).await?;
    let key = key.context("a fresh database yields the bootstrap key")?;
    let mut api = Api { http: http.clone(), base: gateway.base.clone(), key };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_kib = self_kib("VmRSS:");
    eprintln!("baseline: VmRSS {:.1} MiB", mib(baseline_kib));

    // Pair N sessions.
    let t = Instant::now();
    let connected_before = pair_all(&api, &emulator.control, n).await?;
    let pair_all_secs = t.elapsed().as_secs_f64();
    eprintln!("{connected_before}/{n} connected {pair_all_secs:.1} s after the first session was created");
    tokio::time::sleep(SETTLE).await;
    let connected_kib = self_kib("VmRSS:");
    let events_before = emulator_events(&http, &emulator.control).await.unwrap_or_default();
    let devices_before = emulator_devices(&http, &emulator.control).await.unwrap_or_default();
    print_log_tally("paired and connected");
    eprintln!(
        "connected: VmRSS {:.1} MiB ({:.0} KiB per session over the baseline), VmHWM {:.1} MiB, {} threads, {} fds; emulator: {} online, VmRSS {:.1} MiB; events {events_before:?}",
        mib(connected_kib),
        (connected_kib as f64 - baseline_kib as f64) / n.max(1) as f64,
        mib(self_kib("VmHWM:")),
        self_kib("Threads:"),
        open_fds(),
        emulator_online(&http, &emulator.control).await.unwrap_or(0),
        mib(emulator.rss_kib()),
    );

    // Restart: graceful stop, then a new Application on the same data dir and database.
    let t = Instant::now();
    gateway.stop().await.context("the gateway stops cleanly")?;
    let stop_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "stopped all sessions in {stop_secs:.1} s; VmRSS {:.1} MiB; emulator: {} online",
        mib(self_kib("VmRSS:")),
        emulator_online(&http, &emulator.control).await.unwrap_or(0)
    );
    let t = Instant::now();
    let (gateway, _) = Gateway::start(&config).await?;
    api.base = gateway.base.clone();
    let (resumed, timeline) = wait_all_connected(&api, n, t, "resumed").await?;
    let resume_secs = t.elapsed().as_secs_f64();
    // The statuses come from the engine's events; the emulator's own count confirms them.
    let devices_after = emulator_devices(&http, &emulator.control).await.unwrap_or_default();
    let events_after = emulator_events(&http, &emulator.control).await.unwrap_or_default();
    eprintln!("{resumed}/{n} connected again {resume_secs:.1} s after Application::build; emulator events {events_after:?}");
    eprintln!(
        "  emulator: {} logged-in connections; {} linked devices (before the restart {}); {} logins during the resume",
        devices_after.online,
        devices_after.linked,
        devices_before.linked,
        devices_after.logins.saturating_sub(devices_before.logins)
    );
    if devices_after.linked != devices_before.linked {
        eprintln!("  ODD: the resume changed the number of linked devices (new pairings?)");
    }
    if let Some(peak) = timeline.windows(2).map(|w| w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0).max(1e-3)).reduce(f64::max) {
        eprintln!("  fastest resume rate between polls: {peak:.0} sessions/s");
    }
    tokio::time::sleep(SETTLE).await;
    let resumed_kib = self_kib("VmRSS:");
    let peak_kib = self_kib("VmHWM:");
    let emulator_kib = emulator.rss_kib();
    eprintln!(
        "resumed: VmRSS {:.1} MiB, VmHWM {:.1} MiB, {} threads, {} fds; emulator VmRSS {:.1} MiB",
        mib(resumed_kib),
        mib(peak_kib),
        self_kib("Threads:"),
        open_fds(),
        mib(emulator_kib)
    );

    let t = Instant::now();
    gateway.stop().await.context("the gateway stops cleanly")?;
    eprintln!("final stop in {:.1} s", t.elapsed().as_secs_f64());
    print_log_tally("end of the run");
    emulator.stop().await;
    Ok(Report {
        n,
        baseline_kib,
        connected_kib,
        connected: connected_before,
        pair_all_secs,
        stop_secs,
        resume_secs,
        resumed,
        resumed_kib,
        peak_kib,
        emulator_kib,
    })
}

