//! Compiles proto/rbuild/v1/rbuild.proto with protox (a protobuf compiler in Rust: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["rbuild/v1/rbuild.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
