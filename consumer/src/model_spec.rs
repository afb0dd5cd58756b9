//! What both inference adapters do alike: read the labels, and complete the model's declared
//! NCHW input with the configuration into the [`ModelSpec`] that preprocessing follows.

use anyhow::{Context as _, bail};
use warren_common::classify::{ElementType, ModelSpec};
use warren_infra::settings::{ModelOutputs, ModelSettings};

/// One label per non-empty line of `model.labels_path`, in the model's output order.
pub fn read_labels(settings: &ModelSettings) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(&settings.labels_path)
        .with_context(|| format!("reading model labels {}", settings.labels_path.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The spec of a model whose input is `nchw` (batch, channels, height, width; -1 or 0 where
/// the model leaves a dimension open): a fixed height or width must agree with `model.height`
/// and `model.width` when those are set, an open one must be set there.
pub fn from_nchw(
    settings: &ModelSettings,
    labels: Vec<String>,
    input_type: ElementType,
    nchw: &[i64],
) -> anyhow::Result<ModelSpec> {
    anyhow::ensure!(nchw.len() == 4, "the model's input has shape {nchw:?}; NCHW (4 dimensions) expected");
    let dim = |i: usize, configured: usize, what: &str| -> anyhow::Result<usize> {
        match (nchw[i], configured) {
            (d, 0) if d > 0 => Ok(d as usize),
            (d, c) if d > 0 && d as usize != c => bail!("model.{what} = {c} but the model declares {d}"),
            (_, c) if c > 0 => Ok(c),
            _ => bail!("the model's {what} is dynamic; set model.{what}"),
        }
    };
    let channels = usize::try_from(nchw[1]).ok().filter(|c| *c > 0).context("the model's channel count is dynamic")?;
    let spec = ModelSpec {
        name: settings.name.clone(),
        input_type,
        channels,
        height: dim(2, settings.height, "height")?,
        width: dim(3, settings.width, "width")?,
        mean: settings.mean.clone(),
        std: settings.std.clone(),
        filter: settings.resize_filter,
        labels,
        outputs_logits: settings.outputs == ModelOutputs::Logits,
        max_aspect_ratio: settings.max_aspect_ratio,
    };
    spec.check().map_err(anyhow::Error::msg).context("model configuration")?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ModelSettings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        warren_infra::Settings::load(&dir).expect("the shipped configuration loads").model
    }

    fn labels() -> Vec<String> {
        (0..10).map(|i| i.to_string()).collect()
    }

    #[test]
    fn fixed_dimensions_come_from_the_model_and_must_agree_with_the_configuration() {
        let mut s = settings();
        let spec = from_nchw(&s, labels(), ElementType::F16, &[-1, 1, 8, 8]).expect("fits");
        assert_eq!((spec.channels, spec.height, spec.width, spec.input_type), (1, 8, 8, ElementType::F16));
        s.height = 28;
        let e = from_nchw(&s, labels(), ElementType::F32, &[-1, 1, 8, 8]).expect_err("disagrees");
        assert_eq!(e.to_string(), "model.height = 28 but the model declares 8");
    }

    #[test]
    fn open_dimensions_need_the_configuration() {
        let mut s = settings();
        let e = from_nchw(&s, labels(), ElementType::F32, &[-1, 3, -1, -1]).expect_err("open");
        assert_eq!(e.to_string(), "the model's height is dynamic; set model.height");
        (s.height, s.width, s.mean, s.std) = (224, 224, vec![0.5], vec![0.5]);
        let spec = from_nchw(&s, labels(), ElementType::F32, &[-1, 3, -1, -1]).expect("configured");
        assert_eq!((spec.height, spec.width), (224, 224));
        assert!(from_nchw(&s, labels(), ElementType::F32, &[-1, -1, 8, 8]).is_err(), "open channels");
        assert!(from_nchw(&s, labels(), ElementType::F32, &[-1, 64]).is_err(), "not NCHW");
        assert!(from_nchw(&s, labels(), ElementType::F32, &[-1, 4, 8, 8]).is_err(), "4 channels");
    }
}
