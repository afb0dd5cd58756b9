//! Compiles `proto/inference.proto` (Triton's gRPC protocol, the part Warren uses) into a
//! client with protox, in pure Rust: no protoc, no download.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let descriptors = protox::compile(["proto/inference.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(descriptors)?;
    Ok(())
}
