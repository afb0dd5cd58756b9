//! Three job kinds of a user's own, one of each shape Warren runs:
//! - [`Blurhash`] (`image.blurhash`): blocking CPU work on the bounded pool;
//! - [`Normalize`] (`vector.normalize`): batched work through the micro-batcher;
//! - [`Catalog`] (`catalog.price`): async work that awaits an HTTP service.
//!
//! Each kind is one file: its types, its errors, its work and its tests.

mod blurhash;
mod catalog;
mod normalize;

pub use blurhash::{Blurhash, BlurhashJob, BlurhashOutput};
pub use catalog::{Catalog, PriceJob, PriceOutput};
pub use normalize::{Normalize, NormalizeJob, NormalizeOutput};
