//! The real model on every held-out sample, through RabbitMQ and ONNX Runtime: Warren must give
//! exactly the answers (and so the accuracy) that `models/digits/make_model.py` measured with
//! ONNX Runtime in Python.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use rstest::rstest;
use warren_common::classify::ClassifyJob;
use warren_common::{Encoding, Job};
use warren_e2e::{DEADLINE, Vhost, fleet_and_producer, repo_root, settings_for, vhost};
use warren_producer::PublishOptions;

#[rstest]
#[case::f32("f32", Encoding::Json)]
#[case::f16("f16", Encoding::Bincode)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_matches_the_measured_accuracy(#[case] variant: &str, #[case] encoding: Encoding, vhost: Vhost) {
    let dir = repo_root().join("models/digits");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json")).expect("json");
    let truth: BTreeMap<String, u64> = serde_json::from_value(expected["truth"].clone()).expect("truth");
    let predicted: BTreeMap<String, u64> =
        serde_json::from_value(expected["models"][variant]["predicted"].clone()).expect("predicted");
    let accuracy = expected["models"][variant]["accuracy"].as_f64().expect("accuracy");

    let mut settings = settings_for(&vhost);
    settings.model.path = dir.join(format!("digits_{variant}.onnx"));
    settings.consumer.kinds = vec!["ml.classify".into()];
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let opts = PublishOptions { encoding: Some(encoding), want_result: true, ..Default::default() };

    let producer = &producer;
    let answers: Vec<(String, u64)> = futures_util::stream::iter(truth.keys().cloned())
        .map(|name| {
            let opts = opts.clone();
            let path = dir.join("samples").join(&name);
            async move {
                let image = std::fs::read(&path).expect("sample");
                let t = producer.publish(&Job::from(ClassifyJob { image, top_k: Some(1) }), &opts).await;
                let r = t.expect("publish").wait(DEADLINE).await.expect("result");
                let Some(out) = r.output_as::<warren_common::classify::Classify>() else {
                    panic!("{name}: {:?}", r.error)
                };
                (name, u64::from(out.predictions[0].index))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    assert_eq!(answers.len(), truth.len(), "every sample answered");
    let mut correct = 0;
    for (name, got) in &answers {
        assert_eq!(*got, predicted[name], "{name}: Warren and ONNX Runtime in Python disagree");
        correct += usize::from(*got == truth[name]);
    }
    let measured = correct as f64 / answers.len() as f64;
    println!("digits {variant}: {correct}/{} correct = {measured:.4} (script measured {accuracy:.4})", answers.len());
    assert!((measured - accuracy).abs() < 1e-9);
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_jobs_share_model_runs_and_keep_their_own_outcomes(vhost: Vhost) {
    let dir = repo_root().join("models/digits");
    let mut settings = settings_for(&vhost);
    settings.consumer.kinds = vec!["ml.classify".into()];
    settings.consumer.pool_size = 1;
    let route = warren_e2e::route(&mut settings, "ml.classify");
    (route.max_batch, route.max_batch_wait_ms) = (8, Some(50));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    assert_eq!(fleet.prefetch, 4, "the default prefetch (4 per pool slot) ...");
    let addr = fleet.metrics_addr.expect("metrics");
    let scrape = || tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    assert_eq!(
        scrape().value("warren_prefetch", &[("queue", "warren.ml.classify")]),
        8.0,
        "... is raised to fill batches"
    );

    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected")).expect("json");
    let names: Vec<String> = expected["truth"].as_object().expect("truth").keys().take(23).cloned().collect();
    let mut tickets = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // One bad image among them: it fails alone.
        let image = if i == 5 {
            b"not an image".to_vec()
        } else {
            std::fs::read(dir.join("samples").join(name)).expect("sample")
        };
        let job = Job::from(ClassifyJob { image, top_k: Some(1) });
        tickets.push(producer.publish(&job, &warren_e2e::want_result()).await.expect("publish"));
    }
    for (i, (name, t)) in names.iter().zip(tickets).enumerate() {
        let r = t.wait(DEADLINE).await.expect("result");
        if i == 5 {
            assert_eq!(r.error.expect("the bad one fails").error_type, "unsupported_format");
            continue;
        }
        let Some(out) = r.output_as::<warren_common::classify::Classify>() else { panic!("{name}: {:?}", r.error) };
        assert_eq!(
            u64::from(out.predictions[0].index),
            expected["models"]["f32"]["predicted"][name].as_u64().expect("p")
        );
    }
    let s = scrape();
    let (runs, jobs) = (s.value("warren_batch_size_count", &[]), s.value("warren_batch_size_sum", &[]));
    println!("micro-batching: {jobs} jobs in {runs} model runs (max batch 8)");
    assert_eq!(jobs, 23.0);
    assert!((3.0..23.0).contains(&runs), "{runs} runs");
    producer.close().await;
    fleet.stop().await;
}
