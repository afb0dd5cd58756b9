//! warren-bench runs every scenario end to end (tiny counts, so it checks the harness, not the
//! speed) and writes a report with a finite figure for each.

use warren_e2e::{bin, repo_root};

#[test]
fn the_benchmark_runs_every_scenario_and_reports_figures() {
    let out = std::env::temp_dir().join(format!("warren-bench-{}.json", std::process::id()));
    let status = std::process::Command::new(bin("warren-bench"))
        .current_dir(repo_root())
        .args(["--pairs", "1", "--messages", "100", "--heavy-messages", "8", "--concurrency", "8"])
        .args(["--settle-secs", "1", "--measure-ms", "50", "--out"])
        .arg(&out)
        .status()
        .expect("run warren-bench");
    assert!(status.success(), "warren-bench failed: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report written")).expect("report is JSON");
    let _ = std::fs::remove_file(&out);
    let figure = |path: &str| {
        let v = report.pointer(path).and_then(serde_json::Value::as_f64);
        assert!(v.is_some_and(|v| v.is_finite() && v > 0.0), "{path} = {v:?} in {report:#}");
    };
    for path in [
        "/relay/ratio",
        "/prefetch/checksum/4/median",
        "/image/ratio",
        "/image/pipelines_one_thread/4000x3000/fast_image_resize/vs_image_crate_resample_encode",
        "/image/pipelines_one_thread/1920x1080/fast_image_resize_jpeg_encoder/vs_image_crate_resample_encode",
        "/image/pipelines_one_thread/1920x1080/scaled_vs_full_decode",
        "/image/pipelines_one_thread/4000x3000/pillow_draft/jobs_per_s",
        "/image/jobs_per_s/pillow_full_all_cores/median",
        "/image/jobs_per_s/pillow_draft_1core/cpu_s_per_job",
        "/image/jobs_per_s/warren_in_process_1core/median",
        "/image/ratios/warren_1core_vs_pillow_draft_1core",
        "/image/ratios/fleet_vs_pillow_draft_all_cores",
        "/image/ratios/fleet_vs_pillow_full_all_cores",
        "/image/goals/fleet_vs_pillow_draft_all_cores/ratio",
        "/image/quality/psnr_db/warren",
        "/image/quality/psnr_db/pillow_draft",
        "/image/payload/json/message_bytes",
        "/image/payload/bincode/cpu_s_per_job/fleet_broker",
        "/image/cpu_s_per_job/fleet_worker",
        "/image/cpu_s_per_job/in_process",
        "/image/cpu_s_per_job_bincode/fleet_load_generator",
        "/ml/squeezenet/ratio",
        "/ml/squeezenet/median_fleet_max_batch_1",
        "/ml/squeezenet/cpu_s_per_job/fleet_worker",
        "/ml/squeezenet/cpu_s_per_job/in_process",
        "/ml/squeezenet/photo_1920x1080/median_scaled_decode",
        "/ml/squeezenet/photo_1920x1080/median_full_decode",
        "/ml/squeezenet/photo_1920x1080/scaled_vs_full_decode",
        "/ml/digits/ratio",
        "/triton/squeezenet/fleet_ratio",
        "/triton/squeezenet/in_process/triton_cpu_s_per_job_in_triton",
        "/triton/digits/hop/batch_8/triton_p50_ms",
        // Triton's own CPU in the fleet: squeezenet's (about 10 ms a job), not digits' (about
        // 0.2 ms a job, so 100 jobs can fall under /proc's 10 ms clock tick and read 0).
        "/triton/squeezenet/fleet/triton/cpu_s_per_job/fleet_model_server",
        "/triton/digits/fleet/triton_pool_2x/median_p99_ms",
        "/memory/jemalloc/peak_mib",
        "/memory/system/after_settle_mib",
        "/latency/fleet_p50_p95_p99_ms/2",
        "/publish/ratio",
        "/cluster/ratio",
        "/cluster/quorum_three_nodes/median_p99_ms",
        "/events/ratio",
        "/console/sqlite/ratio",
        "/console/postgres/median_catch_up_s",
    ] {
        figure(path);
    }
}
