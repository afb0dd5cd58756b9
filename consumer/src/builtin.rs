//! Warren's built-in kinds, registered like any user's: `image.resize`, `ml.classify` (its model
//! loaded from `[model]`, on ONNX Runtime or Triton, only when this process serves it),
//! `checksum`, and `fault` (drills and tests, opt-in: served only where `[[routes]]` or
//! `consumer.kinds` names it; the shipped configuration does not).

use warren_common::checksum::Checksum;
use warren_common::classify::Classify;
use warren_common::fault::Fault;
use warren_common::resize::Resize;

use crate::builder::{Loaded, WorkerBuilder};
use crate::model;

/// The stock worker: every built-in kind.
pub fn worker() -> WorkerBuilder {
    WorkerBuilder::new()
        .blocking(Resize)
        .batched_with(|setup| async move {
            let loaded = model::load(&setup.settings, &setup.route, setup.pool.size(), &setup.metrics).await?;
            let labels = (setup.settings.model.name.clone(), setup.settings.model.backend.as_str().to_owned());
            Ok(Loaded { kind: Classify { model: loaded.classifier }, ready: loaded.ready, model: Some(labels) })
        })
        .blocking(Checksum)
        .blocking(Fault)
        .opt_in()
}
