//! Generates the protobuf client protocol's types from `proto/client.proto`
//! (with `protox`, a Rust protobuf compiler: no `protoc` to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/client.proto");
    let descriptors = protox::compile(["proto/client.proto"], ["proto"])?;
    prost_build::Config::new()
        // Payloads are shared, not copied, from the frame they came in.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
