//! Generates the gRPC code from `proto/objstore.proto` with protox (a pure-Rust protobuf
//! compiler): no system protoc needed. The descriptor set is kept for the reflection service.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/objstore.proto");
    let fds = protox::compile(["objstore.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("objstore_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Values travel as `bytes::Bytes`: no copy between the socket buffer and the engine.
        .bytes(".jupiter.objstore.v1")
        .compile_fds(fds)?;
    Ok(())
}
