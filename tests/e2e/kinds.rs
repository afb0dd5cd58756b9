//! Every job kind, in both encodings, through the broker and back.

use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::image_io::{self, Format};
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_common::{Encoding, Job, ResultStatus};
use warren_e2e::{DEADLINE, Fleet, Vhost, fleet_and_producer, repo_root, settings_for, vhost};
use warren_producer::{Producer, PublishOptions};

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("samples/images").join(name)).expect("sample photo")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_in_both_encodings(#[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding, vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let opts = PublishOptions { encoding: Some(encoding), want_result: true, ..Default::default() };

    // image.resize: each input format, each mode, each output format.
    let cases = [
        ("china.jpg", ResizeMode::Fit, Format::Png, (100, 67)),
        ("flower.png", ResizeMode::Fill, Format::Jpeg, (100, 100)),
        ("china_small.webp", ResizeMode::Exact, Format::Webp, (100, 40)),
    ];
    for (file, mode, format, (w, h)) in cases {
        let job = Job::from(ResizeJob {
            image: photo(file),
            width: 100,
            height: if mode == ResizeMode::Exact { 40 } else { 100 },
            mode,
            filter: Filter::Lanczos3,
            format: Some(format),
            quality: Some(80),
        });
        let ticket = producer.publish(&job, &opts).await.expect("publish resize");
        let result = ticket.wait(DEADLINE).await.expect("resize result");
        assert_eq!(result.status, ResultStatus::Ok, "{file}: {:?}", result.error);
        let Some(out) = result.output_as::<warren_common::resize::Resize>() else { panic!("not a resize output") };
        assert_eq!((out.width, out.height, out.format), (w, h, format), "{file}");
        assert_eq!(image_io::sniff(&out.image).expect("output is an image"), format);
        let decoded = image::load_from_memory(&out.image).expect("output decodes");
        assert_eq!((decoded.width(), decoded.height()), (w, h));
    }

    // ml.classify: a digit the model gets right.
    let sample = std::fs::read(repo_root().join("models/digits/samples/001_label4.png")).expect("digit");
    let ticket = producer
        .publish(&Job::from(ClassifyJob { image: sample, top_k: Some(3) }), &opts)
        .await
        .expect("publish classify");
    let result = ticket.wait(DEADLINE).await.expect("classify result");
    let Some(out) = result.output_as::<warren_common::classify::Classify>() else {
        panic!("not a classify output: {:?}", result.error)
    };
    assert_eq!(out.predictions.len(), 3);
    assert_eq!(out.predictions[0].label, "4");
    assert!(out.predictions.windows(2).all(|w| w[0].score >= w[1].score));

    // checksum: compare with a CRC computed here.
    let data = b"warren checksum payload".repeat(100);
    let ticket = producer
        .publish(&Job::from(ChecksumJob { data: data.clone(), rounds: 3 }), &opts)
        .await
        .expect("publish checksum");
    let job_id = ticket.job_id.clone();
    let result = ticket.wait(DEADLINE).await.expect("checksum result");
    assert_eq!(result.job_id, job_id, "results carry the job id");
    let mut h = crc32fast::Hasher::new();
    for _ in 0..3 {
        h.update(&data);
    }
    let Some(out) = result.output_as::<warren_common::checksum::Checksum>() else { panic!("not a checksum output") };
    assert_eq!((out.crc32, out.bytes), (h.finalize(), data.len() as u64));

    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_without_reply_to_go_to_the_results_queue(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let fleet = Fleet::start(settings.clone()).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer connects");
    let ticket = producer
        .publish(&Job::from(ChecksumJob { data: b"x".to_vec(), rounds: 1 }), &PublishOptions::default())
        .await
        .expect("publish");
    let got = warren_e2e::collect_messages(&settings, &settings.topology.results_queue, 1, DEADLINE).await;
    let ct = got[0].properties.content_type().as_ref().map(|c| c.to_string());
    let result =
        warren_common::JobResult::decode(&got[0].data, Encoding::from_content_type(ct.as_deref()).expect("ct"))
            .expect("a result");
    assert_eq!(result.job_id, ticket.job_id);
    assert_eq!(result.status, ResultStatus::Ok);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_with_a_delivery_limit_work_too(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.topology.queue_type = warren_infra::settings::QueueType::Quorum;
    settings.topology.delivery_limit = 5;
    let (fleet, producer) = warren_e2e::fleet_and_producer(&settings).await;
    let ticket = producer
        .publish(&Job::from(ChecksumJob { data: b"quorum".to_vec(), rounds: 1 }), &warren_e2e::want_result())
        .await
        .expect("publish");
    assert_eq!(ticket.wait(DEADLINE).await.expect("result").status, ResultStatus::Ok);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_against_queues_of_the_other_type_says_what_to_do_and_warrenctl_diff_shows_it(vhost: Vhost) {
    let classic = settings_for(&vhost);
    let producer = warren_producer::Producer::connect(classic.clone()).await.expect("producer");
    producer.declare_topology().await.expect("classic topology");
    producer.close().await;

    let mut quorum = classic.clone();
    quorum.topology.queue_type = warren_infra::settings::QueueType::Quorum;
    let e = format!("{:#}", warren_consumer::builtin::worker().build(quorum).await.expect_err("refused"));
    println!("quorum worker against classic queues: {e}");
    assert!(e.contains("exists on the broker as another type of queue than topology.queue_type = \"quorum\""), "{e}");
    assert!(e.contains("set topology.queue_type = \"classic\" to keep it") && e.contains("warrenctl dump"), "{e}");

    let out = tokio::process::Command::new(warren_e2e::bin("warrenctl"))
        .args(["topology", "diff"])
        .current_dir(warren_e2e::repo_root())
        .env("WARREN_CONFIG_DIR", warren_e2e::repo_root().join("config"))
        .env("WARREN__TOPOLOGY__QUEUE_TYPE", "quorum")
        .env("WARRENCTL_URL", vhost.amqp_url())
        .env("WARRENCTL_MGMT_URL", warren_e2e::broker::management_url())
        .output()
        .await
        .expect("warrenctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("$ warrenctl topology diff\n{stdout}");
    assert_eq!(out.status.code(), Some(1), "differences exit 1");
    assert!(stdout.contains("~ queue warren.checksum is a classic queue (config: quorum)"), "{stdout}");
}
