//! Compiles `proto/distributed_llm.proto` with protox (pure Rust, no protoc) and
//! generates prost messages plus tonic clients and servers. Also writes the file
//! descriptor set used by gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/distributed_llm.proto";
    println!("cargo:rerun-if-changed={proto}");

    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("distributed_llm_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
