//! The statistics every scenario reports with: the median of a run's figures.

/// The median (the upper one of an even count); NaN for no figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}
