//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`) and generates the
//! prost types into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/coder/agent/v2/agent.proto",
        "proto/coder/boundarylogproxy/codec/v1/codec.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
