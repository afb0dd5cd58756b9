//! Three job kinds of a user's own, one of each shape Warren runs, each in a file named for it:
//! - `image.blurhash` ([`image_blurhash::Blurhash`]): blocking CPU work on the bounded pool;
//! - `vector.normalize` ([`vector_normalize::Normalize`]): batched work through the micro-batcher;
//! - `catalog.price` ([`catalog_price::Catalog`]): async work that awaits an HTTP service.
//!
//! A kind is its file (types, errors, work, tests), a line here and a line in `main.rs`.

pub mod catalog_price;
pub mod image_blurhash;
pub mod vector_normalize;
